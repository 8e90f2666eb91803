//! What the store's writer measures, for the server's `/metrics`.
//!
//! The histograms are written by the one writer thread (an uncontended lock
//! per observation); the counters are the writer's atomics, read at scrape
//! time. Names and meanings: proto-docs/metrics.md.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Seconds buckets: 25 µs, 50 µs, … about 3.3 s.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(25e-6, 2.0, 18)
}

/// The writer's histograms.
#[derive(Debug, Clone)]
pub(crate) struct WriterMetrics {
    /// From a write's arrival in the queue to the start of the transaction
    /// that carries it.
    pub queue_wait: Histogram,
    /// A group's transaction, `BEGIN` to the synced `COMMIT`.
    pub commit: Histogram,
    /// Submissions per group.
    pub group_size: Histogram,
}

impl WriterMetrics {
    pub fn new() -> Self {
        WriterMetrics {
            queue_wait: Histogram::new(seconds_buckets()),
            commit: Histogram::new(seconds_buckets()),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
        }
    }
}

/// The writer's counters (shared with the submitting side).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub transactions: AtomicU64,
    pub submissions: AtomicU64,
    /// Groups the writer held back for more writes to join (`CommitPacer`).
    pub commit_delays: AtomicU64,
    /// Jobs handed to the writer whose completion has not run yet.
    pub outstanding: AtomicU64,
    /// Committed events whose text the writer has not indexed yet.
    pub unindexed: AtomicU64,
}

/// Registers everything under `store_`.
pub(crate) fn register(registry: &mut Registry, writer: &WriterMetrics, counters: Arc<Counters>) {
    let store = registry.sub_registry_with_prefix("store");
    store.register_with_unit(
        "queue_wait",
        "Time a write waited in the writer's queue before its transaction began",
        Unit::Seconds,
        writer.queue_wait.clone(),
    );
    store.register_with_unit(
        "commit",
        "Time a group commit took, from BEGIN to the synced COMMIT",
        Unit::Seconds,
        writer.commit.clone(),
    );
    store.register(
        "group_size",
        "Submissions committed together in one transaction",
        writer.group_size.clone(),
    );
    store.register_collector(Box::new(CountersCollector(counters)));
}

#[derive(Debug)]
struct CountersCollector(Arc<Counters>);

impl Collector for CountersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        counter(
            &mut encoder,
            "transactions",
            "Write transactions committed, each with one sync of the log",
            c.transactions.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "submissions",
            "Writes completed (committed or refused)",
            c.submissions.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "commit_delays",
            "Groups the writer held for the commit delay so that more writes could join them",
            c.commit_delays.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "outstanding",
            "Writes queued or being committed",
            c.outstanding.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "unindexed_events",
            "Committed events whose text is not in the search index yet",
            c.unindexed.load(Ordering::Relaxed),
        )
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}
