//! Step 3 of the pipeline, `finish`: the provider's answer as a named script ([`Generation`]),
//! its metrics, and how it is kept in the cache.
//!
//! `Generation` is the domain value: typed provider and engine, the model's whole answer and the
//! extracted code. The JSON bodies of the Spark and OpenAI APIs are rendered from it in `api/`.

use std::sync::OnceLock;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{GenerateError, GenerateRequest};
use crate::cache::CacheValue;
use crate::engine::{Engine, detect_script_name, file_name, name_from_prompt};
use crate::providers::{Completion, ProviderId, Usage};
use crate::telemetry::Metrics;

use super::extract::{Extracted, extract_code};

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub id: String,
    pub code: String,
    pub engine: Engine,
    pub script_name: String,
    pub file_name: String,
    pub provider: ProviderId,
    pub model: String,
    pub cached: bool,
    pub usage: Usage,
    pub warnings: Vec<String>,
    pub latency_ms: u64,
    /// The model's whole answer, prose included: what the OpenAI-compatible API returns.
    pub answer: String,
    /// The model stopped at the token limit (OpenAI's `finish_reason: "length"`).
    pub truncated: bool,
    /// The stop sequence the answer ended at, when the provider reported one. Absent from
    /// values stored by older builds, hence the default.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// The API layer's rendering of this value as a cache hit, made on the first hit (see
    /// [`Rendered`]). Not part of the value: never stored, compared or cloned.
    #[serde(skip)]
    pub rendered: Rendered,
}

/// A slot for bytes the API layer renders from a cached [`Generation`] once and then reuses, so
/// that a cache hit writes bytes it already has instead of serializing the same answer again
/// (issue 20). What the bytes are is the API layer's business: this module does not know HTTP.
/// A clone starts empty and two slots always compare equal, because the slot is a cache of the
/// value's rendering, not part of the value.
#[derive(Default)]
pub struct Rendered(OnceLock<bytes::Bytes>);

impl Rendered {
    /// The bytes, rendered by `render` the first time only.
    pub fn get_or_init(&self, render: impl FnOnce() -> bytes::Bytes) -> &bytes::Bytes {
        self.0.get_or_init(render)
    }
}

impl Clone for Rendered {
    fn clone(&self) -> Self {
        Rendered::default()
    }
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Rendered(..)"
        } else {
            "Rendered(empty)"
        })
    }
}

/// The version of the shared-cache payload. Bump it when `Generation` changes shape: a replica
/// of another version then sees a miss, never a crash.
const CACHE_FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    generation: Generation,
}

impl CacheValue for Generation {
    fn weight(&self) -> u32 {
        let strings = self.id.len()
            + self.code.len()
            + self.script_name.len()
            + self.file_name.len()
            + self.model.len()
            + self.answer.len()
            + self.warnings.iter().map(String::len).sum::<usize>();
        // The rendered hit body, once made, holds the strings again but the model's answer
        // (JSON's keys and escapes add a little): counted up front so the cache's capacity
        // bounds it too.
        let body = strings - self.answer.len() + 256;
        u32::try_from(strings + body + std::mem::size_of::<Generation>() + 96).unwrap_or(u32::MAX)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Stored {
            v: CACHE_FORMAT,
            generation: self.clone(),
        })
        .unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let stored: Stored = serde_json::from_slice(bytes).ok()?;
        (stored.v == CACHE_FORMAT).then_some(stored.generation)
    }
}

impl Generation {
    /// Whether a value found in the shared cache can answer `req`: same engine, and a provider
    /// the request's plan could have asked.
    pub fn fits(&self, req: &GenerateRequest) -> bool {
        self.engine == req.engine && req.plan.iter().any(|(p, _)| *p == self.provider)
    }
}

pub(super) fn since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The answer as a named script: extraction, naming, warnings.
pub(super) fn build_generation(
    req: &GenerateRequest,
    provider: ProviderId,
    completion: Completion,
    started: Instant,
) -> Generation {
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
        engine: req.engine,
        script_name,
        provider,
        model: completion.model,
        cached: false,
        usage: completion.usage,
        warnings: all_warnings,
        latency_ms: since(started),
        answer: completion.text,
        truncated: completion.truncated,
        stop_sequence: completion.stop_sequence,
        rendered: Rendered::default(),
    }
}

/// Counts a provider's success: the generation, its duration and its tokens.
pub(super) fn record_success(
    metrics: &Metrics,
    provider: ProviderId,
    engine: Engine,
    usage: Usage,
    started: Instant,
) {
    metrics.generation_done(provider.as_str(), engine.as_str(), "success", false);
    metrics.generation_took(provider.as_str(), started.elapsed());
    metrics.tokens_used(provider.as_str(), usage.input_tokens, usage.output_tokens);
}

/// Counts a failed generation under the provider that failed last, or `none`.
pub(super) fn record_failure(metrics: &Metrics, engine: Engine, e: &GenerateError) {
    let provider = match e {
        GenerateError::Provider(p) => p.provider().as_str(),
        _ => "none",
    };
    metrics.generation_done(provider, engine.as_str(), e.code(), false);
}
