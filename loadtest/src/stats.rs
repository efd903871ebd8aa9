//! What a run measured: HDR latency histograms, a per-second timeline, status counts, and the
//! summary that the table, the JSON output, the thresholds and the HTML report all read.
//!
//! One `Recorder` sits behind a mutex shared by every request task. A record is a few nanoseconds
//! of counter work, so the lock is never the bottleneck at the rates one machine can generate,
//! and it keeps the numbers exact (no sampling, no per-thread merge at the end).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are kept in microseconds from 1 µs to 10 minutes; slower answers saturate at the top.
const MAX_MICROS: u64 = 600_000_000;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response arrived and its body was read whole.
    Status(u16),
    /// No answer within the request timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// Anything else on the wire: a reset, a malformed response, a body cut short.
    Transport,
}

impl Outcome {
    /// A 2xx is a success; every other outcome counts as an error.
    pub fn is_error(self) -> bool {
        !matches!(self, Outcome::Status(s) if (200..300).contains(&s))
    }

    /// The key in the status breakdown: the code, or the kind of failure.
    pub fn label(self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Timeout => "timeout".to_owned(),
            Outcome::Connect => "connect_error".to_owned(),
            Outcome::Transport => "transport_error".to_owned(),
        }
    }
}

/// One second of the run, by intended start time.
#[derive(Debug, Clone)]
struct Bucket {
    latency: Histogram<u32>,
    requests: u64,
    errors: u64,
}

/// A point of the latency-over-time chart.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelinePoint {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency: Histogram<u64>,
    /// How late the open model's scheduler dispatched requests: the generator's own health.
    lag: Histogram<u64>,
    timeline: Vec<Bucket>,
    statuses: BTreeMap<String, u64>,
    requests: u64,
    errors: u64,
    bytes: u64,
    /// When the last measured request finished, from the start of measurement.
    last_done: Duration,
}

fn histogram<T: hdrhistogram::Counter>(
    sigfig: u8,
) -> Result<Histogram<T>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Recorder {
    /// Fails only if hdrhistogram rejects the constant bounds, which a test rules out.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Recorder {
            latency: histogram(3)?,
            lag: histogram(3)?,
            timeline: Vec::new(),
            statuses: BTreeMap::new(),
            requests: 0,
            errors: 0,
            bytes: 0,
            last_done: Duration::ZERO,
        })
    }

    /// Records one measured request. `started` is its intended start (open model) or its actual
    /// start (closed model), from the start of measurement; `latency` runs from that moment to
    /// the last byte of the body, failures included: a timeout is what the user waited.
    pub fn record(&mut self, started: Duration, latency: Duration, outcome: Outcome, bytes: u64) {
        let us = micros(latency);
        self.latency.saturating_record(us);
        self.requests += 1;
        self.bytes += bytes;
        let error = outcome.is_error();
        if error {
            self.errors += 1;
        }
        *self.statuses.entry(outcome.label()).or_insert(0) += 1;
        self.last_done = self.last_done.max(started + latency);

        let second = usize::try_from(started.as_secs()).unwrap_or(usize::MAX);
        // A run is bounded by its duration; a second past an hour of buckets is folded into the
        // last one rather than grow without bound on a bad clock.
        let second = second.min(3600);
        while self.timeline.len() <= second {
            let Ok(latency) = histogram(2) else { break };
            self.timeline.push(Bucket {
                latency,
                requests: 0,
                errors: 0,
            });
        }
        if let Some(bucket) = self.timeline.get_mut(second) {
            bucket.latency.saturating_record(us);
            bucket.requests += 1;
            bucket.errors += u64::from(error);
        }
    }

    /// Records how late the scheduler sent a request after its intended start.
    pub fn record_lag(&mut self, lag: Duration) {
        self.lag.saturating_record(micros(lag));
    }

    pub fn requests(&self) -> u64 {
        self.requests
    }

    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The p99 of the last complete second, for the progress line.
    pub fn recent_p99(&self) -> Option<Duration> {
        let n = self.timeline.len();
        let bucket = self.timeline.get(n.checked_sub(2)?)?;
        Some(Duration::from_micros(
            bucket.latency.value_at_quantile(0.99),
        ))
    }

    /// The latency histogram for the report: `(upper bound, count)` over `bins` log-spaced
    /// buckets between the smallest and largest value seen.
    pub fn distribution(&self, bins: usize) -> Vec<(Duration, u64)> {
        if self.latency.is_empty() || bins == 0 {
            return Vec::new();
        }
        let lo = self.latency.min().max(1) as f64;
        let hi = (self.latency.max() as f64).max(lo * 2.0);
        let step = (hi / lo).ln() / bins as f64;
        let mut out: Vec<(Duration, u64)> = (1..=bins)
            .map(|i| {
                let upper = lo * (step * i as f64).exp();
                (Duration::from_micros(upper.round() as u64), 0)
            })
            .collect();
        for v in self.latency.iter_recorded() {
            let value = (v.value_iterated_to() as f64).max(lo);
            let index = ((value / lo).ln() / step).ceil() as usize;
            let index = index.clamp(1, bins) - 1;
            if let Some(bin) = out.get_mut(index) {
                bin.1 += v.count_at_value();
            }
        }
        out
    }

    /// The latency-over-time series.
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.timeline
            .iter()
            .enumerate()
            .map(|(i, b)| TimelinePoint {
                second: i as u64,
                requests: b.requests,
                errors: b.errors,
                p50_ms: ms(b.latency.value_at_quantile(0.50)),
                p99_ms: ms(b.latency.value_at_quantile(0.99)),
                max_ms: ms(b.latency.max()),
            })
            .collect()
    }

    /// The summary over the measured window: from the start of measurement to the last
    /// completion (zero throughput when nothing completed).
    pub fn summary(&self) -> Summary {
        let q = |quantile: f64| ms(self.latency.value_at_quantile(quantile));
        let elapsed = self.last_done.as_secs_f64();
        Summary {
            requests: self.requests,
            errors: self.errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            throughput_rps: if elapsed > 0.0 {
                self.requests as f64 / elapsed
            } else {
                0.0
            },
            latency_ms: Latencies {
                p50: q(0.50),
                p90: q(0.90),
                p95: q(0.95),
                p99: q(0.99),
                p999: q(0.999),
                max: ms(self.latency.max()),
                min: ms(self.latency.min()),
                mean: self.latency.mean() / 1000.0,
            },
            status_counts: self.statuses.clone(),
            elapsed_seconds: elapsed,
            bytes_received: self.bytes,
            scheduler_lag_ms: (!self.lag.is_empty()).then(|| Lag {
                p99: ms(self.lag.value_at_quantile(0.99)),
                max: ms(self.lag.max()),
            }),
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latencies {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub min: f64,
    pub mean: f64,
}

/// The open model's dispatch delay, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Lag {
    pub p99: f64,
    pub max: f64,
}

/// The `--json` document (the other fields of the run are added beside it by the caller).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub throughput_rps: f64,
    pub latency_ms: Latencies,
    pub status_counts: BTreeMap<String, u64>,
    pub elapsed_seconds: f64,
    pub bytes_received: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler_lag_ms: Option<Lag>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_d(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quantiles_error_rate_and_throughput_come_from_what_was_recorded() {
        let mut r = Recorder::new().unwrap();
        // 100 requests over one second: latencies 1..=100 ms, the last five failing.
        for i in 1..=100u64 {
            let outcome = if i > 95 {
                Outcome::Status(503)
            } else {
                Outcome::Status(200)
            };
            r.record(ms_d(i * 9), ms_d(i), outcome, 10);
        }
        let s = r.summary();
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 5);
        assert!((s.error_rate - 0.05).abs() < 1e-9);
        assert!(
            (s.latency_ms.p50 - 50.0).abs() < 0.1,
            "{}",
            s.latency_ms.p50
        );
        assert!(
            (s.latency_ms.p99 - 99.0).abs() < 0.1,
            "{}",
            s.latency_ms.p99
        );
        assert!((s.latency_ms.max - 100.0).abs() < 0.1);
        // The last request starts at 900 ms and takes 100 ms: one second of work.
        assert!(
            (s.throughput_rps - 100.0).abs() < 0.01,
            "{}",
            s.throughput_rps
        );
        assert_eq!(s.status_counts.get("200"), Some(&95));
        assert_eq!(s.status_counts.get("503"), Some(&5));
        assert_eq!(s.bytes_received, 1000);
    }

    #[test]
    fn failures_without_a_status_are_errors_with_their_own_label() {
        let mut r = Recorder::new().unwrap();
        r.record(ms_d(0), ms_d(5), Outcome::Timeout, 0);
        r.record(ms_d(0), ms_d(5), Outcome::Connect, 0);
        r.record(ms_d(0), ms_d(5), Outcome::Status(204), 0);
        let s = r.summary();
        assert_eq!(s.errors, 2);
        assert_eq!(s.status_counts.get("timeout"), Some(&1));
        assert_eq!(s.status_counts.get("connect_error"), Some(&1));
        assert!(!Outcome::Status(299).is_error());
        assert!(Outcome::Status(404).is_error());
    }

    #[test]
    fn the_timeline_has_one_point_per_second_of_intended_start() {
        let mut r = Recorder::new().unwrap();
        r.record(ms_d(100), ms_d(2), Outcome::Status(200), 0);
        r.record(ms_d(2500), ms_d(40), Outcome::Status(500), 0);
        let t = r.timeline();
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].requests, t[1].requests, t[2].requests), (1, 0, 1));
        assert_eq!(t[2].errors, 1);
        assert!((t[2].max_ms - 40.0).abs() < 0.5);
    }

    #[test]
    fn the_distribution_accounts_for_every_request_once() {
        let mut r = Recorder::new().unwrap();
        for i in 1..=1000u64 {
            r.record(
                ms_d(0),
                Duration::from_micros(i * 37),
                Outcome::Status(200),
                0,
            );
        }
        let d = r.distribution(30);
        assert_eq!(d.len(), 30);
        assert_eq!(d.iter().map(|(_, c)| c).sum::<u64>(), 1000);
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn an_empty_run_summarises_to_zeros_not_nan() {
        let s = Recorder::new().unwrap().summary();
        assert_eq!(s.requests, 0);
        assert_eq!(s.error_rate, 0.0);
        assert_eq!(s.throughput_rps, 0.0);
        assert!(Recorder::new().unwrap().distribution(10).is_empty());
    }
}
