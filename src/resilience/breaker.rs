//! A circuit breaker per provider: closed, open, half-open.
//!
//! Our own small state machine rather than `failsafe`: failsafe moves Open→HalfOpen only inside
//! a call (so a gauge reads "open" long after the cool-down), lets every caller through in
//! half-open with the first success closing the circuit, can trip on failure rate only after a
//! whole window has passed since creation, panics on back-off starts under a second, and reads
//! `std::time::Instant`, which tokio's paused clock cannot move. Each of DESIGN.md's rules is a
//! few lines here, tested with virtual time.
//!
//! Rules: closed trips after `consecutive_failures` failures in a row, or when at least
//! `min_calls` calls in the last `window` failed at `failure_rate` or more. Open lasts a cool-down
//! that doubles on each trip without a success in between, capped at `open_max`. After it, up
//! to `half_open_probes` calls may run at once as probes; a probe's success closes the circuit,
//! a failure reopens it with the next, longer cool-down. Callers hold a [`Permit`] and report the
//! outcome on it; a permit dropped without a report (the client went away) records nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub min_calls: u32,
    pub window: Duration,
    pub open_base: Duration,
    pub open_max: Duration,
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(30),
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(60),
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// The `spark_circuit_breaker_state` gauge value.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

/// What the health endpoint shows.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSnapshot {
    pub state: CircuitState,
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    /// Time left until probes are allowed, while open.
    pub open_for: Option<Duration>,
}

/// Called on every state change, for metrics and logs.
pub type TransitionHook = Arc<dyn Fn(CircuitState) + Send + Sync>;

struct Inner {
    state: CircuitState,
    consecutive: u32,
    /// Outcomes in the sliding window: (when, failed).
    calls: VecDeque<(Instant, bool)>,
    /// Trips since the circuit last closed after a success; sets the cool-down.
    trips: u32,
    open_until: Instant,
    probes_in_flight: u32,
    /// Counts half-open periods (and resets). A probe permit carries the episode it was issued
    /// in; an answer from an earlier one is stale and decides nothing.
    episode: u64,
}

pub struct Breaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
    on_transition: Option<TransitionHook>,
}

/// Refusal: the circuit is open (or every probe slot is taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after: Duration,
}

/// The right to make one call. Report how it went with [`Permit::success`] or
/// [`Permit::failure`]; [`Permit::neutral`] releases it without counting (a caller error).
pub struct Permit {
    breaker: Arc<Breaker>,
    /// The half-open episode this probe was issued in; `None` for an ordinary call.
    probe: Option<u64>,
    done: bool,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig, on_transition: Option<TransitionHook>) -> Self {
        Breaker {
            cfg,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                consecutive: 0,
                calls: VecDeque::new(),
                trips: 0,
                open_until: Instant::now(),
                probes_in_flight: 0,
                episode: 0,
            }),
            on_transition,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update; the counters are still
        // usable, and a breaker must keep answering.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, inner: &mut Inner, to: CircuitState) {
        if inner.state != to {
            inner.state = to;
            if let Some(hook) = &self.on_transition {
                hook(to);
            }
        }
    }

    /// Moves Open to HalfOpen once the cool-down has passed, so readers see the truth without
    /// waiting for a call.
    fn refresh(&self, inner: &mut Inner, now: Instant) {
        if inner.state == CircuitState::Open && now >= inner.open_until {
            self.set_state(inner, CircuitState::HalfOpen);
            inner.probes_in_flight = 0;
            inner.episode = inner.episode.wrapping_add(1);
        }
    }

    /// A permit owns its breaker, so it can travel with a response stream past this call.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let now = Instant::now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        match inner.state {
            CircuitState::Closed => Ok(Permit {
                breaker: Arc::clone(self),
                probe: None,
                done: false,
            }),
            CircuitState::Open => Err(Rejected {
                retry_after: inner.open_until.saturating_duration_since(now),
            }),
            CircuitState::HalfOpen => {
                if inner.probes_in_flight < self.cfg.half_open_probes {
                    inner.probes_in_flight += 1;
                    Ok(Permit {
                        breaker: Arc::clone(self),
                        probe: Some(inner.episode),
                        done: false,
                    })
                } else {
                    // The probes are out; their answer is at most one call away.
                    Err(Rejected {
                        retry_after: Duration::from_secs(1),
                    })
                }
            }
        }
    }

    /// Time until this breaker lets a call through, zero when it does now.
    pub fn available_in(&self) -> Duration {
        let now = Instant::now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        match inner.state {
            CircuitState::Open => inner.open_until.saturating_duration_since(now),
            CircuitState::Closed | CircuitState::HalfOpen => Duration::ZERO,
        }
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        self.prune(&mut inner, now);
        let total = inner.calls.len();
        let failed = inner.calls.iter().filter(|(_, f)| *f).count();
        BreakerSnapshot {
            state: inner.state,
            consecutive_failures: inner.consecutive,
            failure_rate: if total == 0 {
                0.0
            } else {
                failed as f64 / total as f64
            },
            open_for: (inner.state == CircuitState::Open)
                .then(|| inner.open_until.saturating_duration_since(now)),
        }
    }

    /// Closes the circuit and forgets its history (the admin reset).
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.consecutive = 0;
        inner.calls.clear();
        inner.trips = 0;
        inner.probes_in_flight = 0;
        inner.episode = inner.episode.wrapping_add(1);
        self.set_state(&mut inner, CircuitState::Closed);
    }

    fn prune(&self, inner: &mut Inner, now: Instant) {
        while inner
            .calls
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.cfg.window)
        {
            inner.calls.pop_front();
        }
    }

    fn cool_down(&self, trips: u32) -> Duration {
        let factor = 2u32.saturating_pow(trips.min(16));
        self.cfg
            .open_base
            .checked_mul(factor)
            .unwrap_or(self.cfg.open_max)
            .min(self.cfg.open_max)
    }

    fn trip(&self, inner: &mut Inner, now: Instant) {
        inner.open_until = now + self.cool_down(inner.trips);
        inner.trips = inner.trips.saturating_add(1);
        inner.probes_in_flight = 0;
        self.set_state(inner, CircuitState::Open);
    }

    /// Whether a permit is a probe of the half-open period in force now.
    fn current_probe(inner: &Inner, probe: Option<u64>) -> bool {
        inner.state == CircuitState::HalfOpen && probe == Some(inner.episode)
    }

    fn record(&self, probe: Option<u64>, failed: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        // A stale probe (from an earlier half-open period, or admitted before a reset) is
        // ignored: it neither frees a slot of this period nor decides or counts in it.
        if probe.is_some() && !Self::current_probe(&inner, probe) {
            return;
        }
        let probe = probe.is_some();
        if probe {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
        // A late answer from a call admitted before the circuit changed still counts in the
        // window, but only a probe's answer decides a half-open circuit.
        self.prune(&mut inner, now);
        inner.calls.push_back((now, failed));
        match (inner.state, failed) {
            (CircuitState::HalfOpen, false) if probe => {
                inner.consecutive = 0;
                inner.trips = 0;
                inner.calls.clear();
                self.set_state(&mut inner, CircuitState::Closed);
            }
            (CircuitState::HalfOpen, true) if probe => {
                inner.consecutive = inner.consecutive.saturating_add(1);
                self.trip(&mut inner, now);
            }
            (CircuitState::Closed, false) => inner.consecutive = 0,
            (CircuitState::Closed, true) => {
                inner.consecutive = inner.consecutive.saturating_add(1);
                let total = inner.calls.len();
                let failures = inner.calls.iter().filter(|(_, f)| *f).count();
                let by_count = inner.consecutive >= self.cfg.consecutive_failures;
                let by_rate = total >= self.cfg.min_calls as usize
                    && failures as f64 >= self.cfg.failure_rate * total as f64;
                if by_count || by_rate {
                    self.trip(&mut inner, now);
                }
            }
            _ => {}
        }
    }

    fn release(&self, probe: Option<u64>) {
        if probe.is_some() {
            let mut inner = self.lock();
            if Self::current_probe(&inner, probe) {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
            }
        }
    }
}

impl Permit {
    /// Whether this call probes a half-open circuit.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(self.probe, false);
    }

    pub fn failure(mut self) {
        self.done = true;
        self.breaker.record(self.probe, true);
    }

    /// The call ended in a way that says nothing about the provider's health.
    pub fn neutral(mut self) {
        self.done = true;
        self.breaker.release(self.probe);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release(self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }

    fn fail(b: &Arc<Breaker>, n: usize) {
        for _ in 0..n {
            b.try_acquire().unwrap().failure();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_after_consecutive_failures_and_refuses_with_the_time_left() {
        let b = Arc::new(Breaker::new(cfg(), None));
        fail(&b, 2);
        assert_eq!(b.snapshot().state, CircuitState::Closed);
        fail(&b, 1);
        assert_eq!(b.snapshot().state, CircuitState::Open);
        tokio::time::advance(Duration::from_secs(2)).await;
        let r = b.try_acquire().err().unwrap();
        assert_eq!(r.retry_after, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_failure_rate_once_the_minimum_calls_are_in_the_window() {
        let b = Arc::new(Breaker::new(cfg(), None));
        // fail, ok, fail, ok: never 3 in a row, but 2 of 4 = 50%.
        for failed in [true, false, true] {
            let p = b.try_acquire().unwrap();
            if failed { p.failure() } else { p.success() }
        }
        assert_eq!(b.snapshot().state, CircuitState::Closed);
        b.try_acquire().unwrap().success();
        assert_eq!(
            b.snapshot().state,
            CircuitState::Closed,
            "2 of 4 with the last a success"
        );
        b.try_acquire().unwrap().failure();
        assert_eq!(b.snapshot().state, CircuitState::Open, "3 of 5 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn old_calls_leave_the_window() {
        let b = Arc::new(Breaker::new(cfg(), None));
        for _ in 0..3 {
            b.try_acquire().unwrap().success();
        }
        b.try_acquire().unwrap().failure();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.snapshot().failure_rate, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_the_configured_probes_and_success_closes() {
        let b = Arc::new(Breaker::new(
            BreakerConfig {
                half_open_probes: 2,
                ..cfg()
            },
            None,
        ));
        fail(&b, 3);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            b.snapshot().state,
            CircuitState::HalfOpen,
            "visible without a call"
        );
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(
            b.try_acquire().is_err(),
            "a third caller is refused while two probes run"
        );
        p1.success();
        assert_eq!(b.snapshot().state, CircuitState::Closed);
        p2.success();
        assert!(b.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_with_a_longer_cool_down_up_to_the_cap() {
        let b = Arc::new(Breaker::new(cfg(), None));
        fail(&b, 3);
        let mut expected = [5, 10, 20, 30, 30].into_iter();
        let first = expected.next().unwrap();
        assert_eq!(b.snapshot().open_for, Some(Duration::from_secs(first)));
        for secs in expected {
            tokio::time::advance(b.available_in()).await;
            b.try_acquire().unwrap().failure();
            assert_eq!(b.snapshot().open_for, Some(Duration::from_secs(secs)));
        }
        // A success resets the growth.
        tokio::time::advance(b.available_in()).await;
        b.try_acquire().unwrap().success();
        fail(&b, 3);
        assert_eq!(b.snapshot().open_for, Some(Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_and_neutral_permits_free_the_probe_slot_without_deciding() {
        let b = Arc::new(Breaker::new(cfg(), None));
        fail(&b, 3);
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(b.try_acquire().unwrap());
        b.try_acquire().unwrap().neutral();
        assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
        assert!(b.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_are_reported_once_each_and_reset_closes() {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&seen);
        let b = Arc::new(Breaker::new(
            cfg(),
            Some(Arc::new(move |_| {
                s.fetch_add(1, Ordering::SeqCst);
            })),
        ));
        fail(&b, 3);
        assert!(b.try_acquire().is_err());
        assert_eq!(
            b.snapshot().state,
            CircuitState::Open,
            "reading again is not a new transition"
        );
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        b.reset();
        assert_eq!(b.snapshot().state, CircuitState::Closed);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_from_an_earlier_half_open_period_cannot_decide_a_later_one() {
        let b = Arc::new(Breaker::new(
            BreakerConfig {
                consecutive_failures: 1,
                half_open_probes: 2,
                open_base: Duration::from_secs(5),
                ..BreakerConfig::default()
            },
            None,
        ));
        b.try_acquire().unwrap().failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        let stale = b.try_acquire().unwrap();
        let failing = b.try_acquire().unwrap();
        assert!(stale.is_probe() && failing.is_probe());
        failing.failure();
        assert_eq!(b.snapshot().state, CircuitState::Open);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
        let current = b.try_acquire().unwrap();
        // The probe of the first period answers late: it must not close the second one.
        stale.success();
        assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
        // Nor free a slot of it: one probe of this period is out, one slot is left.
        let second = b.try_acquire().unwrap();
        assert!(
            b.try_acquire().is_err(),
            "both slots of this period are taken"
        );
        drop(second);
        current.success();
        assert_eq!(b.snapshot().state, CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_makes_outstanding_probes_stale() {
        let b = Arc::new(Breaker::new(
            BreakerConfig {
                consecutive_failures: 1,
                ..BreakerConfig::default()
            },
            None,
        ));
        b.try_acquire().unwrap().failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        let probe = b.try_acquire().unwrap();
        b.reset();
        probe.failure();
        assert_eq!(
            b.snapshot().state,
            CircuitState::Closed,
            "a stale probe cannot trip"
        );
    }
}
