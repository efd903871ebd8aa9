//! The gateway's outbound shaping as the run saw it, for the report: its `/metrics` scraped
//! before and after the measurement, the `spark_shaper_*` series turned into one row per lane
//! and class (requests that waited and how long on average, refusals, what was queued and
//! left at the end).
//!
//! A client-side count of 503s cannot say whether the gateway shed load, found every circuit
//! open, or was waiting for provider capacity; these series can. A target without them (no
//! `SPARK_PROVIDER_LIMITS`, or `/metrics` on another port) gives no section at all.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// One sample of the text exposition: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The `spark_shaper_*` samples of a Prometheus text exposition (other lines are skipped).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| l.starts_with("spark_shaper_"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// One lane and class over the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LaneRow {
    pub lane: String,
    pub class: String,
    /// Requests that waited in line and then went out.
    pub waited: u64,
    pub mean_wait_ms: f64,
    /// Still waiting when the run ended.
    pub queued_at_end: u64,
}

/// The shaping section of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ShapingReport {
    pub rows: Vec<LaneRow>,
    /// Refusals per lane and reason (`queue_full`, `timeout`) during the run.
    pub rejected: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests and tokens each lane could send at once when the run ended.
    pub available_at_end: BTreeMap<String, BTreeMap<String, u64>>,
}

impl ShapingReport {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.rejected.is_empty() && self.available_at_end.is_empty()
    }

    /// What changed between two scrapes of the gateway's `/metrics`.
    pub fn between(before: &str, after: &str) -> Self {
        let (before, after) = (samples(before), samples(after));
        let find = |set: &[Sample], name: &str, labels: &BTreeMap<String, String>| {
            set.iter()
                .find(|s| s.name == name && &s.labels == labels)
                .map_or(0.0, |s| s.value)
        };
        let delta = |name: &str, labels: &BTreeMap<String, String>| {
            (find(&after, name, labels) - find(&before, name, labels)).max(0.0)
        };
        let label = |s: &Sample, k: &str| s.labels.get(k).cloned().unwrap_or_default();
        let mut report = ShapingReport::default();
        for s in &after {
            match s.name.as_str() {
                "spark_shaper_wait_seconds_count" => {
                    let waited = delta(&s.name, &s.labels);
                    let seconds = delta("spark_shaper_wait_seconds_sum", &s.labels);
                    let queued = find(&after, "spark_shaper_queue_depth", &s.labels);
                    report.rows.push(LaneRow {
                        lane: label(s, "lane"),
                        class: label(s, "class"),
                        waited: waited as u64,
                        mean_wait_ms: if waited > 0.0 {
                            seconds / waited * 1000.0
                        } else {
                            0.0
                        },
                        queued_at_end: queued as u64,
                    });
                }
                "spark_shaper_queue_depth"
                    if s.value > 0.0
                        && !after.iter().any(|o| {
                            o.name == "spark_shaper_wait_seconds_count" && o.labels == s.labels
                        }) =>
                {
                    // Waiting at the end without anyone of its class having gone out yet.
                    report.rows.push(LaneRow {
                        lane: label(s, "lane"),
                        class: label(s, "class"),
                        waited: 0,
                        mean_wait_ms: 0.0,
                        queued_at_end: s.value as u64,
                    });
                }
                "spark_shaper_rejected_total" => {
                    let n = delta(&s.name, &s.labels) as u64;
                    if n > 0 {
                        report
                            .rejected
                            .entry(label(s, "lane"))
                            .or_default()
                            .insert(label(s, "reason"), n);
                    }
                }
                "spark_shaper_available" => {
                    report
                        .available_at_end
                        .entry(label(s, "lane"))
                        .or_default()
                        .insert(label(s, "kind"), s.value.max(0.0) as u64);
                }
                _ => {}
            }
        }
        report
    }

    /// The section of the plain-text table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("shaping     lane / class: waited, mean wait, queued at end\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "            {} / {}: {}, {:.1} ms, {}",
                r.lane, r.class, r.waited, r.mean_wait_ms, r.queued_at_end
            );
        }
        for (lane, reasons) in &self.rejected {
            let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(out, "            {lane} refused: {}", reasons.join(", "));
        }
        for (lane, kinds) in &self.available_at_end {
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let _ = writeln!(
                out,
                "            {lane} available at end: {}",
                kinds.join(", ")
            );
        }
        out
    }
}

/// The gateway's `/metrics` text, or `None` when it cannot be read within a few seconds.
pub async fn scrape(client: &reqwest::Client, target: &str) -> Option<String> {
    let url = format!("{}/metrics", target.trim_end_matches('/'));
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP spark_shaper_wait_seconds x
spark_shaper_wait_seconds_sum{class="interactive",lane="anthropic"} 1
spark_shaper_wait_seconds_count{class="interactive",lane="anthropic"} 2
spark_shaper_rejected_total{lane="anthropic",reason="timeout"} 1
"#;
    const AFTER: &str = r#"spark_shaper_queue_depth{class="interactive",lane="anthropic"} 3
spark_shaper_queue_depth{class="batch",lane="anthropic"} 2
spark_shaper_wait_seconds_sum{class="interactive",lane="anthropic"} 5
spark_shaper_wait_seconds_count{class="interactive",lane="anthropic"} 10
spark_shaper_rejected_total{lane="anthropic",reason="timeout"} 5
spark_shaper_rejected_total{lane="anthropic",reason="queue_full"} 0
spark_shaper_available{kind="requests",lane="anthropic"} 0
http_requests_total{method="GET",route="/livez",status="200"} 7
"#;

    #[test]
    fn a_run_is_the_difference_between_two_scrapes() {
        let r = ShapingReport::between(BEFORE, AFTER);
        assert_eq!(
            r.rows,
            vec![
                LaneRow {
                    lane: "anthropic".into(),
                    class: "batch".into(),
                    waited: 0,
                    mean_wait_ms: 0.0,
                    queued_at_end: 2,
                },
                LaneRow {
                    lane: "anthropic".into(),
                    class: "interactive".into(),
                    waited: 8,
                    mean_wait_ms: 500.0,
                    queued_at_end: 3,
                },
            ]
        );
        assert_eq!(
            r.rejected["anthropic"],
            BTreeMap::from([("timeout".into(), 4)])
        );
        assert_eq!(r.available_at_end["anthropic"]["requests"], 0);
        let table = r.table();
        assert!(
            table.contains("anthropic / interactive: 8, 500.0 ms, 3"),
            "{table}"
        );
        assert!(table.contains("anthropic refused: timeout 4"), "{table}");
        assert!(ShapingReport::between("", "").is_empty());
    }
}
