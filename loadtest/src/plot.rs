//! SVG plots of a run (`--svg FILE`): the latency distribution on the usual
//! "nines" axis (0 %, 90 %, 99 %, 99.9 %, … of deliveries at or under a
//! latency) and, when the scenario records it, p50 and p99 by second of the
//! run. Drawn from the same JSON the run writes, by hand: no plotting
//! dependency for two line charts.

use serde_json::Value;
use std::fmt::Write;

const WIDTH: f64 = 640.0;
const CHART: f64 = 300.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 40.0;
/// The distribution's x axis ends at five nines (99.999 %); the maximum is
/// drawn there.
const MAX_NINES: f64 = 5.0;

/// A named line: (name, colour, (x, y) points).
type Series = (&'static str, &'static str, Vec<(f64, f64)>);

/// One chart: a title, axis labels, x ticks and one or more named series of
/// (x, y) points.
struct Chart {
    title: String,
    x_label: &'static str,
    x_ticks: Vec<(f64, String)>,
    x_max: f64,
    series: Vec<Series>,
}

/// `-log10(1 - p)`: 90 % → 1, 99 % → 2, …; 100 % → [`MAX_NINES`].
fn nines(percentile: f64) -> f64 {
    let rest = 1.0 - percentile / 100.0;
    if rest <= 0.0 {
        MAX_NINES
    } else {
        (-rest.log10()).clamp(0.0, MAX_NINES)
    }
}

/// The SVG for a run's JSON result, or `None` when it holds no latency
/// distribution (the first `…_distribution` field of `[percentile, ms]`
/// pairs) to draw.
pub fn svg(title: &str, result: &Value) -> Option<String> {
    let (name, points) = result.as_object()?.iter().find_map(|(k, v)| {
        let name = k.strip_suffix("_distribution")?;
        let pts: Vec<(f64, f64)> = v
            .as_array()?
            .iter()
            .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
            .collect();
        (!pts.is_empty()).then_some((name, pts))
    })?;
    let mut charts = vec![Chart {
        title: format!("{title}: {name} distribution"),
        x_label: "percentile",
        x_ticks: ["0%", "90%", "99%", "99.9%", "99.99%", "max"]
            .iter()
            .enumerate()
            .map(|(i, l)| (i as f64, (*l).to_owned()))
            .collect(),
        x_max: MAX_NINES,
        series: vec![(
            "ms",
            "#1f77b4",
            points.iter().map(|(p, ms)| (nines(*p), *ms)).collect(),
        )],
    }];
    if let Some(seconds) = result.get("latency_by_second").and_then(Value::as_array) {
        let series = |field: &str| -> Vec<(f64, f64)> {
            seconds
                .iter()
                .filter_map(|s| Some((s.get("second")?.as_f64()?, s.get(field)?.as_f64()?)))
                .collect()
        };
        let (p50, p99) = (series("p50_ms"), series("p99_ms"));
        if !p99.is_empty() {
            let last = p99.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0);
            let step = (last / 10.0).ceil().max(1.0);
            charts.push(Chart {
                title: format!("{title}: latency by second of sending"),
                x_label: "second",
                x_ticks: (0..)
                    .map(|i| i as f64 * step)
                    .take_while(|x| *x <= last)
                    .map(|x| (x, format!("{x}")))
                    .collect(),
                x_max: last,
                series: vec![("p50", "#2ca02c", p50), ("p99", "#d62728", p99)],
            });
        }
    }
    let height = charts.len() as f64 * (CHART + TOP + BOTTOM);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, chart) in charts.iter().enumerate() {
        draw(&mut out, chart, i as f64 * (CHART + TOP + BOTTOM));
    }
    out.push_str("</svg>\n");
    Some(out)
}

/// Escapes text for an SVG text node.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Where (x, y) lands in a chart whose top edge is at `top`.
fn place(chart: &Chart, y_max: f64, top: f64, (x, y): (f64, f64)) -> (f64, f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let px = LEFT + x / chart.x_max.max(f64::MIN_POSITIVE) * plot_w;
    let py = top + TOP + CHART - y / y_max * CHART;
    (px, py)
}

fn draw(out: &mut String, chart: &Chart, top: f64) {
    let y_max = chart
        .series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.1;
    let (x0, y0) = (LEFT, top + TOP + CHART);
    let x1 = WIDTH - RIGHT;
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" font-weight=\"bold\">{}</text>",
        top + TOP - 15.0,
        esc(&chart.title)
    );
    let _ = writeln!(
        out,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/>\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{}\" stroke=\"black\"/>",
        top + TOP
    );
    for (x, label) in &chart.x_ticks {
        let (px, _) = place(chart, y_max, top, (*x, 0.0));
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{y0}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            top + TOP,
            y0 + 15.0,
            esc(label)
        );
    }
    for k in 0..=4 {
        let v = y_max / 4.0 * k as f64;
        let (_, py) = place(chart, y_max, top, (0.0, v));
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            LEFT - 5.0,
            py + 4.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">ms</text>",
        (x0 + x1) / 2.0,
        y0 + 32.0,
        chart.x_label,
        top + TOP + CHART / 2.0,
        top + TOP + CHART / 2.0
    );
    for (n, (name, color, points)) in chart.series.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let coords: Vec<String> = points
            .iter()
            .map(|p| {
                let (x, y) = place(chart, y_max, top, *p);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = writeln!(
            out,
            "<polyline data-series=\"{name}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>",
            coords.join(" "),
            x1 - 60.0,
            top + TOP + 15.0 + 15.0 * n as f64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The points of the polyline named `series`.
    fn polyline(svg: &str, series: &str) -> Vec<(f64, f64)> {
        let at = svg
            .find(&format!("data-series=\"{series}\""))
            .unwrap_or_else(|| panic!("no series {series}"));
        let rest = &svg[at..];
        let start = rest.find("points=\"").unwrap() + 8;
        let end = start + rest[start..].find('"').unwrap();
        rest[start..end]
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn the_distribution_is_drawn_on_the_nines_axis() {
        let result = json!({
            "latency": {"p99_ms": 10.0},
            "latency_distribution": [[0.0, 1.0], [90.0, 2.0], [99.0, 10.0], [100.0, 20.0]],
        });
        let svg = svg("fanout", &result).expect("a distribution to draw");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("fanout: latency distribution"));
        let pts = polyline(&svg, "ms");
        assert_eq!(pts.len(), 4);
        // 0 %, 90 %, 99 % and the maximum sit at 0, 1, 2 and 5 nines.
        let plot_w = WIDTH - LEFT - RIGHT;
        for (p, nines) in pts.iter().zip([0.0, 1.0, 2.0, 5.0]) {
            assert!(
                (p.0 - (LEFT + nines / MAX_NINES * plot_w)).abs() < 0.2,
                "{pts:?}"
            );
        }
        // Higher latency is drawn higher up (smaller y), the highest at 1/1.1
        // of the chart.
        assert!(pts.windows(2).all(|w| w[1].1 < w[0].1), "{pts:?}");
        assert!((pts[3].1 - (TOP + CHART - CHART / 1.1)).abs() < 0.2);
        // No time series in the result: one chart.
        assert!(!svg.contains("by second"));
    }

    #[test]
    fn latency_by_second_adds_a_second_chart() {
        let result = json!({
            "latency_distribution": [[0.0, 1.0], [100.0, 5.0]],
            "latency_by_second": [
                {"second": 0, "p50_ms": 1.0, "p99_ms": 4.0},
                {"second": 1, "p50_ms": 1.5, "p99_ms": 3.0},
                {"second": 2, "p50_ms": 1.2, "p99_ms": 5.0},
            ],
        });
        let svg = svg("fanout", &result).unwrap();
        assert!(svg.contains("latency by second of sending"));
        let (p50, p99) = (polyline(&svg, "p50"), polyline(&svg, "p99"));
        assert_eq!((p50.len(), p99.len()), (3, 3));
        // The second chart sits below the first.
        assert!(p99.iter().all(|p| p.1 > TOP + CHART + BOTTOM));
        // p99 is above p50 every second.
        assert!(p50.iter().zip(&p99).all(|(a, b)| b.1 < a.1));
    }

    #[test]
    fn nothing_to_draw_without_a_distribution() {
        assert!(svg("x", &json!({"latency": {}})).is_none());
        assert!(svg("x", &json!({"login_distribution": []})).is_none());
    }
}
