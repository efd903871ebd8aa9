//! `--report report.html`: one self-contained page (no script, no external file) with the run's
//! summary, a latency-over-time chart and a latency histogram, drawn as inline SVG by hand.
//!
//! Hand-drawn because two charts of lines and bars are a few dozen lines of SVG, while a plotting
//! crate brings a font stack and a build-time footprint the CI would pay on every run. The page
//! is written as polyglot XHTML (every element closed, text escaped), so it is well-formed XML as
//! well as valid HTML and a test can parse it strictly.

use std::fmt::Write as _;
use std::time::Duration;

use crate::output::RunOutput;
use crate::stats::TimelinePoint;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 44.0;

/// What the page shows.
pub struct ReportData<'a> {
    pub output: &'a RunOutput,
    pub timeline: Vec<TimelinePoint>,
    /// `(upper bound, count)` per log-spaced latency bucket.
    pub distribution: Vec<(Duration, u64)>,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round step (1, 2 or 5 times a power of ten) that cuts `0..max` into about `count` parts.
fn nice_step(max: f64, count: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / count;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    step.max(f64::MIN_POSITIVE)
}

fn fmt_ms(ms: f64) -> String {
    if ms <= 0.0 {
        "0".to_owned()
    } else if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.0} µs", ms * 1000.0)
    }
}

fn open_svg(out: &mut String, id: &str, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="{id}" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"><title>{}</title>"#,
        escape(title)
    );
}

/// Axes with a horizontal grid; returns the y scale's top value.
fn axes(out: &mut String, y_max: f64, y_label: &str, fmt_y: impl Fn(f64) -> String) -> f64 {
    let step = nice_step(y_max, 5.0);
    let top = (y_max / step).ceil().max(1.0) * step;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = HEIGHT - BOTTOM - v / top * plot_h;
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&fmt_y(v))
        );
        v += step;
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#555"/><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#555"/><text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"##,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    top
}

fn latency_over_time(out: &mut String, timeline: &[TimelinePoint]) {
    open_svg(
        out,
        "latency-over-time",
        "Latency over time: p50, p99 and max per second of the run",
    );
    let y_max = timeline.iter().map(|p| p.max_ms).fold(0.0, f64::max);
    let top = axes(out, y_max, "latency", fmt_ms);
    let seconds = timeline.len().max(2) as f64 - 1.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |i: f64| LEFT + i / seconds * plot_w;
    let y = |ms: f64| HEIGHT - BOTTOM - ms / top * plot_h;
    let x_step = nice_step(seconds, 8.0).max(1.0);
    let mut t = 0.0;
    while t <= seconds + 1e-9 {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{t:.0}s</text>"#,
            x(t),
            HEIGHT - BOTTOM + 16.0
        );
        t += x_step;
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">seconds since measurement began (by intended start)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0
    );
    type Series = (&'static str, &'static str, fn(&TimelinePoint) -> f64);
    let series: [Series; 3] = [
        ("max", "#d62728", |p| p.max_ms),
        ("p99", "#ff7f0e", |p| p.p99_ms),
        ("p50", "#1f77b4", |p| p.p50_ms),
    ];
    for (i, (name, color, value)) in series.iter().enumerate() {
        let points: Vec<String> = timeline
            .iter()
            .enumerate()
            .filter(|(_, p)| p.requests > 0)
            .map(|(s, p)| format!("{:.1},{:.1}", x(s as f64), y(value(p))))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="series" data-series="{name}" fill="none" stroke="{color}" stroke-width="1.6" points="{}"/>"#,
            points.join(" ")
        );
        let lx = LEFT + 12.0 + i as f64 * 70.0;
        let _ = write!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="11">{name}</text>"#,
            TOP + 4.0,
            lx + 16.0,
            TOP + 9.0
        );
    }
    out.push_str("</svg>");
}

fn histogram(out: &mut String, bins: &[(Duration, u64)], p50_ms: f64, p99_ms: f64) {
    open_svg(
        out,
        "latency-histogram",
        "Latency histogram: requests per log-spaced latency bucket",
    );
    let count_max = bins.iter().map(|(_, c)| *c).max().unwrap_or(0) as f64;
    let top = axes(out, count_max, "requests", |v| format!("{v:.0}"));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = bins.len().max(1) as f64;
    let bar_w = plot_w / n;
    let label_every = (bins.len() / 8).max(1);
    for (i, (upper, count)) in bins.iter().enumerate() {
        let h = *count as f64 / top * plot_h;
        let bx = LEFT + i as f64 * bar_w;
        let upper_ms = upper.as_secs_f64() * 1000.0;
        let _ = write!(
            out,
            r##"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#4c78a8"><title>≤ {}: {count}</title></rect>"##,
            bx + 0.5,
            HEIGHT - BOTTOM - h,
            (bar_w - 1.0).max(0.5),
            escape(&fmt_ms(upper_ms))
        );
        if i % label_every == 0 || i + 1 == bins.len() {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                bx + bar_w,
                HEIGHT - BOTTOM + 14.0,
                escape(&fmt_ms(upper_ms))
            );
        }
    }
    // Markers at the bucket holding each quantile.
    for (name, ms, color) in [("p50", p50_ms, "#1f77b4"), ("p99", p99_ms, "#ff7f0e")] {
        let Some(i) = bins
            .iter()
            .position(|(u, _)| u.as_secs_f64() * 1000.0 >= ms)
        else {
            continue;
        };
        let mx = LEFT + (i as f64 + 0.5) * bar_w;
        let _ = write!(
            out,
            r#"<line x1="{mx:.1}" y1="{TOP}" x2="{mx:.1}" y2="{:.1}" stroke="{color}" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" font-size="11" fill="{color}">{name}</text>"#,
            HEIGHT - BOTTOM,
            mx + 3.0,
            TOP + 12.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">latency (bucket upper bound, log scale)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0
    );
    out.push_str("</svg>");
}

/// The whole page.
pub fn render(data: &ReportData<'_>) -> String {
    let o = data.output;
    let s = &o.summary;
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(concat!(
        "<!DOCTYPE html>\n",
        r#"<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8"/>"#,
        "<title>spark-loadtest report</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;margin-bottom:1.5em}",
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}",
        "th{background:#f4f4f4}td.l,th.l{text-align:left}",
        "svg{display:block;margin-bottom:2em;max-width:100%;height:auto}",
        ".fail{color:#b00020;font-weight:bold}.pass{color:#0a7d28}",
        "</style></head><body><h1>spark-loadtest report</h1>"
    ));
    let _ = write!(
        out,
        r#"<p>{} against <code>{}</code>; {} measured requests, {:.1} req/s, {} errors ({:.3}%).</p>"#,
        escape(&o.workload),
        escape(&o.target),
        s.requests,
        s.throughput_rps,
        s.errors,
        s.error_rate * 100.0
    );
    let l = &s.latency_ms;
    let _ = write!(
        out,
        "<table><tr><th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>\
         <tr><td>{:.3} ms</td><td>{:.3} ms</td><td>{:.3} ms</td><td>{:.3} ms</td><td>{:.3} ms</td><td>{:.3} ms</td><td>{:.3} ms</td></tr></table>",
        l.p50, l.p90, l.p95, l.p99, l.p999, l.max, l.mean
    );
    out.push_str(r#"<table><tr><th class="l">status</th><th>count</th></tr>"#);
    for (status, count) in &s.status_counts {
        let _ = write!(
            out,
            r#"<tr><td class="l">{}</td><td>{count}</td></tr>"#,
            escape(status)
        );
    }
    out.push_str("</table>");
    if !o.thresholds.is_empty() {
        out.push_str(
            r#"<table><tr><th class="l">threshold</th><th>measured</th><th>result</th></tr>"#,
        );
        for v in &o.thresholds {
            let (class, word) = if v.passed {
                ("pass", "passed")
            } else {
                ("fail", "failed")
            };
            let _ = write!(
                out,
                r#"<tr><td class="l">{}</td><td>{}</td><td class="{class}">{word}</td></tr>"#,
                escape(&v.threshold),
                escape(&v.measured)
            );
        }
        out.push_str("</table>");
    }
    if let Some(shaping) = &o.shaping {
        out.push_str("<h2>Gateway outbound shaping</h2>");
        out.push_str(
            r#"<table><tr><th class="l">lane</th><th class="l">class</th><th>waited</th><th>mean wait (ms)</th><th>queued at end</th></tr>"#,
        );
        for r in &shaping.rows {
            let _ = write!(
                out,
                r#"<tr><td class="l">{}</td><td class="l">{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>"#,
                escape(&r.lane),
                escape(&r.class),
                r.waited,
                r.mean_wait_ms,
                r.queued_at_end
            );
        }
        out.push_str("</table>");
        out.push_str(
            r#"<table><tr><th class="l">lane</th><th class="l">refused</th><th>count</th></tr>"#,
        );
        for (lane, reasons) in &shaping.rejected {
            for (reason, n) in reasons {
                let _ = write!(
                    out,
                    r#"<tr><td class="l">{}</td><td class="l">{}</td><td>{n}</td></tr>"#,
                    escape(lane),
                    escape(reason)
                );
            }
        }
        out.push_str("</table>");
    }
    out.push_str("<h2>Latency over time</h2>");
    latency_over_time(&mut out, &data.timeline);
    out.push_str("<h2>Latency histogram</h2>");
    histogram(&mut out, &data.distribution, l.p50, l.p99);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 5.0), 2.0);
        assert_eq!(nice_step(0.9, 5.0), 0.2);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!(nice_step(f64::NAN, 5.0), 1.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn durations_read_in_a_sensible_unit() {
        assert_eq!(fmt_ms(0.0), "0");
        assert_eq!(fmt_ms(0.25), "250 µs");
        assert_eq!(fmt_ms(2.5), "2.5 ms");
        assert_eq!(fmt_ms(250.0), "250 ms");
        assert_eq!(fmt_ms(2500.0), "2.5 s");
    }
}
