//! The live figures of the operator console's overview: requests per second, error rate, p50 and
//! p99 latency and cache hit rate over the last minute, computed from the Prometheus counters the
//! gateway keeps anyway, so the console needs no Prometheus server.
//!
//! Counters only grow, so a rate over a window is the difference of two readings. The readings
//! are taken when the summary is asked for (the console polls every few seconds) and kept for a
//! minute; nothing runs in the background and the request path is not touched. Until a minute of
//! readings exists the window is what there is (since start-up at first), and the answer says
//! how long it is.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::metrics::Traffic;

/// The window the overview describes.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Readings kept at most: one per second over the window, whatever the polling rate.
const MAX_READINGS: usize = 64;
/// Readings closer together than this are not kept (many open consoles share them).
const MIN_SPACING: Duration = Duration::from_secs(1);

/// The overview's figures. `None` where the window saw no request to compute it from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub window_seconds: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cache_hit_rate: Option<f64>,
}

/// Readings of the counters over the last minute.
pub struct Summary {
    readings: Mutex<VecDeque<(Instant, Traffic)>>,
}

impl Summary {
    /// Starts with an empty reading at `now`: the process's counters start at zero.
    pub fn new(now: Instant) -> Summary {
        Summary {
            readings: Mutex::new(VecDeque::from([(now, Traffic::default())])),
        }
    }

    /// Records `current` (read at `now`) and describes the window ending there.
    pub fn overview(&self, now: Instant, current: Traffic) -> Overview {
        let mut readings = match self.readings.lock() {
            Ok(r) => r,
            // A reading is plain data: a panic elsewhere cannot leave it half-written.
            Err(poisoned) => poisoned.into_inner(),
        };
        // The baseline is the oldest reading still inside the window, or the newest one before
        // it when none is (a console that was not polled for a while).
        while readings.len() > 1
            && readings
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
        {
            readings.pop_front();
        }
        let (since, base) = readings
            .front()
            .cloned()
            .unwrap_or((now, Traffic::default()));
        let overview = describe(now.duration_since(since), &base, &current);
        // Kept at most one a second: many open consoles polling share the readings.
        if readings
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= MIN_SPACING)
        {
            readings.push_back((now, current));
        }
        while readings.len() > MAX_READINGS {
            readings.pop_front();
        }
        overview
    }
}

/// The figures between two readings `took` apart.
fn describe(took: Duration, base: &Traffic, now: &Traffic) -> Overview {
    let requests = now.requests.saturating_sub(base.requests);
    let secs = took.as_secs_f64();
    let errors = now.server_errors.saturating_sub(base.server_errors);
    let hits = now.cache_hits.saturating_sub(base.cache_hits);
    let misses = now.cache_misses.saturating_sub(base.cache_misses);
    let buckets: Vec<(f64, u64)> = now
        .buckets
        .iter()
        .enumerate()
        .map(|(i, (bound, n))| {
            let before = base.buckets.get(i).map_or(0, |b| b.1);
            (*bound, n.saturating_sub(before))
        })
        .collect();
    let ratio = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    Overview {
        window_seconds: (secs * 10.0).round() / 10.0,
        requests,
        requests_per_second: if secs > 0.0 {
            ((requests as f64 / secs) * 100.0).round() / 100.0
        } else {
            0.0
        },
        error_rate: ratio(errors, requests),
        p50_ms: quantile(&buckets, 0.5).map(|s| s * 1000.0),
        p99_ms: quantile(&buckets, 0.99).map(|s| s * 1000.0),
        cache_hit_rate: ratio(hits, hits + misses),
    }
}

/// The `q` quantile of cumulative bucket counts, interpolated linearly inside its bucket as
/// Prometheus's `histogram_quantile` does (the +Inf bucket answers its lower bound).
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let inside = (count - lower.1) as f64;
            let at = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * at);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(requests: u64, errors: u64, fast: u64, slow: u64, hits: u64) -> Traffic {
        // `fast` requests at or under 1 ms, `slow` between 10 and 25 ms.
        Traffic {
            requests,
            server_errors: errors,
            buckets: vec![
                (0.001, fast),
                (0.01, fast),
                (0.025, fast + slow),
                (f64::INFINITY, fast + slow),
            ],
            cache_hits: hits,
            cache_misses: requests - hits,
        }
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let b = [(0.001, 50), (0.01, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        let p75 = quantile(&b, 0.75).unwrap();
        assert!((p75 - 0.0055).abs() < 1e-9, "{p75}");
        assert_eq!(quantile(&[(0.001, 0), (f64::INFINITY, 0)], 0.5), None);
        // Everything above the last finite bound: its lower bound, as Prometheus answers.
        assert_eq!(
            quantile(&[(0.001, 0), (f64::INFINITY, 4)], 0.99),
            Some(0.001)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_is_the_last_minute_of_readings() {
        let start = Instant::now();
        let s = Summary::new(start);
        // 30 s in: 300 requests, 3 errors, all fast, 150 cache hits.
        tokio::time::advance(Duration::from_secs(30)).await;
        let o = s.overview(Instant::now(), traffic(300, 3, 300, 0, 150));
        assert_eq!(o.window_seconds, 30.0);
        assert_eq!(o.requests_per_second, 10.0);
        assert_eq!(o.error_rate, Some(0.01));
        assert_eq!(o.cache_hit_rate, Some(0.5));
        assert!(o.p99_ms.unwrap() <= 1.0);

        // 90 s in: the window starts at the 30 s reading, so the first 300 requests are gone;
        // the next 600 were slow.
        tokio::time::advance(Duration::from_secs(60)).await;
        let o = s.overview(Instant::now(), traffic(900, 3, 300, 600, 150));
        assert_eq!(o.window_seconds, 60.0);
        assert_eq!(o.requests, 600);
        assert_eq!(o.requests_per_second, 10.0);
        assert_eq!(o.error_rate, Some(0.0));
        assert_eq!(o.cache_hit_rate, Some(0.0));
        let p50 = o.p50_ms.unwrap();
        assert!((10.0..=25.0).contains(&p50), "{p50}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_window_has_no_rates_and_readings_stay_bounded() {
        let s = Summary::new(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        let o = s.overview(Instant::now(), Traffic::default());
        assert_eq!((o.requests, o.error_rate, o.p50_ms), (0, None, None));
        for i in 0..1_000u64 {
            tokio::time::advance(Duration::from_millis(700)).await;
            s.overview(Instant::now(), traffic(i, 0, i, 0, 0));
        }
        let kept = s.readings.lock().unwrap().len();
        assert!(kept <= MAX_READINGS, "{kept}");
        // Polled faster than once a second, the window still ends a minute back.
        let o = s.overview(Instant::now(), traffic(1_000, 0, 1_000, 0, 0));
        assert!((59.0..=61.0).contains(&o.window_seconds), "{o:?}");
        let before = s.readings.lock().unwrap().len();
        s.overview(Instant::now(), traffic(1_000, 0, 1_000, 0, 0));
        assert_eq!(
            s.readings.lock().unwrap().len(),
            before,
            "a reading within 1 s is not kept"
        );
    }
}
