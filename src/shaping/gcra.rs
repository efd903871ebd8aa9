//! A generic cell-rate algorithm (GCRA) over a per-minute rate, with a one-second burst: calls
//! are spread over the minute as providers enforce it (a per-minute limit may be checked per
//! second), never a whole minute's budget at once.
//!
//! A cost larger than the burst (a request whose tokens exceed one second's worth) goes when the
//! bucket is full and leaves it in debt, so the rate holds on average and a large request is
//! never refused for ever. Costs are corrected afterwards (real token usage): a refund shortens
//! the debt, never banks credit beyond a full bucket.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Gcra {
    /// Time one unit (a request, a token) is worth.
    interval: Duration,
    /// Units that may go at once: one second's worth, at least one.
    burst: u64,
    /// Theoretical arrival time: when the bucket is full again.
    tat: Instant,
}

impl Gcra {
    /// `rate` units per minute (at least 1).
    pub fn per_minute(rate: u32, now: Instant) -> Self {
        let rate = rate.max(1);
        Gcra {
            interval: Duration::from_secs(60) / rate,
            burst: u64::from(rate.div_ceil(60)),
            tat: now,
        }
    }

    fn span(&self, units: u64) -> Duration {
        self.interval
            .saturating_mul(u32::try_from(units).unwrap_or(u32::MAX))
    }

    /// The earliest time `cost` units may go.
    pub fn ready_at(&self, cost: u64, now: Instant) -> Instant {
        let headroom = self.span(self.burst - cost.min(self.burst));
        self.tat.checked_sub(headroom).unwrap_or(now)
    }

    /// Charges `cost` units taken at `now` (after `ready_at` said yes).
    pub fn take(&mut self, cost: u64, now: Instant) {
        self.tat = self.tat.max(now) + self.span(cost);
    }

    /// Corrects an earlier charge by `delta` units (positive: it cost more than charged).
    pub fn adjust(&mut self, delta: i64, now: Instant) {
        let span = self.span(delta.unsigned_abs());
        if delta >= 0 {
            self.tat = self.tat.max(now) + span;
        } else if self.tat > now {
            self.tat = self.tat.checked_sub(span).map_or(now, |t| t.max(now));
        }
    }

    /// Pushes the bucket's refill out so that at most `remaining` units go before `reset` from
    /// now: what a provider's own rate-limit headers say is left.
    pub fn tighten(&mut self, remaining: u64, reset: Duration, now: Instant) {
        if let Some(ahead) = self.push_out_for(remaining, reset) {
            self.tat = self.tat.max(now + ahead);
        }
    }

    /// How far from now the theoretical arrival time must be for at most `remaining` units to
    /// go within `reset`; `None` when that allows more than the rate does anyway. Units go
    /// while `tat - (burst - 1) × interval <= t`.
    pub fn push_out_for(&self, remaining: u64, reset: Duration) -> Option<Duration> {
        (reset + self.span(self.burst.saturating_sub(1))).checked_sub(self.span(remaining))
    }

    /// The time one unit is worth and the units of one burst (for the shared twin in Redis).
    pub fn shape(&self) -> (Duration, u64) {
        (self.interval, self.burst)
    }

    /// Whole units that could go now (for health and the remaining-budget gauge).
    pub fn available(&self, now: Instant) -> u64 {
        let owed = self.tat.saturating_duration_since(now);
        let owed_units = owed.as_nanos().div_ceil(self.interval.as_nanos().max(1));
        self.burst
            .saturating_sub(u64::try_from(owed_units).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sixty_a_minute_is_one_a_second_never_sixty_at_once() {
        let mut g = Gcra::per_minute(60, Instant::now());
        let start = Instant::now();
        let mut taken = Vec::new();
        // Offered as fast as it allows for two minutes.
        while Instant::now() < start + Duration::from_secs(120) {
            let now = Instant::now();
            let at = g.ready_at(1, now);
            if at <= now {
                g.take(1, now);
                taken.push(now - start);
            } else {
                tokio::time::advance(at - now).await;
            }
        }
        assert_eq!(taken.len(), 120);
        for w in taken.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_secs(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cost_above_the_burst_goes_on_a_full_bucket_and_leaves_a_debt() {
        let now = Instant::now();
        // 6,000 tokens a minute: 100 a second.
        let mut g = Gcra::per_minute(6_000, now);
        assert_eq!(g.available(now), 100);
        assert!(g.ready_at(1_000, now) <= now);
        g.take(1_000, now);
        // Ten seconds of debt, less a burst's worth of headroom for a small request.
        assert_eq!(g.ready_at(1, now), now + Duration::from_millis(9_010));
        // The request used 400 tokens: 6 s refunded.
        g.adjust(-600, now);
        assert_eq!(g.ready_at(100, now), now + Duration::from_secs(4));
        // A refund never banks credit.
        g.adjust(-100_000, now);
        assert_eq!(g.available(now), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_providers_headers_shrink_the_budget() {
        let now = Instant::now();
        let mut g = Gcra::per_minute(600, now);
        // The provider says 2 requests are left for the next 30 s.
        g.tighten(2, Duration::from_secs(30), now);
        let mut n = 0;
        let mut t = now;
        while t < now + Duration::from_secs(30) {
            if g.ready_at(1, t) <= t {
                g.take(1, t);
                n += 1;
            }
            t += Duration::from_millis(10);
        }
        assert_eq!(n, 2);
    }
}
