//! The Anthropic Messages translation: a `/v1/messages` body to the generation service's fields,
//! and a [`Generation`] back to Anthropic's message and stream-event shapes.
//!
//! Wire format, kept apart from the handlers in `anthropic.rs` and from business logic: the model
//! picks the provider exactly as on the OpenAI-compatible API (`claude-*` Anthropic, other allowed
//! models their provider, `spark-auto` the fallback order), so an Anthropic client reaches every
//! provider; `system` becomes the caller's system text (sanitized like the prompt, appended to the
//! engine prompt unless the caller may replace it) and the conversation becomes the prompt.
//!
//! Fields the gateway cannot honour on every provider (`top_p`, `top_k`, `tools`, `thinking`, …)
//! are accepted and ignored, and named in the `X-Spark-Warnings` header.
//! Only names from Anthropic's documented list are ever echoed: a field name a caller invents is
//! counted, never repeated, since caller text never becomes a header.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::chat::{conversation_prompt, route_model};
use crate::generate::{GenerateError, GenerateParams, GenerateService, Generation};

/// `POST /v1/messages` (and `/v1/messages/count_tokens`) as Anthropic SDKs send it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct MessagesParams {
    pub model: Option<String>,
    /// A string, or an array of blocks of which the `text` ones are read.
    #[schema(value_type = Option<Object>)]
    pub system: Option<Value>,
    pub messages: Option<Vec<MessageParam>>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    /// Up to four; sent to whichever provider answers.
    pub stop_sequences: Option<Vec<String>>,
    pub stream: Option<bool>,
    /// Accepted; `metadata.user_id` is not forwarded (the gateway knows its caller by key).
    #[allow(
        dead_code,
        reason = "accepted so it is not reported as ignored, and never forwarded"
    )]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Every other field: ignored, and named in a warning.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct MessageParam {
    pub role: String,
    /// A string, or an array of content blocks; only `text` blocks are supported.
    #[schema(value_type = Object)]
    pub content: Value,
}

/// Anthropic's documented request fields that this gateway ignores. Only these names are ever
/// repeated in a warning.
const KNOWN_IGNORED: &[&str] = &[
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
];

fn invalid(msg: &str) -> GenerateError {
    GenerateError::Invalid(msg.to_owned())
}

/// The text of a `system` value or of a message's `content`: a string, or the `text` blocks of an
/// array. Any other block (image, document, tool use or result) is refused rather than dropped,
/// since answering without it would answer a different question.
fn blocks_text(value: &Value, what: &str) -> Result<String, GenerateError> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for b in blocks {
                match (b["type"].as_str(), b["text"].as_str()) {
                    (Some("text"), Some(text)) => parts.push(text),
                    _ => {
                        return Err(GenerateError::Invalid(format!(
                            "{what} may hold only text blocks on this gateway"
                        )));
                    }
                }
            }
            Ok(parts.join("\n"))
        }
        _ => Err(GenerateError::Invalid(format!(
            "{what} must be a string or an array of text blocks"
        ))),
    }
}

/// A request's fields as the generation service reads them, with the warnings for what was
/// ignored.
pub fn to_params(
    service: &GenerateService,
    params: MessagesParams,
) -> Result<(GenerateParams, Vec<String>), GenerateError> {
    let (provider, model) = route_model(service, params.model)?;
    let messages = params.messages.unwrap_or_default();
    if messages.is_empty() {
        return Err(invalid("messages must hold at least one message"));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for m in &messages {
        let who = match m.role.as_str() {
            "user" => "User",
            "assistant" => "Assistant",
            _ => return Err(invalid("a message role must be user or assistant")),
        };
        turns.push((who, blocks_text(&m.content, "message content")?));
    }
    if !turns.iter().any(|(who, _)| *who == "User") {
        return Err(invalid("messages must hold a user message"));
    }
    let system = match &params.system {
        None => None,
        Some(v) => Some(blocks_text(v, "system")?).filter(|s| !s.trim().is_empty()),
    };
    let warnings = ignored_fields(&params.other);
    Ok((
        GenerateParams {
            prompt: Some(conversation_prompt(&turns)),
            engine: None,
            provider: Some(provider.to_owned()),
            model,
            max_tokens: params.max_tokens,
            temperature: params.temperature,
            stream: params.stream,
            system,
            stop: params.stop_sequences.unwrap_or_default(),
        },
        warnings,
    ))
}

/// One warning naming the documented fields that were ignored, and counting the rest.
fn ignored_fields(other: &Map<String, Value>) -> Vec<String> {
    if other.is_empty() {
        return Vec::new();
    }
    let known: Vec<&str> = KNOWN_IGNORED
        .iter()
        .copied()
        .filter(|k| other.contains_key(*k))
        .collect();
    let unknown = other.len() - known.len();
    let mut parts = Vec::new();
    if !known.is_empty() {
        parts.push(known.join(", "));
    }
    if unknown > 0 {
        parts.push(format!("{unknown} unrecognised field(s)"));
    }
    vec![format!(
        "ignored by this gateway (not supported on every provider): {}",
        parts.join("; ")
    )]
}

/// Anthropic's `stop_reason` for a finished generation.
pub fn stop_reason(g: &Generation) -> &'static str {
    if g.truncated {
        "max_tokens"
    } else if g.stop_sequence.is_some() {
        "stop_sequence"
    } else {
        "end_turn"
    }
}

fn usage(g: &Generation) -> Value {
    json!({"input_tokens": g.usage.input_tokens, "output_tokens": g.usage.output_tokens})
}

/// A message id from the generation's own, so logs and answers can be matched.
pub fn message_id(g: &Generation) -> String {
    format!("msg_{}", g.id.trim_start_matches("gen_"))
}

/// The whole answer as Anthropic's `message` object.
pub fn message_body(g: &Generation) -> Value {
    json!({
        "id": message_id(g),
        "type": "message",
        "role": "assistant",
        "model": g.model,
        "content": [{"type": "text", "text": g.answer}],
        "stop_reason": stop_reason(g),
        "stop_sequence": g.stop_sequence,
        "usage": usage(g),
    })
}

/// The events that open a stream: the message (usage still zero: it arrives with the last
/// event), its one text block, and a ping, in the order Anthropic sends them.
pub fn stream_head(id: &str, model: &str) -> Vec<(&'static str, Value)> {
    vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
    ]
}

pub fn text_delta(text: &str) -> (&'static str, Value) {
    (
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": text}}),
    )
}

/// The events that close a stream: the block, the stop reason with the usage (input tokens too,
/// which were not known at `message_start`), and the end.
pub fn stream_tail(g: &Generation) -> Vec<(&'static str, Value)> {
    vec![
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(g), "stop_sequence": g.stop_sequence},
                   "usage": usage(g)}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]
}

/// Anthropic's error object, `{"type": "error", "error": {"type", "message"}}`, its type chosen
/// from the status the way Anthropic's API chooses it, so SDKs raise the matching exception.
pub fn error_body(message: &str, status: u16) -> Value {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_blocks_are_read_and_other_blocks_refused() {
        let v = json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        assert_eq!(blocks_text(&v, "x").unwrap(), "a\nb");
        assert_eq!(blocks_text(&json!("plain"), "x").unwrap(), "plain");
        let image = json!([{"type": "image", "source": {}}]);
        assert!(blocks_text(&image, "x").is_err());
        assert!(blocks_text(&json!(7), "x").is_err());
    }

    #[test]
    fn only_documented_field_names_are_repeated() {
        let mut other = Map::new();
        other.insert("top_k".into(), json!(5));
        other.insert("x-evil\r\nSet-Cookie: a".into(), json!(1));
        let w = ignored_fields(&other);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("top_k"), "{w:?}");
        assert!(w[0].contains("1 unrecognised field(s)"), "{w:?}");
        assert!(!w[0].contains("evil"), "{w:?}");
        assert!(ignored_fields(&Map::new()).is_empty());
    }

    #[test]
    fn error_types_follow_anthropics_statuses() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (429, "rate_limit_error"),
            (503, "overloaded_error"),
            (502, "api_error"),
        ] {
            assert_eq!(error_body("m", status)["error"]["type"], kind, "{status}");
        }
        assert_eq!(error_body("m", 400)["type"], "error");
    }
}
