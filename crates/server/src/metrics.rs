//! `/metrics` on its own listener (`--metrics-listen`): the engine's and
//! the store's metrics in the OpenMetrics text format, plus the process's
//! own (`process_*`, read from `/proc/self`). Names and meanings:
//! proto-docs/metrics.md.
//!
//! A listener of its own, not a route on the public one: what it shows
//! (load, error rates) is for the operator's scraper, on an address the
//! operator chooses.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use chatgate_engine::Engine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

/// The content type of the OpenMetrics text format (Prometheus reads it).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct Registries {
    chatgate: Registry,
    process: Registry,
}

/// The `/metrics` router for `engine`.
pub fn router(engine: &Engine) -> Router {
    let mut chatgate = Registry::with_prefix("chatgate");
    engine.register_metrics(&mut chatgate);
    let mut process = Registry::with_prefix("process");
    process.register_collector(Box::new(ProcessCollector));
    let registries = Arc::new(Registries { chatgate, process });
    Router::new().route(
        "/metrics",
        get(move || {
            let registries = registries.clone();
            async move {
                let mut body = String::with_capacity(16 * 1024);
                let encoded = prometheus_client::encoding::text::encode_registry(
                    &mut body,
                    &registries.chatgate,
                )
                .and_then(|()| {
                    prometheus_client::encoding::text::encode_registry(
                        &mut body,
                        &registries.process,
                    )
                })
                .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut body));
                match encoded {
                    Ok(()) => ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], body).into_response(),
                    Err(_) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics could not be encoded",
                    )
                        .into_response(),
                }
            }
        }),
    )
}

/// The process's resources, from `/proc/self` at each scrape (Linux; on
/// other systems these metrics are absent).
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (`USER_HZ`,
/// 100 on every Linux architecture chatgate builds for).
const USER_HZ: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        if let Some(ticks) = cpu_ticks() {
            let cpu = ConstCounter::new(ticks as f64 / USER_HZ);
            one(
                e,
                "cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                cpu,
            )?;
        }
        if let Some(kib) = status_number("VmRSS:") {
            let rss = ConstGauge::new((kib * 1024) as i64);
            one(
                e,
                "resident_memory",
                "Resident memory size",
                Some(&Unit::Bytes),
                rss,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds = ConstGauge::new(dir.count() as i64);
            one(e, "open_fds", "Open file descriptors", None, fds)?;
        }
        if let Some(n) = status_number("Threads:") {
            one(e, "threads", "Threads", None, ConstGauge::new(n as i64))?;
        }
        Ok(())
    }
}

/// Encodes one metric with its descriptor.
fn one(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    m: impl EncodeMetric,
) -> std::fmt::Result {
    m.encode(e.encode_descriptor(name, help, unit, m.metric_type())?)
}

/// utime + stime of `/proc/self/stat`.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The number after `key` in `/proc/self/status` (kB for sizes).
fn status_number(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
