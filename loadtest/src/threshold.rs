//! Pass/fail gates on a run's summary: `--threshold 'p99<50ms' --threshold 'errors<1%'`.
//!
//! A load test in CI is only useful if it can fail the build, so a threshold is parsed up front
//! (a typo is a usage error before any load is sent, not a silently ignored gate) and checked
//! against the same summary the table shows.

use std::fmt;
use std::str::FromStr;

use crate::stats::Summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    /// A latency quantile in per-mille: 500 = p50, 999 = p99.9.
    Quantile(u16),
    Max,
    Mean,
    /// The share of failed requests.
    ErrorRate,
    /// The number of failed requests.
    ErrorCount,
    Throughput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn holds(self, measured: f64, limit: f64) -> bool {
        match self {
            Op::Lt => measured < limit,
            Op::Le => measured <= limit,
            Op::Gt => measured > limit,
            Op::Ge => measured >= limit,
        }
    }
}

/// One gate, as typed on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    text: String,
    metric: Metric,
    op: Op,
    /// Milliseconds for latencies, a fraction for the error rate, a count or req/s otherwise.
    limit: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad threshold {0:?}: expected METRIC OP VALUE, e.g. p99<50ms, p99.9<=200ms, max<1s, \
     errors<1%, errors<=5, rps>=900 (metrics: p50 p90 p95 p99 p99.9 p999 max mean errors rps)"
)]
pub struct ParseThresholdError(String);

/// The result of checking one gate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub threshold: String,
    pub measured: String,
    pub passed: bool,
}

impl FromStr for Threshold {
    type Err = ParseThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseThresholdError(s.to_owned());
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact.find(['<', '>']).ok_or_else(err)?;
        let (name, rest) = compact.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else {
            return Err(err());
        };
        let name = name.to_ascii_lowercase();
        let (metric, limit) = match name.as_str() {
            "errors" | "error_rate" | "errorrate" => match value.strip_suffix('%') {
                Some(pct) => (Metric::ErrorRate, number(pct).ok_or_else(err)? / 100.0),
                None => (Metric::ErrorCount, number(value).ok_or_else(err)?),
            },
            "rps" | "throughput" => (Metric::Throughput, number(value).ok_or_else(err)?),
            "max" => (Metric::Max, millis(value).ok_or_else(err)?),
            "mean" | "avg" => (Metric::Mean, millis(value).ok_or_else(err)?),
            q => {
                let digits = q.strip_prefix('p').ok_or_else(err)?;
                // Only the quantiles the summary reports: a gate on anything else could not be
                // shown beside the table it judges.
                let permille = match digits {
                    "50" => 500,
                    "90" => 900,
                    "95" => 950,
                    "99" => 990,
                    "99.9" | "999" => 999,
                    "100" => 1000,
                    _ => return Err(err()),
                };
                (Metric::Quantile(permille), millis(value).ok_or_else(err)?)
            }
        };
        Ok(Threshold {
            text: s.trim().to_owned(),
            metric,
            op,
            limit,
        })
    }
}

fn number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// A latency limit in milliseconds; a bare number means milliseconds.
fn millis(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (s, 1.0)
    };
    number(num).map(|v| v * scale)
}

impl Threshold {
    fn measured(&self, s: &Summary) -> f64 {
        match self.metric {
            Metric::Quantile(500) => s.latency_ms.p50,
            Metric::Quantile(900) => s.latency_ms.p90,
            Metric::Quantile(950) => s.latency_ms.p95,
            Metric::Quantile(990) => s.latency_ms.p99,
            Metric::Quantile(999) => s.latency_ms.p999,
            Metric::Quantile(_) | Metric::Max => s.latency_ms.max,
            Metric::Mean => s.latency_ms.mean,
            Metric::ErrorRate => s.error_rate,
            Metric::ErrorCount => s.errors as f64,
            Metric::Throughput => s.throughput_rps,
        }
    }

    pub fn check(&self, s: &Summary) -> Verdict {
        let measured = self.measured(s);
        let shown = match self.metric {
            Metric::ErrorRate => format!("{:.3}%", measured * 100.0),
            Metric::ErrorCount => format!("{measured}"),
            Metric::Throughput => format!("{measured:.1} req/s"),
            _ => format!("{measured:.3} ms"),
        };
        Verdict {
            threshold: self.text.clone(),
            measured: shown,
            passed: self.op.holds(measured, self.limit),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Outcome, Recorder};
    use std::time::Duration;

    fn summary() -> Summary {
        let mut r = Recorder::new().unwrap();
        for i in 1..=100u64 {
            let outcome = if i % 50 == 0 {
                Outcome::Status(500)
            } else {
                Outcome::Status(200)
            };
            r.record(
                Duration::from_millis(i * 10),
                Duration::from_millis(i),
                outcome,
                0,
            );
        }
        r.summary()
    }

    fn check(t: &str) -> bool {
        t.parse::<Threshold>().unwrap().check(&summary()).passed
    }

    #[test]
    fn latency_gates_compare_in_milliseconds_whatever_the_unit() {
        assert!(check("p99<100ms"));
        assert!(!check("p99<50ms"));
        assert!(check("p50 <= 0.06s"));
        assert!(!check("p50<40000us"));
        assert!(check("max<=100.1"));
        assert!(check("p99.9<101ms"));
        assert!(check("p999<101ms"));
        assert!(check("p100<=100.1ms"));
    }

    #[test]
    fn error_gates_take_a_rate_or_a_count() {
        // Two failures in a hundred.
        assert!(!check("errors<1%"));
        assert!(check("errors<3%"));
        assert!(check("errors<=2"));
        assert!(!check("errors<2"));
    }

    #[test]
    fn throughput_gates_read_requests_per_second() {
        // 100 requests, the last finishing at 1.1 s.
        assert!(check("rps>80"));
        assert!(!check("rps>=200"));
    }

    #[test]
    fn the_verdict_names_the_gate_and_the_measured_value() {
        let v = "errors<1%".parse::<Threshold>().unwrap().check(&summary());
        assert_eq!(v.threshold, "errors<1%");
        assert_eq!(v.measured, "2.000%");
        assert!(!v.passed);
    }

    #[test]
    fn malformed_gates_are_rejected_up_front() {
        for bad in [
            "",
            "p99",
            "p99=50ms",
            "p99<",
            "p99<fast",
            "latency<5ms",
            "p101<5ms",
            "p75<5ms",
            "errors<x%",
            "rps>-1",
            "p99<-3ms",
            "<5ms",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad:?} parsed");
        }
    }
}
