//! The LLM providers behind one trait: Anthropic, OpenAI and the built-in simulator.
//!
//! The last step of DESIGN.md's request path. Each implementation turns a [`CompletionRequest`]
//! into its provider's wire format and back, and maps every way an upstream can fail into one
//! typed [`ProviderError`] that keeps the status, `retry-after` and whether a retry could help.
//! Retry, breaker and fallback policy does not live here: providers make exactly one attempt, so
//! the resilience layer above them owns every decision about trying again.

pub mod anthropic;
pub mod http;
pub mod openai;
pub mod ratelimit_headers;
pub mod simulator;
pub mod sse;

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use async_trait::async_trait;

use secrecy::SecretString;

use crate::engine::Engine;

/// One upstream provider's connection settings. Present only when its API key is set.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub api_key: SecretString,
    pub base_url: String,
    /// The models a caller may ask for; the first one is used when the request names none.
    pub models: Vec<String>,
}

/// The providers the gateway knows. Also the value of every `provider` label and field.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ProviderId {
    Anthropic,
    OpenAi,
    Simulator,
}

impl ProviderId {
    pub const ALL: [ProviderId; 3] = [
        ProviderId::Anthropic,
        ProviderId::OpenAi,
        ProviderId::Simulator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderId::Anthropic => "anthropic",
            ProviderId::OpenAi => "openai",
            ProviderId::Simulator => "simulator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One completion to ask for: already validated, sanitized and resolved to a model.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    pub model: String,
    pub system: String,
    pub prompt: String,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    /// Sequences at which the model stops (Anthropic's `stop_sequences`, OpenAI's `stop`);
    /// validated to at most [`MAX_STOP_SEQUENCES`], which every provider accepts.
    pub stop: Vec<String>,
    /// Real providers learn the engine from the system prompt; the simulator reads it here.
    pub engine: Engine,
    /// This attempt's time limit: the per-attempt timeout, or less when the request's deadline
    /// is nearer.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A provider's answer.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    /// The model that answered, as the provider reports it.
    pub model: String,
    pub usage: Usage,
    /// True when the provider stopped at `max_tokens`, so the code is likely cut off.
    pub truncated: bool,
    /// The stop sequence the answer ended at, when the provider says so (Anthropic and the
    /// simulator do; OpenAI's `finish_reason: "stop"` does not tell a sequence from the end).
    pub stop_sequence: Option<String>,
}

/// The most stop sequences a request may carry: OpenAI's limit, so a request can fall back.
pub const MAX_STOP_SEQUENCES: usize = 4;

/// Every way one upstream attempt can fail. Upstream bodies are never kept: at most the
/// provider's short machine-readable error type, which is safe to log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: could not connect")]
    Connect { provider: ProviderId },
    #[error("{provider}: no answer within {timeout:?}")]
    Timeout {
        provider: ProviderId,
        timeout: Duration,
    },
    #[error("{provider}: HTTP {status} ({kind})")]
    Status {
        provider: ProviderId,
        status: u16,
        /// The provider's error type (`overloaded_error`, `rate_limit_exceeded`, …) or `unknown`.
        kind: String,
        retry_after: Option<Duration>,
    },
    #[error("{provider}: malformed answer: {reason}")]
    Malformed {
        provider: ProviderId,
        reason: String,
    },
    #[error("{provider}: transport error: {reason}")]
    Transport {
        provider: ProviderId,
        reason: String,
    },
}

impl ProviderError {
    pub fn provider(&self) -> ProviderId {
        match self {
            ProviderError::Connect { provider }
            | ProviderError::Timeout { provider, .. }
            | ProviderError::Status { provider, .. }
            | ProviderError::Malformed { provider, .. }
            | ProviderError::Transport { provider, .. } => *provider,
        }
    }

    /// The upstream HTTP status, when the upstream answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the same request could succeed if tried again (here or at another provider).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::Malformed { .. }
            | ProviderError::Transport { .. } => true,
            ProviderError::Status { status, .. } => {
                matches!(status, 408 | 409 | 425 | 429) || *status >= 500
            }
        }
    }

    /// The provider refused our key or endpoint (401, 403, 404): nobody can be served by it
    /// until an operator acts, so the request falls back at once and health says so.
    pub fn is_misconfigured(&self) -> bool {
        matches!(self, ProviderError::Status { status, .. } if matches!(status, 401 | 403 | 404))
    }

    /// Whether the failure says the provider is unwell (counts against its circuit breaker).
    /// A 4xx other than 408/429 is the request's or our configuration's fault, not an outage.
    pub fn is_provider_fault(&self) -> bool {
        self.is_retryable()
    }

    /// A short, bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connect { .. } => "connect",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Malformed { .. } => "malformed",
            ProviderError::Transport { .. } => "transport",
            ProviderError::Status { status, .. } => match status {
                400 | 404 | 413 | 422 => "bad_request",
                401 | 403 => "auth",
                429 => "rate_limited",
                529 => "overloaded",
                s if *s >= 500 => "server_error",
                _ => "client_error",
            },
        }
    }
}

/// One item of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Text as the model produced it.
    Delta(String),
    /// The end: what the non-streaming answer would report besides the text.
    Finished {
        model: String,
        usage: Usage,
        truncated: bool,
        stop_sequence: Option<String>,
    },
}

/// A streamed completion: deltas, then `Finished`, or an error that ends it.
pub type CompletionStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// A provider: one attempt at one completion.
#[async_trait]
pub trait Provider: Send + Sync {
    fn id(&self) -> ProviderId;
    /// The models this provider accepts; the first is its default.
    fn models(&self) -> &[String];
    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ProviderError>;
    /// Starts a streamed completion. Returns once the upstream accepted the request (status and
    /// headers); an error here happened before any byte of the answer.
    async fn stream(&self, req: &CompletionRequest) -> Result<CompletionStream, ProviderError>;
    /// Counts the input tokens of `req` with the provider's own tokenizer, when the provider
    /// offers that (Anthropic does); `None` when it does not, and the caller estimates.
    async fn count_tokens(&self, _req: &CompletionRequest) -> Option<Result<u64, ProviderError>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> ProviderError {
        ProviderError::Status {
            provider: ProviderId::Anthropic,
            status: s,
            kind: "x".into(),
            retry_after: None,
        }
    }

    #[test]
    fn classification_follows_the_design_rules() {
        for s in [429, 500, 502, 503, 529] {
            assert!(status(s).is_retryable(), "{s}");
            assert!(status(s).is_provider_fault(), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(!status(s).is_retryable(), "{s}");
            assert!(!status(s).is_provider_fault(), "{s}");
        }
        assert_eq!(status(529).kind(), "overloaded");
        assert!(
            ProviderError::Connect {
                provider: ProviderId::OpenAi
            }
            .is_retryable()
        );
    }

    #[test]
    fn error_kind_keeps_identifiers_and_drops_prose() {
        assert_eq!(
            http::error_kind(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "overloaded_error"
        );
        assert_eq!(
            http::error_kind(
                br#"{"error":{"message":"m","type":"requests","code":"rate_limit_exceeded"}}"#
            ),
            "rate_limit_exceeded"
        );
        assert_eq!(
            http::error_kind(br#"{"error":{"type":"your prompt was: secret stuff"}}"#),
            "unknown"
        );
        assert_eq!(http::error_kind(b"<html>bad gateway</html>"), "unknown");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "1".parse().unwrap());
        assert_eq!(http::retry_after(&h), Some(Duration::from_secs(1)));
        h.insert("retry-after", "0.5".parse().unwrap());
        assert_eq!(http::retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(http::retry_after(&h), Some(Duration::ZERO));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(http::retry_after(&h), None);
    }
}
