//! Resilience: circuit breakers, retries with jittered back-off, and fallback between providers,
//! all inside one request deadline.
//!
//! The step between the generation service and the providers in DESIGN.md's request path.
//! [`ProviderRouter::complete`] walks a plan (providers in order, each with its model): it skips
//! providers whose circuit is open, gives each attempt the smaller of the per-attempt timeout and
//! what is left of the deadline, and on a retryable failure falls back to the next provider at
//! once. The last provider of the plan (or the only one, when the caller named it) is retried
//! with full-jitter exponential back-off, never sooner than the upstream's `retry-after` and never
//! past the deadline: a wait that would outlive the request is not started. A caller's error (an
//! upstream 400) ends the walk at once: another provider would refuse it too, and it says nothing
//! about the provider's health. A refused key or endpoint (401, 403, 404) is the opposite: the
//! provider cannot serve anyone, so the walk moves to the next provider at once, the breaker
//! counts a failure, and health shows the provider `misconfigured`. Plain and streaming requests
//! share the one walk ([`ProviderRouter::walk`]).

pub mod breaker;
mod ending;
mod spans;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub use breaker::{Breaker, BreakerConfig, BreakerSnapshot, CircuitState};

use crate::providers::ratelimit_headers::{self, UpstreamLimits};
use crate::providers::{
    Completion, CompletionRequest, CompletionStream, Provider, ProviderError, ProviderId,
};
use crate::shaping::{Grant, Shaper, Ticket};
use crate::telemetry::{ErrorTracker, Metrics, Severity, trace};
use ending::{guard_stream, hold_grant, walk_ended};
use spans::{attempt_span, record_answer, record_attempt_error};
use tracing::Instrument;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per provider, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a uniform draw in `[0, min(max, base·2^attempt)]`, raised to the upstream's
    /// `retry-after` when it asked for longer.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self
            .base_delay
            .checked_mul(2u32.saturating_pow(attempt.min(16)))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let jittered = ceiling.mul_f64(rand::random::<f64>());
        jittered.max(retry_after.unwrap_or(Duration::ZERO))
    }
}

/// Why no provider answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Provider(ProviderError),
    #[error("every eligible provider's circuit is open")]
    Unavailable { retry_after: Duration },
    #[error("every eligible provider's capacity is taken")]
    Busy { retry_after: Duration },
    #[error("the request deadline passed")]
    Deadline,
}

pub struct ProviderRouter {
    providers: BTreeMap<ProviderId, Arc<dyn Provider>>,
    breakers: BTreeMap<ProviderId, Arc<Breaker>>,
    retry: RetryPolicy,
    upstream_timeout: Duration,
    metrics: Arc<Metrics>,
    errors: Arc<ErrorTracker>,
    /// Set while a provider's last answer refused our key or endpoint (401/403/404): health
    /// shows it `misconfigured` until an attempt succeeds again.
    misconfigured: BTreeMap<ProviderId, AtomicBool>,
    /// Each provider's capacity (`SPARK_PROVIDER_LIMITS`); empty: calls go out unshaped.
    shaper: Arc<Shaper>,
}

impl ProviderRouter {
    pub fn new(
        providers: Vec<Arc<dyn Provider>>,
        breaker: &BreakerConfig,
        retry: RetryPolicy,
        upstream_timeout: Duration,
        metrics: Arc<Metrics>,
        errors: Arc<ErrorTracker>,
    ) -> Self {
        let mut map = BTreeMap::new();
        let mut breakers = BTreeMap::new();
        for p in providers {
            let id = p.id();
            let m = Arc::clone(&metrics);
            let tracker = Arc::clone(&errors);
            let hook: breaker::TransitionHook = Arc::new(move |to: CircuitState| {
                m.breaker_entered(id.as_str(), to.as_str(), to.gauge());
                match to {
                    CircuitState::Open => {
                        tracing::warn!(provider = %id, "circuit opened");
                        tracker.record(
                            "circuit_open",
                            &format!("provider:{id}"),
                            "circuit opened",
                            Severity::High,
                        );
                    }
                    CircuitState::HalfOpen => {
                        tracing::info!(provider = %id, "circuit half-open: probing")
                    }
                    CircuitState::Closed => tracing::info!(provider = %id, "circuit closed"),
                }
            });
            metrics.breaker_gauge(id.as_str(), CircuitState::Closed.gauge());
            metrics.provider_misconfigured(id.as_str(), false);
            breakers.insert(id, Arc::new(Breaker::new(breaker.clone(), Some(hook))));
            map.insert(id, p);
        }
        ProviderRouter {
            misconfigured: map.keys().map(|id| (*id, AtomicBool::new(false))).collect(),
            providers: map,
            breakers,
            retry,
            upstream_timeout,
            metrics,
            errors,
            shaper: Arc::new(Shaper::default()),
        }
    }

    /// Shapes every call through `shaper`'s lanes.
    pub fn with_shaper(mut self, shaper: Arc<Shaper>) -> Self {
        self.shaper = shaper;
        self
    }

    pub fn shaper(&self) -> &Shaper {
        &self.shaper
    }

    pub fn provider(&self, id: ProviderId) -> Option<&Arc<dyn Provider>> {
        self.providers.get(&id)
    }

    pub fn ids(&self) -> impl Iterator<Item = ProviderId> + '_ {
        self.providers.keys().copied()
    }

    pub fn breaker(&self, id: ProviderId) -> Option<&Arc<Breaker>> {
        self.breakers.get(&id)
    }

    /// Whether a provider's key or endpoint was refused (401, 403, 404) by its last answer.
    pub fn misconfigured(&self, id: ProviderId) -> bool {
        self.misconfigured
            .get(&id)
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Asks the plan's providers in turn for a whole answer. `upstream_wait` accumulates the
    /// time spent waiting on providers (for the overhead metric).
    pub async fn complete(
        &self,
        plan: &[(ProviderId, String)],
        base: &CompletionRequest,
        ticket: &Ticket,
        deadline: Instant,
        upstream_wait: &mut Duration,
    ) -> Result<(ProviderId, Completion), RouteError> {
        self.walk(
            plan,
            base,
            ticket,
            deadline,
            upstream_wait,
            true,
            |provider, call| async move {
                let completion = provider.complete(&call).await;
                if let Ok(c) = &completion {
                    record_answer(&tracing::Span::current(), &c.model, c.usage);
                }
                completion
            },
            |completion: Completion, permit, grant| {
                permit.success();
                if let Some(grant) = grant {
                    grant.settle(completion.usage.input_tokens + completion.usage.output_tokens);
                }
                completion
            },
        )
        .await
    }

    /// Opens a streamed completion. Fallback happens only before the first event reaches us:
    /// each provider gets `min(upstream timeout, time left)` to accept the request and send its
    /// first event; after that the stream is the caller's, and a failure in it ends the stream
    /// (and counts against that provider's breaker). Streams are not retried on the same
    /// provider: a partial answer cannot be taken back.
    pub async fn stream(
        &self,
        plan: &[(ProviderId, String)],
        base: &CompletionRequest,
        ticket: &Ticket,
        deadline: Instant,
        upstream_wait: &mut Duration,
    ) -> Result<(ProviderId, CompletionStream), RouteError> {
        use futures_util::StreamExt;
        self.walk(
            plan,
            base,
            ticket,
            deadline,
            upstream_wait,
            false,
            |provider, call| async move {
                let asked = Instant::now();
                let mut s = provider.stream(&call).await?;
                match s.next().await {
                    Some(Ok(first)) => {
                        // The attempt's span ends here: its length is the time to the first
                        // token, said outright for the trace's reader.
                        trace::set_attribute(
                            &tracing::Span::current(),
                            "spark.time_to_first_token_ms",
                            asked.elapsed().as_secs_f64() * 1000.0,
                        );
                        Ok((first, s))
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(ProviderError::Malformed {
                        provider: provider.id(),
                        reason: "empty stream".into(),
                    }),
                }
            },
            |(first, rest), permit, grant| {
                let stream = if permit.is_probe() {
                    // A probe is settled by its first event: holding the only half-open slot for
                    // a whole (possibly minutes-long) stream would keep the circuit undecided.
                    permit.success();
                    let head = futures_util::stream::once(async move { Ok(first) });
                    Box::pin(head.chain(rest)) as CompletionStream
                } else {
                    guard_stream(first, rest, permit)
                };
                match grant {
                    Some(grant) => hold_grant(stream, grant),
                    None => stream,
                }
            },
        )
        .await
    }

    /// The one walk through a plan, for whole answers and streams alike. For each provider in
    /// order: skip it while its circuit is open; otherwise `attempt` it within the smaller of the
    /// per-attempt timeout and what is left of the deadline. A success is handed to `finish`
    /// with the breaker permit. A failure is settled with the breaker, then: a caller's error
    /// ends the walk; a refused key or endpoint (401/403/404) moves on at once; a retryable one
    /// moves on when a fallback is left, else (with `retry_last`) is retried after a jittered
    /// back-off that never outlives the deadline.
    #[allow(
        clippy::too_many_arguments,
        reason = "the two closures are the only difference between the plain and streaming walks"
    )]
    async fn walk<T, U, A, Fut>(
        &self,
        plan: &[(ProviderId, String)],
        base: &CompletionRequest,
        ticket: &Ticket,
        deadline: Instant,
        upstream_wait: &mut Duration,
        retry_last: bool,
        attempt: A,
        finish: impl Fn(T, breaker::Permit, Option<Grant>) -> U,
    ) -> Result<(ProviderId, U), RouteError>
    where
        A: Fn(Arc<dyn Provider>, CompletionRequest) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let mut last_error: Option<ProviderError> = None;
        let mut earliest_open: Option<Duration> = None;
        // Set once a lane was busy: later providers are taken only if they have room at once.
        let mut busy: Option<Duration> = None;
        // The call's token estimate, worked out once and only if a lane governs a call.
        let mut estimate: Option<u64> = None;
        for (index, (id, model)) in plan.iter().enumerate() {
            let (Some(provider), Some(breaker)) = (self.providers.get(id), self.breakers.get(id))
            else {
                continue;
            };
            let has_fallback = index + 1 < plan.len();
            let attempts = if retry_last {
                self.retry.attempts.max(1)
            } else {
                1
            };
            for n in 0..attempts {
                let permit = match breaker.try_acquire() {
                    Ok(p) => p,
                    Err(refused) => {
                        earliest_open = Some(
                            earliest_open
                                .map_or(refused.retry_after, |e| e.min(refused.retry_after)),
                        );
                        break;
                    }
                };
                let lane = self.shaper.lane(*id, model);
                let grant = match lane {
                    None => None,
                    Some(lane) => {
                        let until = match busy {
                            Some(_) => Instant::now(),
                            None => self.shaper.wait_until(deadline),
                        };
                        let tokens = *estimate.get_or_insert_with(|| call_tokens(base));
                        match lane.acquire(ticket, tokens, until).await {
                            Ok(grant) => Some(grant),
                            Err(refused) => {
                                // Nothing was asked of the provider: the breaker learns nothing.
                                permit.neutral();
                                let after = refused.retry_after();
                                busy = Some(busy.map_or(after, |b| b.min(after)));
                                tracing::info!(provider = %id, reason = refused.reason(), "provider capacity taken; falling back");
                                break;
                            }
                        }
                    }
                };
                let call = self.attempt(model, base, deadline)?;
                let timeout = call.timeout;
                let span = attempt_span(*id, &call, n, index);
                let started = Instant::now();
                let call = tokio::time::timeout(timeout, attempt(Arc::clone(provider), call))
                    .instrument(span.clone());
                // The provider's rate-limit headers are read only for a call a lane governs.
                let mut seen = None;
                let outcome = match lane {
                    Some(_) => {
                        let (outcome, limits) = ratelimit_headers::capture(call).await;
                        seen = limits;
                        outcome
                    }
                    None => call.await,
                }
                .unwrap_or(Err(ProviderError::Timeout {
                    provider: *id,
                    timeout,
                }));
                if let Some(lane) = lane {
                    // The provider's own count of what is left narrows ours; a bare 429 with
                    // `retry-after` says "nothing until then".
                    let refused_until = match &outcome {
                        Err(e) if e.status() == Some(429) => e.retry_after(),
                        _ => None,
                    };
                    if let Some(left) = seen.or(refused_until.map(UpstreamLimits::nothing_until)) {
                        lane.tighten(&left);
                    }
                }
                if let Err(e) = &outcome {
                    record_attempt_error(&span, e);
                }
                let took = started.elapsed();
                *upstream_wait += took;
                self.observe(*id, outcome.as_ref().err(), took);
                let error = match outcome {
                    Ok(t) => {
                        self.set_misconfigured(*id, false);
                        return Ok((*id, finish(t, permit, grant)));
                    }
                    Err(e) => e,
                };
                if let Some(end) = self.settle_failure(*id, permit, &error, timeout) {
                    return Err(end);
                }
                let hint = error.retry_after();
                let retryable = error.is_retryable();
                last_error = Some(error);
                if !retryable || n + 1 >= attempts || has_fallback {
                    // With a fallback left, moving on is faster than waiting out a back-off;
                    // a refused key is not retried on the same provider at all.
                    break;
                }
                let delay = self.retry.backoff(n, hint);
                if Instant::now() + delay >= deadline {
                    // Waiting would outlive the request: answer now rather than time out later.
                    break;
                }
                tokio::time::sleep(delay).await;
            }
        }
        Err(walk_ended(last_error, earliest_open, busy))
    }

    fn set_misconfigured(&self, id: ProviderId, on: bool) {
        if let Some(flag) = self.misconfigured.get(&id)
            && flag.swap(on, Ordering::Relaxed) != on
        {
            self.metrics.provider_misconfigured(id.as_str(), on);
        }
    }

    /// One attempt's request: the model, and the smaller of the per-attempt timeout and what is
    /// left of the deadline (none left ends the walk).
    fn attempt(
        &self,
        model: &str,
        base: &CompletionRequest,
        deadline: Instant,
    ) -> Result<CompletionRequest, RouteError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(RouteError::Deadline);
        }
        Ok(CompletionRequest {
            model: model.to_owned(),
            timeout: self.upstream_timeout.min(remaining),
            ..base.clone()
        })
    }

    /// Records one attempt's duration under its status (or error kind).
    fn observe(&self, id: ProviderId, error: Option<&ProviderError>, took: Duration) {
        let status = match error {
            None => "200".to_owned(),
            Some(e) => e
                .status()
                .map_or_else(|| e.kind().to_owned(), |s| s.to_string()),
        };
        self.metrics.observe_upstream(id.as_str(), &status, took);
    }

    /// Settles a failed attempt with the breaker, the log and the error tracker, and says
    /// whether the walk must end here: the request's deadline cut the attempt short, or the
    /// failure is the caller's and no other provider would do better.
    fn settle_failure(
        &self,
        id: ProviderId,
        permit: breaker::Permit,
        error: &ProviderError,
        timeout: Duration,
    ) -> Option<RouteError> {
        // An attempt the request's deadline cut short says nothing about the provider: its
        // timeout was not the provider's to meet.
        let cut_by_deadline =
            matches!(error, ProviderError::Timeout { .. }) && timeout < self.upstream_timeout;
        let misconfigured = error.is_misconfigured();
        if cut_by_deadline {
            permit.neutral();
        } else if error.is_provider_fault() || misconfigured {
            permit.failure();
        } else {
            permit.neutral();
        }
        if misconfigured {
            self.set_misconfigured(id, true);
            tracing::error!(provider = %id, error = %error, "provider refused our key or endpoint; falling back");
        } else {
            tracing::warn!(provider = %id, error = %error, "provider attempt failed");
        }
        if error.is_retryable() || misconfigured {
            self.errors.record(
                error.kind(),
                &format!("provider:{id}"),
                &error.to_string(),
                if misconfigured {
                    Severity::High
                } else {
                    Severity::Medium
                },
            );
        }
        if cut_by_deadline {
            return Some(RouteError::Deadline);
        }
        (!error.is_retryable() && !misconfigured).then(|| RouteError::Provider(error.clone()))
    }
}

/// What a provider will count for a call: the prompt as sent and every token it may answer.
fn call_tokens(base: &CompletionRequest) -> u64 {
    use crate::providers::simulator::token_estimate;
    token_estimate(&base.system) + token_estimate(&base.prompt) + u64::from(base.max_tokens)
}

#[cfg(test)]
mod tests;
