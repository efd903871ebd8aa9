//! The result of a run as an operator reads it: a plain-text table, or one JSON document for
//! scripts (`--json`), both built from the same `RunOutput`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::runner::LoadModel;
use crate::shaping::ShapingReport;
use crate::stats::Summary;
use crate::threshold::Verdict;

/// How the load was offered, as recorded in the output.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ModelInfo {
    Open { rate: f64 },
    Closed { concurrency: usize },
}

impl From<LoadModel> for ModelInfo {
    fn from(m: LoadModel) -> Self {
        match m {
            LoadModel::Open { rate } => ModelInfo::Open { rate },
            LoadModel::Closed { concurrency } => ModelInfo::Closed { concurrency },
        }
    }
}

/// Everything `run` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunOutput {
    pub target: String,
    pub workload: String,
    pub model: ModelInfo,
    pub warmup_seconds: f64,
    #[serde(flatten)]
    pub summary: Summary,
    /// The peak resident memory of `--watch-pid` during measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// The gateway's outbound shaping during the run (its `spark_shaper_*` series), when it
    /// has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shaping: Option<ShapingReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<Verdict>,
}

impl RunOutput {
    pub fn thresholds_passed(&self) -> bool {
        self.thresholds.iter().all(|v| v.passed)
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let model = match self.model {
            ModelInfo::Open { rate } => format!("open, {rate} req/s on a fixed schedule"),
            ModelInfo::Closed { concurrency } => format!("closed, {concurrency} workers"),
        };
        let _ = writeln!(out, "target      {} ({})", self.target, self.workload);
        let _ = writeln!(
            out,
            "model       {model}, {:.1} s warm-up",
            self.warmup_seconds
        );
        let _ = writeln!(
            out,
            "requests    {} in {:.2} s, {:.1} req/s",
            s.requests, s.elapsed_seconds, s.throughput_rps
        );
        let _ = writeln!(
            out,
            "errors      {} ({:.3}%)",
            s.errors,
            s.error_rate * 100.0
        );
        let l = &s.latency_ms;
        let _ = writeln!(
            out,
            "latency ms  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p90", "p95", "p99", "p99.9", "max", "mean"
        );
        let _ = writeln!(
            out,
            "            {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            l.p50, l.p90, l.p95, l.p99, l.p999, l.max, l.mean
        );
        let statuses: Vec<String> = s
            .status_counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let statuses = if statuses.is_empty() {
            "none".to_owned()
        } else {
            statuses.join(", ")
        };
        let _ = writeln!(out, "status      {statuses}");
        if let Some(lag) = s.scheduler_lag_ms {
            let _ = writeln!(
                out,
                "dispatch    late by p99 {:.3} ms, max {:.3} ms (the generator's own delay)",
                lag.p99, lag.max
            );
        }
        if let Some(rss) = self.peak_rss_bytes {
            let _ = writeln!(out, "peak rss    {:.1} MiB", rss as f64 / (1024.0 * 1024.0));
        }
        if let Some(shaping) = &self.shaping {
            out.push_str(&shaping.table());
        }
        for v in &self.thresholds {
            let _ = writeln!(
                out,
                "threshold   {:<20} {} (measured {})",
                v.threshold,
                if v.passed { "passed" } else { "FAILED" },
                v.measured
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Outcome, Recorder};
    use std::time::Duration;

    fn output() -> RunOutput {
        let mut r = Recorder::new().unwrap();
        r.record(
            Duration::ZERO,
            Duration::from_millis(3),
            Outcome::Status(200),
            5,
        );
        r.record(
            Duration::from_millis(1),
            Duration::from_millis(4),
            Outcome::Status(429),
            5,
        );
        RunOutput {
            target: "http://127.0.0.1:1".into(),
            workload: "health".into(),
            model: ModelInfo::Open { rate: 100.0 },
            warmup_seconds: 1.0,
            summary: r.summary(),
            peak_rss_bytes: Some(32 * 1024 * 1024),
            shaping: None,
            thresholds: vec![Verdict {
                threshold: "errors<1%".into(),
                measured: "50.000%".into(),
                passed: false,
            }],
        }
    }

    #[test]
    fn the_json_has_the_documented_top_level_fields() {
        let v = serde_json::to_value(output()).unwrap();
        for key in [
            "requests",
            "errors",
            "errorRate",
            "throughputRps",
            "latencyMs",
            "statusCounts",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        for q in ["p50", "p90", "p95", "p99", "p999", "max"] {
            assert!(v["latencyMs"][q].is_number(), "missing latencyMs.{q}");
        }
        assert_eq!(v["statusCounts"]["429"], 1);
        assert_eq!(v["model"]["kind"], "open");
        assert_eq!(v["peakRssBytes"], 32 * 1024 * 1024);
        assert_eq!(v["thresholds"][0]["passed"], false);
    }

    #[test]
    fn the_table_shows_quantiles_statuses_and_failed_gates() {
        let o = output();
        let t = o.table();
        assert!(t.contains("p99.9"), "{t}");
        assert!(t.contains("200: 1, 429: 1"), "{t}");
        assert!(t.contains("FAILED"), "{t}");
        assert!(t.contains("32.0 MiB"), "{t}");
        assert!(!o.thresholds_passed());
    }
}
