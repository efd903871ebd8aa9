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
mod tests;
