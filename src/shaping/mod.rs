//! Outbound traffic shaping: each provider's (or model's) capacity, shared by priority and in
//! fair turns, so requests wait a moment here instead of going out to collect a 429.
//!
//! A [`Lane`] holds one rule's capacity (`SPARK_PROVIDER_LIMITS`): requests per minute and tokens
//! per minute as GCRA buckets with a one-second burst, and requests in flight. A call takes a
//! [`Grant`] before it goes out; a call that does not fit waits in the lane's [`queue::Line`]
//! (interactive before batch, callers in turn) up to `SPARK_QUEUE_TIMEOUT` and never past the
//! request's deadline, bounded by `SPARK_QUEUE_MAX`. A token budget is charged with the
//! request's estimate (prompt and `maxTokens`) and corrected by the real usage afterwards.
//!
//! With `REDIS_URL` the per-minute budgets are shared by every replica ([`shared`]); the local
//! buckets stay as the fail-closed fallback when Redis does not answer.
//!
//! The module knows nothing of HTTP; `resilience` asks it before each attempt and falls back to
//! the next provider when a lane is busy.

pub mod gcra;
mod grant;
pub mod limits;
pub mod queue;
pub mod shared;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use limits::{Capacity, Rule};
pub use queue::Class;

use crate::providers::ProviderId;
use crate::providers::ratelimit_headers::UpstreamLimits;
use crate::redis::RedisBackend;
use crate::telemetry::Metrics;
use gcra::Gcra;
pub use grant::Grant;
use grant::Place;
use queue::Line;

/// Who is asking and how urgently. (How many tokens is worked out by the router, and only when
/// a lane governs the call.)
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The caller's bounded label (a user id, `master` or `anonymous`): the unit of fairness.
    pub caller: Arc<str>,
    pub class: Class,
}

/// Why a lane did not admit a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `SPARK_QUEUE_MAX` requests already wait.
    QueueFull { retry_after: Duration },
    /// The wait would outlive the queue timeout or the request's deadline.
    Timeout { retry_after: Duration },
}

impl Busy {
    pub fn retry_after(self) -> Duration {
        match self {
            Busy::QueueFull { retry_after } | Busy::Timeout { retry_after } => retry_after,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Busy::QueueFull { .. } => "queue_full",
            Busy::Timeout { .. } => "timeout",
        }
    }
}

/// What one try at taking capacity came to.
enum Try {
    Granted(Grant),
    /// Not now: try again at this time, or when the lane changes (`None`).
    Wait(Option<Instant>),
}

#[derive(Debug)]
struct LaneState {
    rpm: Option<Gcra>,
    tpm: Option<Gcra>,
    in_flight: u32,
    line: Line,
}

/// One rule's capacity and waiting line.
pub struct Lane {
    provider: ProviderId,
    /// The model the rule names; `None` governs the provider's other models.
    model: Option<String>,
    /// `provider` or `provider:model`: a bounded label (rules are configuration).
    label: String,
    capacity: Capacity,
    max_queue: usize,
    state: Mutex<LaneState>,
    /// Woken whenever capacity may have freed or the head of the line changed.
    changed: Notify,
    metrics: Arc<Metrics>,
    /// The per-minute budgets shared by every replica, with Redis.
    shared: Option<shared::SharedBudgets>,
}

/// A snapshot for health.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneSnapshot {
    pub lane: String,
    pub in_flight: u32,
    pub queued_interactive: usize,
    pub queued_batch: usize,
    pub requests_available: Option<u64>,
    pub tokens_available: Option<u64>,
}

impl Lane {
    fn new(
        rule: &Rule,
        max_queue: usize,
        metrics: Arc<Metrics>,
        redis: Option<&Arc<RedisBackend>>,
    ) -> Self {
        let now = Instant::now();
        let label = match &rule.model {
            Some(m) => format!("{}:{m}", rule.provider),
            None => rule.provider.as_str().to_owned(),
        };
        let budget = |rate: Option<u32>| {
            rate.map(|r| {
                let (interval, burst) = Gcra::per_minute(r, now).shape();
                shared::Budget { interval, burst }
            })
        };
        let shared = redis.map(|r| {
            shared::SharedBudgets::new(
                Arc::clone(r),
                &label,
                budget(rule.capacity.rpm),
                budget(rule.capacity.tpm),
            )
        });
        Lane {
            shared,
            provider: rule.provider,
            model: rule.model.clone(),
            label,
            capacity: rule.capacity,
            max_queue,
            state: Mutex::new(LaneState {
                rpm: rule.capacity.rpm.map(|r| Gcra::per_minute(r, now)),
                tpm: rule.capacity.tpm.map(|t| Gcra::per_minute(t, now)),
                in_flight: 0,
                line: Line::default(),
            }),
            changed: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        // The state stays consistent at every await-free step; a panic elsewhere cannot leave
        // it half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When a request of `tokens` could go: `None` while the in-flight limit is reached (it
    /// frees on a release, not at a time).
    fn ready_at(&self, st: &LaneState, tokens: u64, now: Instant) -> Option<Instant> {
        if self
            .capacity
            .inflight
            .is_some_and(|max| st.in_flight >= max)
        {
            return None;
        }
        let tokens = tokens.max(1);
        let rpm = st.rpm.as_ref().map_or(now, |g| g.ready_at(1, now));
        let tpm = st.tpm.as_ref().map_or(now, |g| g.ready_at(tokens, now));
        Some(rpm.max(tpm).max(now))
    }

    /// One try at taking capacity now, for the request whose turn it is: `queued` is its
    /// ticket, or `None` for a newcomer, whose turn it is only while nobody waits. The in-flight
    /// slot is reserved first (as a [`Grant`], so a request that goes away mid-try releases
    /// it); then the shared budgets in Redis, when configured, and the local ones are charged.
    async fn try_take(self: &Arc<Self>, ticket: &Ticket, tokens: u64, queued: Option<u64>) -> Try {
        let tokens = tokens.max(1);
        let now = Instant::now();
        let grant = {
            let mut st = self.lock();
            let my_turn = match queued {
                Some(id) => st.line.head() == Some(id),
                None => st.line.is_empty(),
            };
            if !my_turn {
                return Try::Wait(None);
            }
            match self.ready_at(&st, tokens, now) {
                None => return Try::Wait(None),
                Some(at) if at > now => return Try::Wait(Some(at)),
                Some(_) => {}
            }
            st.in_flight += 1;
            Grant {
                lane: Arc::clone(self),
                tokens,
            }
        };
        if let Some(shared) = &self.shared {
            match shared.take(tokens).await {
                // Redis unreachable: the local budgets, already checked, decide (fail closed).
                Ok(shared::Shared::Taken) | Err(_) => {}
                Ok(shared::Shared::Wait(d)) => {
                    drop(grant);
                    return Try::Wait(Some(Instant::now() + d));
                }
            }
        }
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(g) = st.rpm.as_mut() {
            g.take(1, now);
        }
        if let Some(g) = st.tpm.as_mut() {
            g.take(tokens, now);
        }
        if let Some(id) = queued {
            st.line.served(ticket.class, &ticket.caller, id);
            self.set_depth(&st, ticket.class);
        }
        Try::Granted(grant)
    }

    /// A client's next try: when the lane would admit a small request, at least a second.
    fn retry_after(&self, st: &LaneState, now: Instant) -> Duration {
        self.ready_at(st, 1, now)
            .map_or(Duration::from_secs(1), |at| at - now)
            .max(Duration::from_secs(1))
    }

    fn set_depth(&self, st: &LaneState, class: Class) {
        self.metrics
            .shaper_queue_depth(&self.label, class.as_str(), st.line.len_of(class));
    }

    /// Takes capacity for one call, waiting in line until `until` at most. `until` at or
    /// before now means "only if it fits at once" (a fallback provider is asked that way).
    /// `tokens` is the call's estimate (prompt and `maxTokens`), settled later with
    /// [`Grant::settle`].
    pub async fn acquire(
        self: &Arc<Self>,
        ticket: &Ticket,
        tokens: u64,
        until: Instant,
    ) -> Result<Grant, Busy> {
        let asked = Instant::now();
        if let Try::Granted(grant) = self.try_take(ticket, tokens, None).await {
            return Ok(grant);
        }
        let id = {
            let mut st = self.lock();
            let now = Instant::now();
            let retry_after = self.retry_after(&st, now);
            if until <= now {
                return Err(self.refuse(Busy::Timeout { retry_after }));
            }
            if st.line.len() >= self.max_queue {
                return Err(self.refuse(Busy::QueueFull { retry_after }));
            }
            let id = st.line.push(ticket.class, &ticket.caller);
            self.set_depth(&st, ticket.class);
            id
        };
        // Leaves the line if this future is dropped (the request went away) or gives up.
        let mut place = Place {
            lane: self,
            class: ticket.class,
            caller: Arc::clone(&ticket.caller),
            id,
            waiting: true,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so a change in between is not missed.
            notified.as_mut().enable();
            let wake = match self.try_take(ticket, tokens, Some(id)).await {
                Try::Granted(grant) => {
                    place.waiting = false;
                    // The next in line may fit too (a burst, a second slot).
                    self.changed.notify_waiters();
                    self.metrics.shaper_waited(
                        &self.label,
                        ticket.class.as_str(),
                        Instant::now() - asked,
                    );
                    return Ok(grant);
                }
                Try::Wait(at) => at,
            };
            let now = Instant::now();
            if now >= until {
                let retry_after = self.retry_after(&self.lock(), now);
                return Err(self.refuse(Busy::Timeout { retry_after }));
            }
            let wake = wake.map_or(until, |w| w.min(until));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn refuse(&self, busy: Busy) -> Busy {
        self.metrics.shaper_rejected(&self.label, busy.reason());
        busy
    }

    /// Narrows the lane to what the provider says is left (its rate-limit response headers).
    pub fn tighten(self: &Arc<Self>, hint: &UpstreamLimits) {
        let now = Instant::now();
        let mut pushes = Vec::new();
        {
            let mut st = self.lock();
            if let (Some(g), Some((left, reset))) = (st.rpm.as_mut(), hint.requests) {
                g.tighten(left, reset, now);
                pushes.extend(g.push_out_for(left, reset).map(|d| (false, d)));
            }
            if let (Some(g), Some((left, reset))) = (st.tpm.as_mut(), hint.tokens) {
                g.tighten(left, reset, now);
                pushes.extend(g.push_out_for(left, reset).map(|d| (true, d)));
            }
        }
        if self.shared.is_some() && !pushes.is_empty() {
            // Off the request path: the answer is already here, and a lost push only leaves
            // the shared budget as wide as the rule.
            let lane = Arc::clone(self);
            crate::telemetry::spawn_named("shaping-tighten", async move {
                if let Some(shared) = &lane.shared {
                    for (tokens, ahead) in pushes {
                        let _ = shared.push_out(tokens, ahead).await;
                    }
                }
            });
        }
    }

    /// Sets the remaining-capacity gauges (at scrape time: buckets refill without events).
    pub fn publish(&self) {
        let now = Instant::now();
        let st = self.lock();
        if let Some(g) = &st.rpm {
            self.metrics
                .shaper_available(&self.label, "requests", g.available(now));
        }
        if let Some(g) = &st.tpm {
            self.metrics
                .shaper_available(&self.label, "tokens", g.available(now));
        }
    }

    pub fn snapshot(&self) -> LaneSnapshot {
        let now = Instant::now();
        let st = self.lock();
        LaneSnapshot {
            lane: self.label.clone(),
            in_flight: st.in_flight,
            queued_interactive: st.line.len_of(Class::Interactive),
            queued_batch: st.line.len_of(Class::Batch),
            requests_available: st.rpm.as_ref().map(|g| g.available(now)),
            tokens_available: st.tpm.as_ref().map(|g| g.available(now)),
        }
    }
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("label", &self.label)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Every lane, by the traffic it governs.
#[derive(Debug, Default)]
pub struct Shaper {
    /// In the order of `SPARK_PROVIDER_LIMITS` (health lists them so).
    lanes: Vec<Arc<Lane>>,
    queue_timeout: Duration,
    /// Callers whose whole-answer requests are `batch` (`SPARK_BATCH_USERS`).
    batch_users: Vec<String>,
}

impl Shaper {
    /// With `redis`, the lanes' per-minute budgets are shared by every replica using it.
    pub fn new(
        rules: &[Rule],
        queue_timeout: Duration,
        max_queue: usize,
        batch_users: Vec<String>,
        metrics: &Arc<Metrics>,
        redis: Option<&Arc<RedisBackend>>,
    ) -> Self {
        let lanes = rules
            .iter()
            .map(|r| Arc::new(Lane::new(r, max_queue, Arc::clone(metrics), redis)))
            .collect();
        Shaper {
            lanes,
            queue_timeout,
            batch_users,
        }
    }

    /// A caller's class: `batch` for the configured batch callers' whole-answer requests;
    /// streams (someone is reading them as they come) and everyone else `interactive`.
    pub fn class_for(&self, caller: &str, stream: bool) -> Class {
        if !stream && self.batch_users.iter().any(|u| u == caller) {
            Class::Batch
        } else {
            Class::Interactive
        }
    }

    /// The lane governing a model of a provider: the model's own rule, else the provider's.
    /// A few configured rules: a scan, with nothing allocated per call.
    pub fn lane(&self, provider: ProviderId, model: &str) -> Option<&Arc<Lane>> {
        let of = |m: Option<&str>| {
            self.lanes
                .iter()
                .find(|l| l.provider == provider && l.model.as_deref() == m)
        };
        of(Some(model)).or_else(|| of(None))
    }

    /// How long a request may wait in line: the queue timeout, never past `deadline`.
    pub fn wait_until(&self, deadline: Instant) -> Instant {
        (Instant::now() + self.queue_timeout).min(deadline)
    }

    pub fn snapshot(&self) -> Vec<LaneSnapshot> {
        self.lanes.iter().map(|l| l.snapshot()).collect()
    }

    pub fn publish(&self) {
        self.lanes.iter().for_each(|l| l.publish());
    }
}

#[cfg(test)]
mod tests;
