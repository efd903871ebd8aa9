//! The generation service: from a caller's fields to engine-ready code, as one pipeline.
//!
//! Sits between the HTTP handlers and the providers in DESIGN.md's request path and knows nothing
//! of HTTP. Plain and streaming generation walk the same steps, in this order:
//! 1. **prepare** ([`request`]): validate the fields, sanitize the prompt and any system text,
//!    resolve the plan (providers and models), compute the cache key — once, into a
//!    [`GenerateRequest`];
//! 2. **call**: answer from the cache, or ask the plan's providers through the resilience layer
//!    within one deadline; concurrent identical misses share one upstream call, plain ones
//!    through the cache's single-flight and streaming ones through [`stream`]'s flights;
//! 3. **finish** ([`outcome`]): extract and name the script, store it, count it.

mod extract;
mod meter;
mod outcome;
mod request;
mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use extract::{Extracted, extract_code};
pub use meter::Metering;
pub use outcome::{Generation, Rendered};
pub use request::{GenerateParams, GenerateRequest, ProviderChoice};
pub use stream::{GenerationStream, StreamItem};

use crate::budget::{Amount, Reservation};
use crate::cache::{CacheResult, ResponseCache};
use crate::engine::Engine;
use crate::providers::{CompletionRequest, ProviderError, ProviderId};
use crate::resilience::{ProviderRouter, RouteError};
use crate::sanitize::{Policy, Rejection};
use crate::telemetry::Metrics;
use outcome::{build_generation, record_failure, record_success, since};

#[derive(Debug, Clone, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    Invalid(String),
    #[error("prompt rejected")]
    Rejected(#[from] Rejection),
    #[error("every provider attempt failed; last: {0}")]
    Provider(ProviderError),
    #[error("the request deadline of {0:?} passed")]
    Deadline(Duration),
    #[error("every eligible provider's circuit is open")]
    Unavailable(Duration),
    #[error("every eligible provider's capacity is taken")]
    Busy(Duration),
    #[error("the {} budget is spent", .0.scope.as_str())]
    BudgetExceeded(crate::budget::Exceeded),
    #[error("spend could not be checked: {0}")]
    LedgerUnavailable(String),
    #[error("this key may not use that model")]
    ModelNotAllowed,
}

impl GenerateError {
    /// The API.md error code this becomes; the `outcome` metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            GenerateError::Invalid(_) => "invalid_request",
            GenerateError::Rejected(Rejection::TooLong { .. }) => "prompt_too_long",
            GenerateError::Rejected(Rejection::Blocked { .. }) => "prompt_rejected",
            GenerateError::Provider(_) => "upstream_error",
            GenerateError::Deadline(_) => "upstream_timeout",
            GenerateError::Unavailable(_) => "providers_unavailable",
            GenerateError::Busy(_) => "providers_busy",
            GenerateError::BudgetExceeded(_) => "budget_exceeded",
            GenerateError::LedgerUnavailable(_) => "database_unavailable",
            GenerateError::ModelNotAllowed => "model_not_allowed",
        }
    }
}

fn invalid(msg: impl Into<String>) -> GenerateError {
    GenerateError::Invalid(msg.into())
}

/// Limits a request is validated against.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_tokens_cap: u32,
    pub default_max_tokens: u32,
    pub request_deadline: Duration,
    /// Longest silence allowed between two events of a stream once it has started.
    pub stream_idle: Duration,
    /// Longest a stream may last once it has started.
    pub max_stream: Duration,
}

/// An input-token count, and the provider whose tokenizer made it (`None`: the gateway's
/// estimate of about four characters a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount {
    pub tokens: u64,
    pub counted_by: Option<ProviderId>,
}

/// One request's answer: the generation, shared with the cache and with the requests that joined
/// the same call (not copied: a cache hit costs no clone of the code), and what is this
/// request's alone. The shared value's own `cached` and `latency_ms` are those of the call that
/// made it; a request's are here.
#[derive(Debug, Clone)]
pub struct Answer {
    pub generation: Arc<Generation>,
    pub cache: CacheResult,
    /// From the request's arrival to its answer.
    pub latency_ms: u64,
}

impl Answer {
    /// Whether the answer came from the cache rather than from this request's own call.
    pub fn cached(&self) -> bool {
        self.cache == CacheResult::Hit
    }
}

/// Bytes of remembered sanitizer verdicts (each holds its normalized prompt): a few thousand
/// short prompts, or 400 of the longest.
const SANITIZER_MEMO_BYTES: u64 = 4 * 1024 * 1024;

/// The model name the OpenAI-compatible API accepts for "the fallback order".
pub const AUTO_MODEL: &str = "spark-auto";

pub struct GenerateService {
    /// Shared with the stream flights' tasks, which outlive the request that started them.
    router: Arc<ProviderRouter>,
    /// Shared with the streams this service hands out, which store their answer when they end.
    cache: Arc<ResponseCache<Generation>>,
    order: Vec<ProviderId>,
    limits: Limits,
    /// The sanitizer under this gateway's policy, remembering recent verdicts: a cache hit
    /// needs the sanitized prompt for its key, and must not pay for reading it again.
    sanitizer: crate::sanitize::Memo,
    /// Users whose system text replaces the engine prompt (the master key always may).
    system_override: Vec<String>,
    metrics: Arc<Metrics>,
    flights: Arc<stream::Flights>,
    /// Budgets and the ledger; `None` in tests that build a bare service.
    metering: Option<Metering>,
}

impl GenerateService {
    pub fn new(
        router: ProviderRouter,
        cache: ResponseCache<Generation>,
        order: Vec<ProviderId>,
        limits: Limits,
        policy: Policy,
        system_override: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        GenerateService {
            router: Arc::new(router),
            cache: Arc::new(cache),
            order,
            limits,
            sanitizer: crate::sanitize::Memo::new(policy, SANITIZER_MEMO_BYTES),
            system_override,
            metrics,
            flights: Arc::default(),
            metering: None,
        }
    }

    /// Meters every call: budgets before it, a ledger row after it.
    pub fn with_metering(mut self, metering: Metering) -> Self {
        self.metering = Some(metering);
        self
    }

    pub fn router(&self) -> &ProviderRouter {
        &self.router
    }

    pub fn cache(&self) -> &ResponseCache<Generation> {
        &self.cache
    }

    /// Every model a caller may name on the compatible APIs, with its owner.
    pub fn models(&self) -> Vec<(String, &'static str)> {
        let mut out = vec![(AUTO_MODEL.to_owned(), "spark")];
        for id in self.router.ids() {
            if let Some(p) = self.router.provider(id) {
                let owner = id.as_str();
                if id == ProviderId::Simulator {
                    out.push(("simulator".to_owned(), owner));
                }
                out.extend(p.models().iter().map(|m| (m.clone(), owner)));
            }
        }
        out
    }

    /// The provider that owns a model name on the compatible APIs: `spark-auto` is the fallback
    /// order, `simulator` the simulator, any other name the provider that allows it.
    pub fn provider_for_model(&self, model: &str) -> Result<ProviderChoice, GenerateError> {
        if model == AUTO_MODEL {
            return Ok(ProviderChoice::Auto);
        }
        if model == "simulator" {
            return Ok(ProviderChoice::Only(ProviderId::Simulator));
        }
        self.router
            .ids()
            .find(|id| {
                self.router
                    .provider(*id)
                    .is_some_and(|p| p.models().iter().any(|m| m == model))
            })
            .map(ProviderChoice::Only)
            .ok_or_else(|| invalid("model is not available here; GET /v1/models lists the models"))
    }

    /// Answers a prepared request: from the cache when it can (`read_cache` false skips the
    /// lookup but still stores), otherwise from the providers. `started` is when the request
    /// arrived, so latency and the overhead metric cover parsing and sanitizing too.
    ///
    /// Its span is a `debug` step like `auth` and `sanitize`: exported with traces whatever
    /// `RUST_LOG` says, but not opened for the log at the default level, where a second span per
    /// request was a cost on the cache-hit path (issue 20) that no log line read.
    #[tracing::instrument(level = "debug", skip_all, fields(engine = %req.engine, provider = tracing::field::Empty, cache = tracing::field::Empty))]
    pub async fn generate(
        &self,
        req: &GenerateRequest,
        read_cache: bool,
        started: Instant,
    ) -> Result<Answer, GenerateError> {
        // The budget is checked for this request before anything is shared: a request that
        // joins another's call must never see the other caller's budget in an error.
        let held = std::sync::Mutex::new(self.reserve(req).await?);
        let outcome = self
            .cache
            .get_or_generate(
                req.cache_key,
                read_cache,
                |g: &Generation| g.fits(req),
                || self.call(req, started, &held),
            )
            .await;
        // Answered without a call of its own (a hit, or another request's call): nothing spent.
        self.release(held.lock().ok().and_then(|mut h| h.take()));
        let (generation, cache) = outcome?;
        crate::telemetry::access::set_answer(generation.provider.as_str(), cache.label());
        let answer = Answer {
            generation,
            cache,
            latency_ms: since(started),
        };
        if answer.cached() {
            self.count_hit(&answer.generation, started);
            if let Some(m) = &self.metering {
                m.cached(req, &answer.generation, answer.latency_ms);
            }
        }
        Ok(answer)
    }

    /// A cached answer as this request's: counted, overhead observed.
    fn count_hit(&self, g: &Generation, started: Instant) {
        self.metrics
            .generation_done(g.provider.as_str(), g.engine.as_str(), "success", true);
        self.metrics
            .overhead
            .observe(started.elapsed().as_secs_f64());
    }

    /// Step 2 for a plain request: asks the providers within the request deadline, then finishes.
    async fn call(
        &self,
        req: &GenerateRequest,
        started: Instant,
        held: &std::sync::Mutex<Option<Reservation>>,
    ) -> Result<Generation, GenerateError> {
        let deadline = self.limits.request_deadline;
        let ends_at = tokio::time::Instant::from_std(started) + deadline;
        // Taken, so the caller's release after the cache step finds nothing left to give back.
        let reservation = held.lock().ok().and_then(|mut h| h.take());
        let base = self.base_request(req);
        let mut upstream_wait = Duration::ZERO;
        // The router keeps every attempt inside the deadline; the outer timeout is the backstop
        // that makes it a hard limit.
        let result = tokio::time::timeout_at(
            ends_at,
            self.router
                .complete(&req.plan, &base, &req.ticket, ends_at, &mut upstream_wait),
        )
        .await
        .unwrap_or(Err(RouteError::Deadline))
        .map_err(|e| route_error(e, deadline));
        self.metrics.overhead.observe(
            started
                .elapsed()
                .saturating_sub(upstream_wait)
                .as_secs_f64(),
        );
        match result {
            Ok((provider, completion)) => {
                record_success(
                    &self.metrics,
                    provider,
                    req.engine,
                    completion.usage,
                    started,
                );
                if let (Some(m), Some(r)) = (&self.metering, reservation) {
                    m.finish(
                        req,
                        r,
                        &meter::Outcome {
                            provider,
                            model: &completion.model,
                            usage: completion.usage,
                            status: "ok",
                            latency_ms: since(started),
                        },
                    );
                }
                Ok(build_generation(req, provider, completion, started))
            }
            Err(e) => {
                record_failure(&self.metrics, req.engine, &e);
                if let (Some(m), Some(r)) = (&self.metering, reservation) {
                    // Only a call that reached a provider is a ledger row; the reservation is
                    // released either way.
                    match &e {
                        GenerateError::Provider(p) => m.finish(
                            req,
                            r,
                            &meter::Outcome {
                                provider: p.provider(),
                                model: req.model_for(p.provider()),
                                usage: crate::providers::Usage::default(),
                                status: e.code(),
                                latency_ms: since(started),
                            },
                        ),
                        _ => m.budgets.settle(r, Amount::default()),
                    }
                }
                Err(e)
            }
        }
    }

    /// Holds the request's worst case against its budgets (`None` without metering).
    async fn reserve(&self, req: &GenerateRequest) -> Result<Option<Reservation>, GenerateError> {
        match &self.metering {
            Some(m) => Ok(Some(m.reserve(req).await?)),
            None => Ok(None),
        }
    }

    /// Gives back a reservation no call took.
    fn release(&self, left: Option<Reservation>) {
        if let (Some(m), Some(r)) = (&self.metering, left) {
            m.budgets.settle(r, Amount::default());
        }
    }

    /// Counts the input tokens of a prepared request as it would be sent (system prompt
    /// included) with the tokenizer of the first provider of its plan, when that provider
    /// offers counting (Anthropic does); otherwise, or when the count fails, estimates them. No
    /// breaker is involved: counting generates nothing and costs nothing.
    pub async fn count_tokens(&self, req: &GenerateRequest) -> TokenCount {
        let estimate = TokenCount {
            tokens: req.input_estimate().max(1),
            counted_by: None,
        };
        let Some((id, model)) = req.plan.first() else {
            return estimate;
        };
        let Some(provider) = self.router.provider(*id) else {
            return estimate;
        };
        let mut call = self.base_request(req);
        call.model = model.clone();
        match provider.count_tokens(&call).await {
            None => estimate,
            Some(Ok(tokens)) => TokenCount {
                tokens,
                counted_by: Some(*id),
            },
            Some(Err(e)) => {
                tracing::warn!(provider = %id, error = %e, "token count failed; answering an estimate");
                estimate
            }
        }
    }

    fn base_request(&self, req: &GenerateRequest) -> CompletionRequest {
        CompletionRequest {
            model: String::new(),
            system: req.system.clone(),
            prompt: req.prompt.clone(),
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            stop: req.stop.clone(),
            engine: req.engine,
            timeout: self.limits.request_deadline,
        }
    }

    /// Counts and logs a refused prompt: categories and score only, never the text.
    fn count_rejection(&self, engine: Engine, rejection: &Rejection) {
        let outcome = match rejection {
            Rejection::TooLong { max, actual } => {
                tracing::info!(max, actual, "prompt too long");
                "prompt_too_long"
            }
            Rejection::Blocked {
                categories,
                risk_score,
            } => {
                for c in categories {
                    self.metrics.prompt_rejected(c.as_str());
                }
                tracing::info!(
                    categories = ?categories.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                    risk_score,
                    "prompt rejected by the sanitizer"
                );
                "prompt_rejected"
            }
        };
        self.metrics
            .generation_done("none", engine.as_str(), outcome, false);
    }
}

fn route_error(e: RouteError, deadline: Duration) -> GenerateError {
    match e {
        RouteError::Provider(p) => GenerateError::Provider(p),
        RouteError::Unavailable { retry_after } => GenerateError::Unavailable(retry_after),
        RouteError::Busy { retry_after } => GenerateError::Busy(retry_after),
        RouteError::Deadline => GenerateError::Deadline(deadline),
    }
}

#[cfg(test)]
mod tests;
