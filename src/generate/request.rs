//! Step 1 of the pipeline, `prepare`: from the fields a caller sent to a validated request that
//! carries everything the later steps need (sanitized prompt, effective system prompt, the plan of
//! providers and models, the cache key).
//!
//! The plan is resolved once, here: a model outside the allow-list is a 400 before any work is
//! done, and the later steps never recompute it. The cache key is a digest of exactly what is
//! sent upstream (system prompt, prompt, every model the plan may ask, parameters) plus, with
//! `SPARK_CACHE_SCOPE=key`, a tagged caller id: two requests share an answer only when a provider
//! would have been asked the same thing.

use sha2::{Digest, Sha256};

use super::{GenerateError, GenerateService, invalid};
use crate::auth::Caller;
use crate::budget::Account;
use crate::cache::{CacheKey, CacheScope};
use crate::engine::Engine;
use crate::providers::simulator::token_estimate;
use crate::providers::{MAX_STOP_SEQUENCES, ProviderId};

/// The longest stop sequence accepted, in characters.
const MAX_STOP_SEQUENCE_CHARS: usize = 64;
use crate::sanitize::{self, Policy, Rejection};
use crate::shaping::Ticket;

/// The request body of `POST /api/spark/generate`, as sent. Unknown fields are refused so a
/// misspelt option (`maxToken`) is an error rather than silently ignored.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
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
    /// The caller's own system text (the OpenAI-compatible API's system and developer
    /// messages). Not a field of the Spark API.
    #[serde(skip)]
    pub system: Option<String>,
    /// Stop sequences (the Anthropic-compatible API's `stop_sequences`). Not a field of the
    /// Spark API.
    #[serde(skip)]
    pub stop: Vec<String>,
}

/// Which provider a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderChoice {
    /// `SPARK_PROVIDER_ORDER`, falling back along it.
    Auto,
    Only(ProviderId),
}

/// A request that passed validation and sanitization, with its plan and cache key.
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
    /// Stop sequences, checked: at most [`MAX_STOP_SEQUENCES`], none empty or blank.
    pub stop: Vec<String>,
    /// The system prompt sent upstream: the engine's, the engine's followed by the caller's, or
    /// (for callers allowed to) the caller's alone.
    pub system: String,
    /// The providers to try, in order, each with the model it will be asked for.
    pub plan: Vec<(ProviderId, String)>,
    /// Digest of what is sent upstream (and the caller, in key scope).
    pub cache_key: CacheKey,
    /// Who waits for provider capacity, how urgently, for how many tokens (shaping).
    pub ticket: Ticket,
    /// Who pays: the ledger row's identity and the budgets that apply.
    pub account: Account,
}

impl GenerateRequest {
    /// The gateway's estimate of the input tokens sent (system prompt and prompt, about four
    /// characters a token): for token counting without a tokenizer, and for budgets.
    pub fn input_estimate(&self) -> u64 {
        token_estimate(&self.system) + token_estimate(&self.prompt)
    }

    /// The model the plan asks `provider` for (empty when the plan does not hold it).
    pub fn model_for(&self, provider: ProviderId) -> &str {
        self.plan
            .iter()
            .find(|(id, _)| *id == provider)
            .map_or("", |(_, m)| m.as_str())
    }
}

impl GenerateService {
    /// Checks every field, sanitizes the prompt and the caller's system text, resolves the plan
    /// and computes the cache key.
    pub fn validate(
        &self,
        params: GenerateParams,
        caller: &Caller,
    ) -> Result<GenerateRequest, GenerateError> {
        self.validate_as(params, caller, Account::default(), None)
    }

    /// [`GenerateService::validate`] for a paying `account`, limited to the `models` a managed
    /// key allows (`None`: every model). With a limit, a request that names no model gets, from
    /// each provider, the first of its models the key allows.
    pub fn validate_as(
        &self,
        params: GenerateParams,
        caller: &Caller,
        account: Account,
        models: Option<&[String]>,
    ) -> Result<GenerateRequest, GenerateError> {
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
                    return Err(invalid(
                        "unknown provider; expected auto, anthropic, openai or simulator",
                    ));
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
        let stop = params.stop;
        if stop.len() > MAX_STOP_SEQUENCES {
            return Err(invalid(format!(
                "at most {MAX_STOP_SEQUENCES} stop sequences are accepted (every provider must take them)"
            )));
        }
        if stop
            .iter()
            .any(|s| s.trim().is_empty() || s.chars().count() > MAX_STOP_SEQUENCE_CHARS)
        {
            return Err(invalid(format!(
                "a stop sequence must hold a visible character and at most {MAX_STOP_SEQUENCE_CHARS} characters"
            )));
        }
        // Resolve now so a model outside the allow-list is a 400 before any work is done.
        let plan = self.plan(provider, model.as_deref(), models)?;

        let sanitized = tracing::debug_span!("sanitize")
            .in_scope(|| self.sanitizer.sanitize(&prompt))
            .inspect_err(|rejection| self.count_rejection(engine, rejection))?;
        warnings.extend(sanitized.warnings);
        let system = match params.system {
            None => engine.system_prompt().to_owned(),
            Some(text) => {
                let own = self.sanitize_system(&text, &sanitized.text, engine)?;
                if self.may_replace_system(caller) {
                    own
                } else {
                    // The engine's instructions always come first and stay in force; the caller's
                    // text can add to them, never remove them.
                    append_system(engine.system_prompt(), &own)
                }
            }
        };
        let stream = params.stream.unwrap_or(false);
        let ticket = Ticket {
            caller: caller.label().into(),
            class: self.router.shaper().class_for(caller.label(), stream),
        };
        let mut request = GenerateRequest {
            prompt: sanitized.text,
            engine,
            provider,
            model,
            max_tokens,
            temperature,
            stream,
            warnings,
            stop,
            system,
            plan,
            cache_key: [0; 32],
            ticket,
            account,
        };
        request.cache_key = self.cache_key(&request, caller);
        Ok(request)
    }

    /// The caller's system text goes through the same sanitizer as the prompt, and both count
    /// against one size limit: a system message is not a side door.
    fn sanitize_system(
        &self,
        text: &str,
        prompt: &str,
        engine: Engine,
    ) -> Result<String, GenerateError> {
        let used = prompt.chars().count();
        let policy = self.sanitizer.policy();
        let budget = Policy {
            max_chars: policy.max_chars.saturating_sub(used),
            ..*policy
        };
        let result = sanitize::sanitize(text, &budget).map_err(|r| match r {
            Rejection::TooLong { actual, .. } => Rejection::TooLong {
                max: policy.max_chars,
                actual: actual + used,
            },
            other => other,
        });
        let sanitized = result.inspect_err(|r| self.count_rejection(engine, r))?;
        Ok(sanitized.text)
    }

    /// Whether this caller's system text replaces the engine's prompt: the master key, signed-in
    /// administrators, and users named in `SPARK_SYSTEM_PROMPT_OVERRIDE`.
    fn may_replace_system(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Master | Caller::Admin(_) => true,
            Caller::User(id) => self.system_override.iter().any(|u| u == id),
            Caller::Anonymous => false,
        }
    }

    /// The providers to try, in order, each with the model it will be asked for.
    fn plan(
        &self,
        provider: ProviderChoice,
        model: Option<&str>,
        allowed: Option<&[String]>,
    ) -> Result<Vec<(ProviderId, String)>, GenerateError> {
        let may = |m: &str| allowed.is_none_or(|a| a.iter().any(|x| x == m));
        if model.is_some_and(|m| !may(m)) {
            return Err(GenerateError::ModelNotAllowed);
        }
        let candidates: Vec<ProviderId> = match provider {
            ProviderChoice::Only(p) => vec![p],
            ProviderChoice::Auto => self.order.clone(),
        };
        let mut plan = Vec::new();
        match model {
            None => {
                for id in candidates {
                    if let Some(default) = self
                        .router
                        .provider(id)
                        .and_then(|p| p.models().iter().find(|m| may(m)))
                    {
                        plan.push((id, default.clone()));
                    }
                }
            }
            Some(model) => {
                // A named model belongs to one provider; with `auto` any configured provider that
                // allows it may serve, even one left out of the fallback order.
                let mut search = candidates.clone();
                if provider == ProviderChoice::Auto {
                    search.extend(self.router.ids().filter(|p| !candidates.contains(p)));
                }
                for id in search {
                    if self
                        .router
                        .provider(id)
                        .is_some_and(|p| p.models().iter().any(|m| m == model))
                    {
                        plan.push((id, model.to_owned()));
                    }
                }
                if plan.is_empty() {
                    // The caller's value is not repeated: error text is stored by the tracker.
                    let allowed: Vec<&str> = candidates
                        .iter()
                        .filter_map(|id| self.router.provider(*id))
                        .flat_map(|p| p.models().iter().map(String::as_str))
                        .collect();
                    return Err(invalid(format!(
                        "model is not allowed here; allowed: {}",
                        allowed.join(", ")
                    )));
                }
            }
        }
        if plan.is_empty() && allowed.is_some() {
            return Err(GenerateError::ModelNotAllowed);
        }
        if plan.is_empty() {
            return Err(invalid("no configured provider can serve this request"));
        }
        Ok(plan)
    }

    /// Fields are length-prefixed so no two different requests concatenate to the same bytes.
    fn cache_key(&self, req: &GenerateRequest, caller: &Caller) -> CacheKey {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"spark-cache-v2");
        // The engine's own prompt is a constant of this build: naming it is as exact as hashing
        // its ~700 bytes, and saves that hashing on every request. Any other system text is
        // hashed in full.
        if req.system == req.engine.system_prompt() {
            field(b"engine-prompt");
        } else {
            field(b"custom-prompt");
            field(req.system.as_bytes());
        }
        field(req.prompt.as_bytes());
        field(req.engine.as_str().as_bytes());
        for (provider, model) in &req.plan {
            field(provider.as_str().as_bytes());
            field(model.as_bytes());
        }
        field(&req.max_tokens.to_le_bytes());
        // Stop sequences change the answer; the count first, so none can pass for another field.
        field(&(req.stop.len() as u64).to_le_bytes());
        for s in &req.stop {
            field(s.as_bytes());
        }
        match req.temperature {
            Some(t) => field(&t.to_bits().to_le_bytes()),
            None => field(b"default"),
        }
        if self.cache.scope() == CacheScope::Key {
            // Tagged by kind, so a user named `master` is not the master key's partition.
            match caller {
                Caller::Anonymous => field(b"anonymous:"),
                Caller::Master => field(b"master:"),
                // A signed-in administrator shares its user's partition: it is the same person.
                Caller::User(id) | Caller::Admin(id) => field(format!("user:{id}").as_bytes()),
            }
        }
        h.finalize().into()
    }
}

fn append_system(engine_prompt: &str, own: &str) -> String {
    if own.trim().is_empty() {
        return engine_prompt.to_owned();
    }
    format!("{engine_prompt}\n\nAdditional instructions from the caller:\n{own}")
}
