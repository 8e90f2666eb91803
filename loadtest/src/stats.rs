//! Latency and throughput statistics: HDR histograms in microseconds.
//!
//! Coordinated omission is corrected at the source: open-loop scenarios put
//! the *intended* send time of each message in its payload, and the
//! receiver records `received - intended`. A server that stalls cannot hide
//! the stall by slowing the sender down, because the schedule does not wait.

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A latency recorder (1 µs to 1 h, 3 significant digits).
///
/// The histogram (about 200 KiB of counters) is allocated at the first
/// record: every connection of a run owns a recorder, and most idle ones
/// never record anything (allocating 19,000 of them up front cost the
/// harness a third of its time in page faults).
#[derive(Clone, Debug, Default)]
pub struct Latency {
    hist: Option<Box<Histogram<u64>>>,
}

fn new_histogram() -> Box<Histogram<u64>> {
    Box::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"))
}

impl Latency {
    /// A recorder whose histogram is allocated now.
    pub fn allocated() -> Latency {
        Latency {
            hist: Some(new_histogram()),
        }
    }

    /// Records one latency in microseconds (clamped into range).
    pub fn record_us(&mut self, us: u64) {
        let v = us.clamp(1, 3_600_000_000);
        self.hist
            .get_or_insert_with(new_histogram)
            .record(v)
            .expect("clamped into range");
    }

    pub fn add(&mut self, other: &Latency) {
        if let Some(o) = &other.hist {
            self.hist
                .get_or_insert_with(new_histogram)
                .add(&**o)
                .expect("same bounds");
        }
    }

    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    /// The value at `q` (0..=1) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        match &self.hist {
            Some(h) if !h.is_empty() => h.value_at_quantile(q),
            _ => 0,
        }
    }

    pub fn max_us(&self) -> u64 {
        match &self.hist {
            Some(h) if !h.is_empty() => h.max(),
            _ => 0,
        }
    }

    /// `{count, p50_ms, p90_ms, p99_ms, p999_ms, max_ms}`.
    pub fn summary(&self) -> Value {
        let ms = |us: u64| (us as f64) / 1000.0;
        json!({
            "count": self.count(),
            "p50_ms": ms(self.quantile_us(0.5)),
            "p90_ms": ms(self.quantile_us(0.9)),
            "p99_ms": ms(self.quantile_us(0.99)),
            "p999_ms": ms(self.quantile_us(0.999)),
            "max_ms": ms(self.max_us()),
        })
    }

    /// One table line.
    pub fn line(&self, name: &str) -> String {
        let ms = |us: u64| (us as f64) / 1000.0;
        format!(
            "{name:<28} n={:<9} p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  max {:>9.3} ms",
            self.count(),
            ms(self.quantile_us(0.5)),
            ms(self.quantile_us(0.99)),
            ms(self.quantile_us(0.999)),
            ms(self.max_us()),
        )
    }

    /// `(percentile, ms)` points of the distribution, for plots.
    pub fn distribution(&self) -> Vec<(f64, f64)> {
        [
            0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
        ]
        .iter()
        .map(|p| (*p, self.quantile_us(p / 100.0) as f64 / 1000.0))
        .collect()
    }
}

/// What the progress line shows while a run goes: every measured latency
/// and every refused request of the whole process, kept lock-free (a
/// relaxed add per record) in log-spaced buckets: 8 per power of two,
/// so a quantile is known to within about 9 %. The final figures come from
/// the exact HDR histograms, not from here.
pub struct Live {
    buckets: [AtomicU64; LIVE_BUCKETS],
    errors: AtomicU64,
}

const LIVE_BUCKETS: usize = 8 * 40;

impl Live {
    const fn new() -> Live {
        Live {
            buckets: [const { AtomicU64::new(0) }; LIVE_BUCKETS],
            errors: AtomicU64::new(0),
        }
    }

    fn bucket(us: u64) -> usize {
        let v = us.max(1) as f64;
        ((v.log2() * 8.0) as usize).min(LIVE_BUCKETS - 1)
    }

    /// The bucket's upper bound in microseconds.
    fn upper_us(bucket: usize) -> f64 {
        ((bucket + 1) as f64 / 8.0).exp2()
    }

    pub fn record_us(&self, us: u64) {
        self.buckets[Self::bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The (approximate, from above) latency at `q` so far, in ms; `None`
    /// before the first record.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper_us(i) / 1000.0);
            }
        }
        Some(Self::upper_us(LIVE_BUCKETS - 1) / 1000.0)
    }
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

/// The process's live counters (one run per process).
pub static LIVE: Live = Live::new();

/// A connect+login phase as it goes (`idle`, `storm`): sessions up, failed
/// attempts (as the `Live`'s errors) and login latencies, for its progress
/// line.
#[derive(Default)]
pub struct Phase {
    up: AtomicU64,
    live: Live,
}

impl Phase {
    pub fn logged_in(&self, latency_us: u64) {
        self.up.fetch_add(1, Ordering::Relaxed);
        self.live.record_us(latency_us);
    }

    pub fn failed(&self) {
        self.live.error();
    }

    /// Attempts finished, either way.
    pub fn finished(&self) -> u64 {
        self.up.load(Ordering::Relaxed) + self.live.errors()
    }

    /// The progress line `elapsed` into a phase of `total` attempts.
    pub fn line(&self, name: &str, total: usize, elapsed: Duration) -> String {
        let up = self.up.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        format!(
            "{} {:>4}s {name}: up {up:>6}/{total} ({:>6.0}/s)  login p99 so far {}  failed {}",
            bar(self.finished() as f64 / total.max(1) as f64, 20),
            elapsed.as_secs(),
            up as f64 / secs.max(1e-9),
            self.live
                .quantile_ms(0.99)
                .map_or_else(|| "      -".to_owned(), |ms| format!("{ms:>7.1} ms")),
            self.live.errors()
        )
    }
}

/// Microseconds since `epoch`, the harness's clock for timestamps in
/// payloads (every task of one run shares the epoch).
pub fn micros_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// Reads the resident memory of process `pid` (kB) from `/proc`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user + system) of process `pid` so far, from `/proc`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds of the whole machine that the hypervisor gave to other
/// guests ("steal", all cores together), from `/proc/stat`.
pub fn steal_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    steal_of(stat.lines().next()?)
}

/// The steal field of `/proc/stat`'s `cpu` line (the eighth number, in
/// 1/100 s).
fn steal_of(cpu_line: &str) -> Option<f64> {
    let mut f = cpu_line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    Some(f.nth(7)?.parse::<f64>().ok()? / 100.0)
}

/// CPU seconds the server (when its pid is known) and this harness use
/// over a window: when the harness's own figure nears the window's length,
/// its core, not the server, set the pace. And the machine's steal over the
/// same window: on a shared host a run with seconds of it is a disturbed
/// run, whatever its latency says.
pub struct CpuWindow {
    server_pid: Option<u32>,
    server: Option<f64>,
    harness: Option<f64>,
    steal: Option<f64>,
}

impl CpuWindow {
    pub fn start(server_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            server_pid,
            server: server_pid.and_then(cpu_seconds),
            harness: cpu_seconds(std::process::id()),
            steal: steal_seconds(),
        }
    }

    /// Seconds of CPU the hypervisor took from this machine since
    /// [`CpuWindow::start`].
    pub fn stolen(&self) -> Option<f64> {
        Some(steal_seconds()? - self.steal?)
    }

    /// `(server, harness)` CPU seconds since [`CpuWindow::start`].
    pub fn used(&self) -> (Option<f64>, Option<f64>) {
        let since = |before: Option<f64>, pid: Option<u32>| Some(cpu_seconds(pid?)? - before?);
        (
            since(self.server, self.server_pid),
            since(self.harness, Some(std::process::id())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_number_of_the_cpu_line() {
        let line = "cpu  4627672 0 1038484 5671896 154375 0 191102 239417 0 0";
        assert_eq!(steal_of(line), Some(2394.17));
        assert_eq!(steal_of("cpu0 1 2 3 4 5 6 7 8 9 10"), None);
        assert_eq!(steal_of("cpu 1 2 3"), None);
    }

    #[test]
    fn the_harness_counts_its_own_cpu() {
        let w = CpuWindow::start(None);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let (server, harness) = w.used();
        assert_eq!(server, None, "no server pid, no server figure");
        let harness = harness.expect("/proc/self/stat is readable");
        assert!(harness >= 0.1, "200 ms of spinning shows: {harness}");
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut l = Latency::default();
        for us in 1..=10_000u64 {
            l.record_us(us);
        }
        assert_eq!(l.count(), 10_000);
        // 3 significant digits: within 0.1 %.
        let p50 = l.quantile_us(0.5) as f64;
        assert!((p50 - 5_000.0).abs() <= 5.0, "{p50}");
        let p99 = l.quantile_us(0.99) as f64;
        assert!((p99 - 9_900.0).abs() <= 10.0, "{p99}");
        assert!((l.max_us() as f64 - 10_000.0).abs() <= 10.0);
        let s = l.summary();
        assert_eq!(s["count"], 10_000);
    }

    #[test]
    fn merging_and_clamping() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        a.record_us(0); // clamped to 1 µs
        b.record_us(u64::MAX); // clamped to 1 h
        a.add(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.quantile_us(0.0), 1);
        assert!(a.max_us() >= 3_599_000_000);
        assert_eq!(Latency::default().quantile_us(0.99), 0);
    }

    #[test]
    fn the_bar_fills_with_progress_and_never_overflows() {
        assert_eq!(bar(0.0, 10), "[..........]");
        assert_eq!(bar(0.5, 10), "[#####.....]");
        assert_eq!(bar(1.0, 10), "[##########]");
        assert_eq!(bar(7.0, 4), "[####]");
        assert_eq!(bar(-1.0, 4), "[....]");
    }

    #[test]
    fn reads_this_process_from_proc() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(rss_kib(u32::MAX).is_none());
    }
}

#[cfg(test)]
mod live_tests {
    use super::*;

    #[test]
    fn a_phase_line_shows_sessions_up_rate_p99_and_failures() {
        let p = Phase::default();
        assert!(
            p.line("connect", 100, Duration::from_secs(1))
                .contains("up      0/100 (     0/s)  login p99 so far       -  failed 0"),
        );
        for _ in 0..40 {
            p.logged_in(2_000);
        }
        p.failed();
        p.failed();
        assert_eq!(p.finished(), 42);
        let line = p.line("connect", 100, Duration::from_secs(2));
        assert!(
            line.starts_with("[########............]    2s connect: up     40/100 (    20/s)"),
            "{line}"
        );
        // 2 ms lands in the bucket whose upper bound is 2.0 ms (2^(88/8) µs).
        assert!(
            line.contains("login p99 so far     2.0 ms  failed 2"),
            "{line}"
        );
    }

    #[test]
    fn live_quantiles_bound_the_exact_ones_from_above_within_a_bucket() {
        let live = Live::new();
        let mut exact = Latency::default();
        assert_eq!(live.quantile_ms(0.99), None);
        for us in (1..=10_000u64).map(|i| i * 37 % 50_000 + 100) {
            live.record_us(us);
            exact.record_us(us);
        }
        for q in [0.5, 0.9, 0.99] {
            let approx = live.quantile_ms(q).unwrap();
            let true_ms = exact.quantile_us(q) as f64 / 1000.0;
            assert!(
                approx >= true_ms * 0.999 && approx <= true_ms * 1.1,
                "q {q}: live {approx} ms, exact {true_ms} ms"
            );
        }
        live.error();
        live.error();
        assert_eq!(live.errors(), 2);
    }
}

/// A progress bar of `width` cells for `done` in 0..=1: `[#####.....]`.
pub fn bar(done: f64, width: usize) -> String {
    let full = ((done.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("[{}{}]", "#".repeat(full), ".".repeat(width - full))
}

/// The live progress line: redrawn in place on a terminal, one line per
/// update otherwise (so a log file keeps every second).
pub struct Progress {
    tty: bool,
    drawn: bool,
}

impl Progress {
    pub fn new() -> Self {
        use std::io::IsTerminal;
        Progress {
            tty: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    pub fn show(&mut self, line: &str) {
        if self.tty {
            // Back to the line's start, draw, clear what an older, longer
            // line left.
            eprint!("\r{line}\x1b[K");
            self.drawn = true;
        } else {
            eprintln!("{line}");
        }
    }

    /// Ends a redrawn line so what follows starts on its own.
    pub fn done(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
