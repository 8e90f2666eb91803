//! The server's own view of a run, from its `/metrics` (`--metrics`, the
//! address of chatgate's `--metrics-listen`): how long requests took inside
//! it and how that time split into the store's queue and its commits. Read
//! before and after the traffic; the difference is the traffic's.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every sample of one scrape: `name{labels}` → value.
#[derive(Debug, Default, Clone)]
pub struct Snapshot(HashMap<String, f64>);

/// Reads `/metrics` (one HTTP/1.0 GET; the server closes after answering).
pub async fn scrape(addr: SocketAddr) -> io::Result<Snapshot> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("metrics: no HTTP response"))?;
    if !head.lines().next().is_some_and(|l| l.contains(" 200 ")) {
        return Err(io::Error::other(format!(
            "metrics: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(parse(body))
}

/// The samples of an OpenMetrics / Prometheus text body.
pub fn parse(body: &str) -> Snapshot {
    Snapshot(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// The value of label `name` in a series' labels (`a="x",b="y"}`).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels
        .split(&format!("{name}=\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
}

/// A histogram's buckets over a window: (upper bound, cumulative count),
/// summed over the series whose labels contain `filter`.
fn buckets(before: &Snapshot, after: &Snapshot, name: &str, filter: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut by_le: HashMap<String, f64> = HashMap::new();
    for (series, v) in &after.0 {
        let Some(labels) = series.strip_prefix(&prefix) else {
            continue;
        };
        if !labels.contains(filter) {
            continue;
        }
        let Some(le) = label(labels, "le") else {
            continue;
        };
        let was = before.0.get(series).copied().unwrap_or(0.0);
        *by_le.entry(le.to_owned()).or_default() += v - was;
    }
    let mut out: Vec<(f64, f64)> = by_le
        .into_iter()
        .filter_map(|(le, n)| {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket bound at or under which a fraction `q` of the window's
/// observations fell (`None` without observations, or when they fell past
/// the last finite bound).
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite())
}

fn sum_of(before: &Snapshot, after: &Snapshot, series: &str) -> f64 {
    after.0.get(series).copied().unwrap_or(0.0) - before.0.get(series).copied().unwrap_or(0.0)
}

/// A histogram's count, p50 and p99 bounds (ms) over the window.
fn summary(before: &Snapshot, after: &Snapshot, name: &str, filter: &str) -> Value {
    let b = buckets(before, after, name, filter);
    let ms = |q| quantile(&b, q).map(|s| s * 1000.0);
    json!({
        "count": b.last().map(|x| x.1).unwrap_or(0.0),
        "p50_ms_at_most": ms(0.5),
        "p99_ms_at_most": ms(0.99),
    })
}

/// Requests the server answered with an error over the window, by error
/// type (the `outcome` label of `chatgate_requests_total`, every side,
/// transport and method together; refusals before dispatch included).
fn request_errors(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (series, v) in &after.0 {
        let Some(labels) = series.strip_prefix("chatgate_requests_total{") else {
            continue;
        };
        let Some(outcome) = label(labels, "outcome") else {
            continue;
        };
        let n = v - before.0.get(series).copied().unwrap_or(0.0);
        if outcome != "ok" && n > 0.0 {
            *out.entry(outcome.to_owned()).or_default() += n;
        }
    }
    out
}

/// What the server measured between two scrapes: a line for people and
/// the same as JSON.
pub fn report(before: &Snapshot, after: &Snapshot) -> (String, Value) {
    let requests = summary(
        before,
        after,
        "chatgate_request_duration_seconds",
        "transport=\"rtm\"",
    );
    let queue = summary(before, after, "chatgate_store_queue_wait_seconds", "");
    let commit = summary(before, after, "chatgate_store_commit_seconds", "");
    let commits = sum_of(before, after, "chatgate_store_group_size_count");
    let writes = sum_of(before, after, "chatgate_store_group_size_sum");
    let per_commit = if commits > 0.0 { writes / commits } else { 0.0 };
    // Groups the writer held for its commit delay (`--commit-delay-us`).
    let held = sum_of(before, after, "chatgate_store_commit_delays_total");
    let errors = request_errors(before, after);
    let f = |v: &Value, k: &str| match v[k].as_f64() {
        Some(x) => format!("≤ {x:.2}"),
        None => "-".into(),
    };
    let line = format!(
        "server (its /metrics, bucket bounds): RTM request p50 {} ms, p99 {} ms; store queue wait p50 {} ms, p99 {} ms; commit p50 {} ms, p99 {} ms; {commits:.0} commits, {per_commit:.1} writes each, {held:.0} held for the commit delay; requests answered with errors {errors:?}",
        f(&requests, "p50_ms_at_most"),
        f(&requests, "p99_ms_at_most"),
        f(&queue, "p50_ms_at_most"),
        f(&queue, "p99_ms_at_most"),
        f(&commit, "p50_ms_at_most"),
        f(&commit, "p99_ms_at_most"),
    );
    (
        line,
        json!({
            "rtm_requests": requests,
            "store_queue_wait": queue,
            "store_commit": commit,
            "commits": commits,
            "writes_per_commit": per_commit,
            "commit_delays": held,
            "request_errors": errors,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reports_bucket_bounds_of_its_own_observations() {
        let before = parse(
            "# TYPE chatgate_store_commit_seconds histogram\n\
             chatgate_store_commit_seconds_bucket{le=\"0.001\"} 10\n\
             chatgate_store_commit_seconds_bucket{le=\"0.002\"} 10\n\
             chatgate_store_commit_seconds_bucket{le=\"0.004\"} 10\n\
             chatgate_store_commit_seconds_bucket{le=\"+Inf\"} 10\n\
             chatgate_store_group_size_sum 10\n\
             chatgate_store_group_size_count 10\n\
             chatgate_store_commit_delays_total 4\n",
        );
        // 100 more: 90 under 1 ms, 9 under 2 ms, 1 under 4 ms.
        let after = parse(
            "chatgate_store_commit_seconds_bucket{le=\"0.001\"} 100\n\
             chatgate_store_commit_seconds_bucket{le=\"0.002\"} 109\n\
             chatgate_store_commit_seconds_bucket{le=\"0.004\"} 110\n\
             chatgate_store_commit_seconds_bucket{le=\"+Inf\"} 110\n\
             chatgate_store_group_size_sum 310\n\
             chatgate_store_group_size_count 110\n\
             chatgate_store_commit_delays_total 34\n",
        );
        let (line, v) = report(&before, &after);
        assert_eq!(v["store_commit"]["count"], 100.0);
        assert_eq!(v["store_commit"]["p50_ms_at_most"], 1.0);
        assert_eq!(v["store_commit"]["p99_ms_at_most"], 2.0);
        assert_eq!(v["commits"], 100.0);
        assert_eq!(v["writes_per_commit"], 3.0);
        assert_eq!(v["commit_delays"], 30.0);
        assert!(line.contains("30 held for the commit delay"), "{line}");
        assert_eq!(v["store_queue_wait"]["count"], 0.0);
        assert!(v["store_queue_wait"]["p99_ms_at_most"].is_null());
        assert!(
            line.contains("commit p50 ≤ 1.00 ms, p99 ≤ 2.00 ms"),
            "{line}"
        );
    }

    #[test]
    fn request_errors_are_the_window_s_by_type() {
        let before = parse(
            "chatgate_requests_total{side=\"agent\",transport=\"rtm\",action=\"send_event\",outcome=\"pending_requests_limit_reached\"} 5\n\
             chatgate_requests_total{side=\"agent\",transport=\"rtm\",action=\"send_event\",outcome=\"ok\"} 100\n",
        );
        let after = parse(
            "chatgate_requests_total{side=\"agent\",transport=\"rtm\",action=\"send_event\",outcome=\"pending_requests_limit_reached\"} 8\n\
             chatgate_requests_total{side=\"customer\",transport=\"rtm\",action=\"send_event\",outcome=\"pending_requests_limit_reached\"} 2\n\
             chatgate_requests_total{side=\"agent\",transport=\"rtm\",action=\"unknown\",outcome=\"validation\"} 1\n\
             chatgate_requests_total{side=\"agent\",transport=\"rtm\",action=\"send_event\",outcome=\"ok\"} 900\n",
        );
        let (line, v) = report(&before, &after);
        assert_eq!(
            v["request_errors"],
            json!({"pending_requests_limit_reached": 5.0, "validation": 1.0})
        );
        assert!(
            line.contains("\"pending_requests_limit_reached\": 5.0"),
            "{line}"
        );
        // Nothing new: no errors reported.
        let (_, v) = report(&after, &after);
        assert_eq!(v["request_errors"], json!({}));
    }

    #[test]
    fn labelled_series_are_summed_over_the_filter() {
        let after = parse(
            "chatgate_request_duration_seconds_bucket{le=\"0.001\",side=\"agent\",transport=\"rtm\"} 1\n\
             chatgate_request_duration_seconds_bucket{le=\"+Inf\",side=\"agent\",transport=\"rtm\"} 2\n\
             chatgate_request_duration_seconds_bucket{le=\"0.001\",side=\"customer\",transport=\"rtm\"} 1\n\
             chatgate_request_duration_seconds_bucket{le=\"+Inf\",side=\"customer\",transport=\"rtm\"} 2\n\
             chatgate_request_duration_seconds_bucket{le=\"0.001\",side=\"agent\",transport=\"web\"} 50\n\
             chatgate_request_duration_seconds_bucket{le=\"+Inf\",side=\"agent\",transport=\"web\"} 50\n",
        );
        let (_, v) = report(&Snapshot::default(), &after);
        assert_eq!(v["rtm_requests"]["count"], 4.0);
        assert_eq!(v["rtm_requests"]["p50_ms_at_most"], 1.0);
        // Half of them past the last finite bound: no bound to give.
        assert!(v["rtm_requests"]["p99_ms_at_most"].is_null());
    }
}
