//! The engine's metrics, for the server's `/metrics` (proto-docs/metrics.md).
//!
//! Requests are counted by side, transport, method and outcome. Every label
//! comes from a fixed list (a method the client named that is not in the
//! catalogue counts as `unknown`), so no client can grow the label sets.
//! Sessions are counted at scrape time from the engine's registry.

use crate::Engine;
use crate::connection::Side;
use crate::dispatch::Requester;
use chatgate_protocol::ErrorBody;
use chatgate_protocol::config::CONFIGURATION_METHODS;
use chatgate_protocol::methods::{AGENT_METHODS, CUSTOMER_METHODS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// `side`, `transport`, `action`, `outcome`.
type RequestLabels = [(&'static str, &'static str); 4];
/// `side`, `transport`.
type TransportLabels = [(&'static str, &'static str); 2];

fn request_histogram() -> Histogram {
    // 50 µs … about 6.5 s.
    Histogram::new(exponential_buckets(50e-6, 2.0, 18))
}

/// What the dispatcher records per request.
#[derive(Debug)]
pub(crate) struct EngineMetrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<TransportLabels, Histogram, fn() -> Histogram>,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(request_histogram),
        }
    }
}

/// Frames queued for sessions (responses and pushes), in this process.
pub(crate) static FRAMES_QUEUED: AtomicU64 = AtomicU64::new(0);
/// Sessions closed because their outbound queue was full, in this process.
pub(crate) static SLOW_CONSUMERS: AtomicU64 = AtomicU64::new(0);

/// A request's labels, taken before it is dispatched (the request is
/// moved into its handler).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestKind {
    side: &'static str,
    transport: &'static str,
    action: &'static str,
}

impl RequestKind {
    pub(crate) fn of(requester: &Requester, action: &str) -> Self {
        let side = requester.side();
        let transport = match requester {
            Requester::Rtm(_) => "rtm",
            Requester::Web { .. } | Requester::CustomerWeb { .. } => "web",
            Requester::ConfigWeb { .. } => "configuration",
        };
        let known = match (requester, side) {
            (Requester::ConfigWeb { .. }, _) => {
                CONFIGURATION_METHODS.iter().copied().find(|m| *m == action)
            }
            (_, Side::Agent) => AGENT_METHODS.iter().map(|(m, _)| *m).find(|m| *m == action),
            (_, Side::Customer) => CUSTOMER_METHODS
                .iter()
                .map(|(m, _)| *m)
                .find(|m| *m == action),
        };
        RequestKind {
            side: match side {
                Side::Agent => "agent",
                Side::Customer => "customer",
            },
            transport,
            action: known.unwrap_or("unknown"),
        }
    }
}

impl EngineMetrics {
    pub(crate) fn record(
        &self,
        kind: RequestKind,
        outcome: Result<(), &ErrorBody>,
        took: Duration,
    ) {
        self.count(kind, outcome);
        self.request_seconds
            .get_or_create(&[("side", kind.side), ("transport", kind.transport)])
            .observe(took.as_secs_f64());
    }

    /// Counts a request without timing it.
    pub(crate) fn count(&self, kind: RequestKind, outcome: Result<(), &ErrorBody>) {
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(e) => e.kind.as_str(),
        };
        self.requests
            .get_or_create(&[
                ("side", kind.side),
                ("transport", kind.transport),
                ("action", kind.action),
                ("outcome", outcome),
            ])
            .inc();
    }
}

impl Engine {
    /// Adds the engine's metrics and its store's to `registry` (the server
    /// exports it at `/metrics`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            "requests",
            "Requests answered, by side, transport, method and outcome (ok or the error type)",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's dispatch to its answer, durable commit included",
            Unit::Seconds,
            m.request_seconds.clone(),
        );
        registry.register_collector(Box::new(SessionsCollector(Arc::downgrade(&self.inner))));
        self.inner.store.register_metrics(registry);
    }
}

/// Counts the engine's sessions when scraped; holds no engine alive.
struct SessionsCollector(Weak<crate::Inner>);

impl std::fmt::Debug for SessionsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionsCollector")
    }
}

impl Collector for SessionsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // [agent, customer] × [logged in, not yet]
        let mut counts = [[0i64; 2]; 2];
        if let Some(inner) = self.0.upgrade() {
            for c in inner.connections.iter() {
                let side = match c.side() {
                    Side::Agent => 0,
                    Side::Customer => 1,
                };
                counts[side][usize::from(!c.is_logged_in())] += 1;
            }
        }
        let mut sessions = encoder.encode_descriptor(
            "sessions",
            "Open RTM sessions, by side and whether they have logged in",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (s, side) in ["agent", "customer"].iter().enumerate() {
            for (l, logged_in) in ["true", "false"].iter().enumerate() {
                let labels = [("side", *side), ("logged_in", *logged_in)];
                ConstGauge::new(counts[s][l]).encode(sessions.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut encoder,
            "frames_queued",
            "Frames (responses and pushes) queued for RTM sessions by this process",
            FRAMES_QUEUED.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "slow_consumer_disconnects",
            "Sessions this process closed because their outbound queue was full",
            SLOW_CONSUMERS.load(Ordering::Relaxed),
        )
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}
