//! The generation service: from a validated request to engine-ready code.
//!
//! Sits between the HTTP handler and the providers in DESIGN.md's request path: it validates the
//! fields, sanitizes the prompt, resolves which provider and model may serve it, asks them within
//! one overall deadline, and turns the model's answer into a named script. It knows nothing of
//! HTTP; the handler only parses JSON and maps [`GenerateError`] to a status.

mod engine;
mod extract;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use engine::{Engine, FileCase};
pub use extract::{
    Extracted, detect_script_name, extract_code, file_name, has_unreal_source_part,
    name_from_prompt, snake_case,
};

use crate::auth::Caller;
use crate::cache::{CacheResult, ResponseCache};
use crate::providers::{
    Completion, CompletionRequest, ProviderError, ProviderId, StreamEvent, Usage,
};
use crate::resilience::{ProviderRouter, RouteError};
use crate::sanitize::{self, Policy, Rejection};
use crate::telemetry::Metrics;

/// The request body of `POST /api/spark/generate`, as sent. Unknown fields are refused so a
/// misspelt option (`maxToken`) is an error rather than silently ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateParams {
    pub prompt: Option<String>,
    pub engine: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
}

/// Which provider a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderChoice {
    /// `SPARK_PROVIDER_ORDER`, falling back along it.
    Auto,
    Only(ProviderId),
}

/// A request that passed validation and sanitization.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The sanitized prompt: what is forwarded.
    pub prompt: String,
    pub engine: Engine,
    pub provider: ProviderChoice,
    pub model: Option<String>,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub stream: bool,
    pub warnings: Vec<String>,
    /// The caller's own system prompt (OpenAI-compatible API), instead of the engine's.
    pub system: Option<String>,
}

/// The 200 body of `POST /api/spark/generate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Generation {
    pub id: String,
    pub code: String,
    pub language: String,
    pub engine: String,
    pub script_name: String,
    pub file_name: String,
    pub provider: String,
    pub model: String,
    pub cached: bool,
    pub usage: UsageBody,
    pub warnings: Vec<String>,
    pub latency_ms: u64,
    /// The model's whole answer, prose included: what the OpenAI-compatible API returns. Not
    /// part of the Spark API body.
    #[serde(skip)]
    pub answer: String,
    /// The model stopped at the token limit (OpenAI's `finish_reason: "length"`).
    #[serde(skip)]
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageBody {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl From<Usage> for UsageBody {
    fn from(u: Usage) -> Self {
        UsageBody {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        }
    }
}

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
}

/// Limits a request is validated against.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_tokens_cap: u32,
    pub default_max_tokens: u32,
    pub request_deadline: Duration,
    /// Longest silence allowed between two events of a stream once it has started.
    pub stream_idle: Duration,
}

pub struct GenerateService {
    router: ProviderRouter,
    /// Shared with the streams this service hands out, which store their answer when they end.
    cache: Arc<ResponseCache>,
    order: Vec<ProviderId>,
    limits: Limits,
    policy: Policy,
    metrics: Arc<Metrics>,
}

impl GenerateService {
    pub fn new(
        router: ProviderRouter,
        cache: ResponseCache,
        order: Vec<ProviderId>,
        limits: Limits,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Self {
        GenerateService {
            router,
            cache: Arc::new(cache),
            order,
            limits,
            policy,
            metrics,
        }
    }

    /// Checks every field and sanitizes the prompt.
    pub fn validate(&self, params: GenerateParams) -> Result<GenerateRequest, GenerateError> {
        let mut warnings = Vec::new();
        let prompt = match params.prompt {
            Some(p) if !p.trim().is_empty() => p,
            Some(_) => return Err(invalid("prompt must not be empty")),
            None => return Err(invalid("prompt is required")),
        };
        let engine =
            Engine::from_field(params.engine.as_deref()).map_err(GenerateError::Invalid)?;
        let provider = match params.provider.as_deref() {
            None | Some("auto") => ProviderChoice::Auto,
            Some(p) => match ProviderId::parse(p) {
                Some(id) if self.router.provider(id).is_some() => ProviderChoice::Only(id),
                Some(id) => {
                    return Err(invalid(format!(
                        "provider {id} is not configured on this gateway"
                    )));
                }
                None => {
                    return Err(invalid(format!(
                        "unknown provider {p:?}; expected auto, anthropic, openai or simulator"
                    )));
                }
            },
        };
        let max_tokens = match params.max_tokens {
            None => self.limits.default_max_tokens,
            Some(n) if n < 1 => return Err(invalid("maxTokens must be at least 1")),
            Some(n) if n > i64::from(self.limits.max_tokens_cap) => {
                warnings.push(format!(
                    "maxTokens {n} is above this gateway's cap and was lowered to {}",
                    self.limits.max_tokens_cap
                ));
                self.limits.max_tokens_cap
            }
            Some(n) => u32::try_from(n).unwrap_or(self.limits.max_tokens_cap),
        };
        let temperature = match params.temperature {
            None => None,
            Some(t) if (0.0..=1.0).contains(&t) => Some(t as f32),
            Some(_) => return Err(invalid("temperature must be between 0.0 and 1.0")),
        };
        let model = match params.model {
            None => None,
            Some(m) if m.trim().is_empty() => return Err(invalid("model must not be empty")),
            Some(m) => Some(m),
        };
        let request = GenerateRequest {
            prompt: String::new(),
            engine,
            provider,
            model,
            max_tokens,
            temperature,
            stream: params.stream.unwrap_or(false),
            warnings: Vec::new(),
            system: None,
        };
        // Resolve now so a model outside the allow-list is a 400 before any work is done.
        self.plan(&request)?;

        let sanitized = sanitize::sanitize(&prompt, &self.policy).inspect_err(|rejection| {
            self.count_rejection(engine, rejection);
        })?;
        warnings.extend(sanitized.warnings);
        Ok(GenerateRequest {
            prompt: sanitized.text,
            warnings,
            ..request
        })
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
                    self.metrics
                        .prompt_rejected
                        .with_label_values(&[c.as_str()])
                        .inc();
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
            .generation
            .with_label_values(&["none", engine.as_str(), outcome, "false"])
            .inc();
    }

    /// The providers to try, in order, each with the model it will be asked for.
    pub fn plan(&self, req: &GenerateRequest) -> Result<Vec<(ProviderId, String)>, GenerateError> {
        let candidates: Vec<ProviderId> = match req.provider {
            ProviderChoice::Only(p) => vec![p],
            ProviderChoice::Auto => self.order.clone(),
        };
        let mut plan = Vec::new();
        match &req.model {
            None => {
                for id in candidates {
                    if let Some(default) = self.router.provider(id).and_then(|p| p.models().first())
                    {
                        plan.push((id, default.clone()));
                    }
                }
            }
            Some(model) => {
                // A named model belongs to one provider; with `auto` any configured provider that
                // allows it may serve, even one left out of the fallback order.
                let mut search = candidates.clone();
                if req.provider == ProviderChoice::Auto {
                    search.extend(self.router.ids().filter(|p| !candidates.contains(p)));
                }
                for id in search {
                    if self
                        .router
                        .provider(id)
                        .is_some_and(|p| p.models().iter().any(|m| m == model))
                    {
                        plan.push((id, model.clone()));
                    }
                }
                if plan.is_empty() {
                    let allowed: Vec<&str> = candidates
                        .iter()
                        .filter_map(|id| self.router.provider(*id))
                        .flat_map(|p| p.models().iter().map(String::as_str))
                        .collect();
                    return Err(invalid(format!(
                        "model {model:?} is not allowed here; allowed: {}",
                        allowed.join(", ")
                    )));
                }
            }
        }
        if plan.is_empty() {
            return Err(invalid("no configured provider can serve this request"));
        }
        Ok(plan)
    }

    /// Answers a validated request: from the cache when it can (`read_cache` false skips the
    /// lookup but still stores), otherwise from the providers through the router. `started` is
    /// when the request arrived, so latency and the overhead metric cover parsing and
    /// sanitizing too.
    #[tracing::instrument(skip_all, fields(engine = %req.engine, provider = tracing::field::Empty, cache = tracing::field::Empty))]
    pub async fn generate(
        &self,
        req: &GenerateRequest,
        caller: &Caller,
        read_cache: bool,
        started: Instant,
    ) -> Result<(Generation, CacheResult), GenerateError> {
        let plan = self.plan(req)?;
        let key = self.cache.key(req, caller);
        let (shared, result) = self
            .cache
            .get_or_generate(key, read_cache, self.generate_fresh(req, &plan, started))
            .await?;
        let span = tracing::Span::current();
        span.record("provider", shared.provider.as_str());
        span.record("cache", result.label());
        let mut generation = (*shared).clone();
        if result == CacheResult::Hit {
            generation.cached = true;
            self.metrics
                .generation
                .with_label_values(&[&generation.provider, req.engine.as_str(), "success", "true"])
                .inc();
            self.metrics
                .overhead
                .observe(started.elapsed().as_secs_f64());
        }
        generation.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok((generation, result))
    }

    /// Asks the providers (the cache's miss path), within the request deadline.
    async fn generate_fresh(
        &self,
        req: &GenerateRequest,
        plan: &[(ProviderId, String)],
        started: Instant,
    ) -> Result<Generation, GenerateError> {
        let deadline = self.limits.request_deadline;
        let base = self.base_request(req, deadline);
        let mut upstream_wait = Duration::ZERO;
        let ends_at = tokio::time::Instant::from_std(started) + deadline;
        // The router keeps every attempt inside the deadline; the outer timeout is the backstop
        // that makes it a hard limit.
        let result = tokio::time::timeout_at(
            ends_at,
            self.router
                .complete(plan, &base, ends_at, &mut upstream_wait),
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
                Ok(build_generation(req, provider, completion, started))
            }
            Err(e) => {
                self.count_failure(req.engine, &e);
                Err(e)
            }
        }
    }

    /// The streaming twin of [`GenerateService::generate`]: a cache hit is one delta and `done`;
    /// otherwise the router opens a stream (falling back only before its first event) and every
    /// delta is passed on as it arrives. The finished answer is extracted, named and cached like a
    /// non-streaming one. An error before the first event is returned here (and becomes an
    /// ordinary error response); one after it ends the stream with [`StreamItem::Error`].
    pub async fn generate_stream(
        &self,
        req: &GenerateRequest,
        caller: &Caller,
        read_cache: bool,
        started: Instant,
    ) -> Result<(GenerationStream, String, CacheResult), GenerateError> {
        use futures_util::StreamExt;
        let plan = self.plan(req)?;
        let key = self.cache.key(req, caller);
        let hit = if read_cache {
            self.cache.lookup(&key).await
        } else {
            None
        };
        if let Some(hit) = hit {
            let mut g = (*hit).clone();
            g.cached = true;
            g.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.metrics
                .generation
                .with_label_values(&[&g.provider, req.engine.as_str(), "success", "true"])
                .inc();
            let provider = g.provider.clone();
            // The stored answer, whole, as one delta: the model's text, like a live stream.
            let text = if g.answer.is_empty() {
                g.code.clone()
            } else {
                g.answer.clone()
            };
            let items = vec![StreamItem::Delta(text), StreamItem::Done(Box::new(g))];
            return Ok((
                Box::pin(futures_util::stream::iter(items)),
                provider,
                CacheResult::Hit,
            ));
        }
        let result = if !self.cache.enabled() || !read_cache {
            CacheResult::Bypass
        } else {
            CacheResult::Miss
        };
        let deadline = self.limits.request_deadline;
        let ends_at = tokio::time::Instant::from_std(started) + deadline;
        let base = self.base_request(req, deadline);
        let mut upstream_wait = Duration::ZERO;
        let opened = tokio::time::timeout_at(
            ends_at,
            self.router
                .stream(&plan, &base, ends_at, &mut upstream_wait),
        )
        .await
        .unwrap_or(Err(RouteError::Deadline));
        let (provider, upstream) = match opened {
            Ok(ok) => ok,
            Err(e) => {
                let e = route_error(e, deadline);
                self.count_failure(req.engine, &e);
                return Err(e);
            }
        };
        struct State {
            upstream: crate::providers::CompletionStream,
            text: String,
            done: bool,
        }
        let cache = Arc::clone(&self.cache);
        let metrics = Arc::clone(&self.metrics);
        let req = req.clone();
        let idle = self.limits.stream_idle;
        let stream = futures_util::stream::unfold(
            State {
                upstream,
                text: String::new(),
                done: false,
            },
            move |mut st| {
                let cache = Arc::clone(&cache);
                let metrics = Arc::clone(&metrics);
                let req = req.clone();
                async move {
                    if st.done {
                        return None;
                    }
                    // A stream that goes silent is ended: the deadline no longer applies once the
                    // first byte went out, so silence is what bounds a hung upstream.
                    let next = tokio::time::timeout(idle, st.upstream.next())
                        .await
                        .unwrap_or(Some(Err(ProviderError::Timeout {
                            provider,
                            timeout: idle,
                        })));
                    let item = match next {
                        Some(Ok(StreamEvent::Delta(t))) => {
                            st.text.push_str(&t);
                            StreamItem::Delta(t)
                        }
                        Some(Ok(StreamEvent::Finished {
                            model,
                            usage,
                            truncated,
                        })) => {
                            st.done = true;
                            let completion = Completion {
                                text: std::mem::take(&mut st.text),
                                model,
                                usage,
                                truncated,
                            };
                            record_success(&metrics, provider, req.engine, usage, started);
                            let g = build_generation(&req, provider, completion, started);
                            cache.store_fresh(key, g.clone(), result).await;
                            StreamItem::Done(Box::new(g))
                        }
                        Some(Err(e)) => {
                            st.done = true;
                            let e = GenerateError::Provider(e);
                            metrics
                                .generation
                                .with_label_values(&[
                                    provider.as_str(),
                                    req.engine.as_str(),
                                    e.code(),
                                    "false",
                                ])
                                .inc();
                            StreamItem::Error(e)
                        }
                        None => {
                            st.done = true;
                            StreamItem::Error(GenerateError::Provider(ProviderError::Malformed {
                                provider,
                                reason: "the stream ended without finishing".into(),
                            }))
                        }
                    };
                    Some((item, st))
                }
            },
        );
        Ok((Box::pin(stream), provider.as_str().to_owned(), result))
    }

    fn base_request(&self, req: &GenerateRequest, deadline: Duration) -> CompletionRequest {
        CompletionRequest {
            model: String::new(),
            system: req
                .system
                .clone()
                .unwrap_or_else(|| req.engine.system_prompt().to_owned()),
            prompt: req.prompt.clone(),
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            engine: req.engine,
            timeout: deadline,
        }
    }

    fn count_failure(&self, engine: Engine, e: &GenerateError) {
        let provider = match e {
            GenerateError::Provider(p) => p.provider().as_str(),
            _ => "none",
        };
        self.metrics
            .generation
            .with_label_values(&[provider, engine.as_str(), e.code(), "false"])
            .inc();
    }

    pub fn router(&self) -> &ProviderRouter {
        &self.router
    }

    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }
}

/// `POST /v1/chat/completions` as OpenAI SDKs send it. Fields this gateway does not use (`n`,
/// `top_p`, `user`, …) are accepted and ignored, as OpenAI-compatible servers do.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatParams {
    pub model: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub stream: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// A string, or an array of parts of which the `text` ones are read.
    pub content: Option<serde_json::Value>,
}

/// The model names the OpenAI-compatible API accepts besides the providers' own.
pub const AUTO_MODEL: &str = "spark-auto";

fn message_text(content: &Option<serde_json::Value>) -> String {
    match content {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

impl GenerateService {
    /// Every model a caller may name on the OpenAI-compatible API, with its owner.
    pub fn chat_models(&self) -> Vec<(String, &'static str)> {
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

    /// Turns a chat request into a generation request: the model picks the provider
    /// (`claude-*` Anthropic, `gpt-*`/`o*` OpenAI, `simulator`, `spark-auto` the fallback order),
    /// system and developer messages replace the engine's system prompt, and the conversation
    /// becomes the prompt, which the sanitizer checks like any other.
    pub fn validate_chat(&self, chat: ChatParams) -> Result<GenerateRequest, GenerateError> {
        let model = chat
            .model
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| invalid("model is required"))?;
        let (provider, model) = if model == AUTO_MODEL {
            ("auto".to_owned(), None)
        } else if model == "simulator" {
            ("simulator".to_owned(), None)
        } else {
            let owner = self
                .router
                .ids()
                .find(|id| {
                    self.router
                        .provider(*id)
                        .is_some_and(|p| p.models().contains(&model))
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "model {model:?} is not available here; GET /v1/models lists the models"
                    ))
                })?;
            (owner.as_str().to_owned(), Some(model))
        };
        let messages = chat.messages.unwrap_or_default();
        if messages.is_empty() {
            return Err(invalid("messages must hold at least one message"));
        }
        let mut system = Vec::new();
        let mut turns = Vec::new();
        for m in &messages {
            let text = message_text(&m.content);
            match m.role.as_str() {
                "system" | "developer" => system.push(text),
                "user" => turns.push(("User", text)),
                "assistant" => turns.push(("Assistant", text)),
                other => return Err(invalid(format!("message role {other:?} is not supported"))),
            }
        }
        if !turns.iter().any(|(who, _)| *who == "User") {
            return Err(invalid("messages must hold a user message"));
        }
        let prompt = match turns.as_slice() {
            [("User", only)] => only.clone(),
            _ => turns
                .iter()
                .map(|(who, text)| format!("{who}: {text}"))
                .collect::<Vec<_>>()
                .join("\n\n"),
        };
        let mut request = self.validate(GenerateParams {
            prompt: Some(prompt),
            engine: None,
            provider: Some(provider),
            model,
            max_tokens: chat.max_completion_tokens.or(chat.max_tokens),
            temperature: chat.temperature,
            stream: chat.stream,
        })?;
        request.system = (!system.is_empty()).then(|| system.join("\n\n"));
        Ok(request)
    }
}

/// One item of a streamed generation.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Delta(String),
    Done(Box<Generation>),
    Error(GenerateError),
}

pub type GenerationStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = StreamItem> + Send>>;

fn route_error(e: RouteError, deadline: Duration) -> GenerateError {
    match e {
        RouteError::Provider(p) => GenerateError::Provider(p),
        RouteError::Unavailable { retry_after } => GenerateError::Unavailable(retry_after),
        RouteError::Deadline => GenerateError::Deadline(deadline),
    }
}

fn record_success(
    metrics: &Metrics,
    provider: ProviderId,
    engine: Engine,
    usage: Usage,
    started: Instant,
) {
    let p = provider.as_str();
    metrics
        .generation
        .with_label_values(&[p, engine.as_str(), "success", "false"])
        .inc();
    metrics
        .generation_duration
        .with_label_values(&[p])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .tokens
        .with_label_values(&[p, "input"])
        .inc_by(usage.input_tokens);
    metrics
        .tokens
        .with_label_values(&[p, "output"])
        .inc_by(usage.output_tokens);
}

/// The answer as a named script: extraction, naming, warnings.
fn build_generation(
    req: &GenerateRequest,
    provider: ProviderId,
    completion: Completion,
    started: Instant,
) -> Generation {
    let answer = completion.text.clone();
    let Extracted { code, warnings } = extract_code(&completion.text, req.engine);
    let mut all_warnings = req.warnings.clone();
    all_warnings.extend(warnings);
    if completion.truncated {
        all_warnings
            .push("the model stopped at maxTokens; the code is probably incomplete".to_owned());
    }
    let script_name = detect_script_name(&code, req.engine)
        .or_else(|| name_from_prompt(&req.prompt))
        .unwrap_or_else(|| "GameScript".to_owned());
    Generation {
        id: format!("gen_{}", uuid::Uuid::new_v4().simple()),
        file_name: file_name(req.engine, &script_name, &code),
        code,
        language: req.engine.language().to_owned(),
        engine: req.engine.as_str().to_owned(),
        script_name,
        provider: provider.as_str().to_owned(),
        model: completion.model,
        cached: false,
        usage: completion.usage.into(),
        warnings: all_warnings,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        answer,
        truncated: completion.truncated,
    }
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
        }
    }
}

fn invalid(msg: impl Into<String>) -> GenerateError {
    GenerateError::Invalid(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::simulator::{SIMULATOR_MODEL, Simulator};
    use crate::sanitize::PolicyMode;

    fn service() -> GenerateService {
        let metrics = Arc::new(Metrics::new().unwrap());
        let router = ProviderRouter::new(
            vec![Arc::new(Simulator::new(Duration::ZERO, 0.0))],
            &crate::resilience::BreakerConfig::default(),
            crate::resilience::RetryPolicy::default(),
            Duration::from_secs(1),
            Arc::clone(&metrics),
            Arc::new(crate::telemetry::ErrorTracker::new(
                10,
                metrics.errors.clone(),
                None,
            )),
        );
        let cache = ResponseCache::new(
            &crate::cache::CacheConfig {
                ttl: Duration::from_secs(60),
                max_bytes: 1 << 20,
                scope: crate::cache::CacheScope::Global,
            },
            Arc::clone(&metrics),
            None,
        );
        GenerateService::new(
            router,
            cache,
            vec![ProviderId::Simulator],
            Limits {
                max_tokens_cap: 4096,
                default_max_tokens: 2048,
                request_deadline: Duration::from_secs(5),
                stream_idle: Duration::from_secs(1),
            },
            Policy {
                mode: PolicyMode::Block,
                threshold: 0.5,
                max_chars: 10_000,
            },
            metrics,
        )
    }

    fn params(prompt: &str) -> GenerateParams {
        GenerateParams {
            prompt: Some(prompt.into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_unity_auto_and_the_default_token_budget() {
        let r = service().validate(params("a door")).unwrap();
        assert_eq!(r.engine, Engine::Unity);
        assert_eq!(r.provider, ProviderChoice::Auto);
        assert_eq!(r.max_tokens, 2048);
        assert_eq!(r.temperature, None);
    }

    #[test]
    fn every_field_is_validated() {
        let s = service();
        let bad = [
            GenerateParams::default(),
            params("   "),
            GenerateParams {
                engine: Some("cryengine".into()),
                ..params("x")
            },
            GenerateParams {
                provider: Some("mistral".into()),
                ..params("x")
            },
            GenerateParams {
                provider: Some("anthropic".into()),
                ..params("x")
            },
            GenerateParams {
                model: Some("gpt-4o".into()),
                ..params("x")
            },
            GenerateParams {
                model: Some("".into()),
                ..params("x")
            },
            GenerateParams {
                max_tokens: Some(0),
                ..params("x")
            },
            GenerateParams {
                temperature: Some(1.5),
                ..params("x")
            },
            GenerateParams {
                temperature: Some(-0.1),
                ..params("x")
            },
        ];
        for p in bad {
            let dbg = format!("{p:?}");
            assert!(
                matches!(s.validate(p), Err(GenerateError::Invalid(_))),
                "{dbg}"
            );
        }
    }

    #[test]
    fn max_tokens_above_the_cap_is_lowered_with_a_warning() {
        let r = service()
            .validate(GenerateParams {
                max_tokens: Some(1_000_000),
                ..params("x")
            })
            .unwrap();
        assert_eq!(r.max_tokens, 4096);
        assert_eq!(r.warnings.len(), 1);
    }

    #[tokio::test]
    async fn simulator_generation_names_the_script_from_the_code() {
        let s = service();
        let r = s
            .validate(params("Create a Unity player controller with double jump"))
            .unwrap();
        let (g, cache) = s
            .generate(&r, &Caller::Anonymous, true, Instant::now())
            .await
            .unwrap();
        assert_eq!(cache, CacheResult::Miss);
        assert_eq!(g.provider, "simulator");
        assert_eq!(g.model, SIMULATOR_MODEL);
        assert_eq!(g.script_name, "PlayerController");
        assert_eq!(g.file_name, "PlayerController.cs");
        assert!(
            g.code
                .contains("public class PlayerController : MonoBehaviour")
        );
        assert!(g.id.starts_with("gen_"));
        assert!(g.usage.output_tokens > 0);
    }
}
