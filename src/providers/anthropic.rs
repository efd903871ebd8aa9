//! Anthropic's Messages API over plain reqwest.
//!
//! No Rust SDK is official and the community ones pin an older reqwest (see CRATES.md), so the
//! wire types below are ours (sending, errors and streams are `http.rs`'s): `POST {base}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`, a `system` string, one user message, and an answer made of
//! content blocks whose `text` blocks are joined. The key lives in a `SecretString` and is exposed
//! only while the header is built.

use serde::{Deserialize, Serialize};

use super::http::{
    HttpProvider, Step, WireFormat, completion_stream, error_kind, json_error_class,
};
use super::{Completion, CompletionRequest, CompletionStream, ProviderError, ProviderId, Usage};

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Anthropic's Messages API as a provider.
pub type Anthropic = HttpProvider<Messages>;

/// The Messages API wire format.
pub struct Messages;

const P: ProviderId = ProviderId::Anthropic;

impl WireFormat for Messages {
    const ID: ProviderId = P;

    fn url(base: &str) -> String {
        format!("{base}/v1/messages")
    }

    fn request(
        builder: reqwest::RequestBuilder,
        key: &str,
        req: &CompletionRequest,
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let body = MessagesRequest {
            model: &req.model,
            max_tokens: req.max_tokens,
            system: &req.system,
            messages: [Message {
                role: "user",
                content: &req.prompt,
            }],
            temperature: req.temperature,
            stop_sequences: &req.stop,
            stream,
        };
        builder
            .header("x-api-key", key)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&body)
    }

    fn parse(bytes: &[u8]) -> Result<Completion, ProviderError> {
        parse_response(bytes)
    }

    fn count_url(base: &str) -> Option<String> {
        Some(format!("{base}/v1/messages/count_tokens"))
    }

    /// The Messages body without the generation settings, as the counting endpoint takes it.
    fn count_request(
        builder: reqwest::RequestBuilder,
        key: &str,
        req: &CompletionRequest,
    ) -> reqwest::RequestBuilder {
        let body = CountRequest {
            model: &req.model,
            system: &req.system,
            messages: [Message {
                role: "user",
                content: &req.prompt,
            }],
        };
        builder
            .header("x-api-key", key)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&body)
    }

    fn stream(
        events: impl futures_util::Stream<Item = Result<super::sse::SseEvent, super::sse::SseError>>
        + Send
        + 'static,
    ) -> CompletionStream {
        stream_events(events)
    }
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    system: &'a str,
    messages: [Message<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    stream: bool,
}

#[derive(Serialize)]
struct CountRequest<'a> {
    model: &'a str,
    system: &'a str,
    messages: [Message<'a>; 1],
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct MessagesResponse {
    model: String,
    content: Vec<ContentBlock>,
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    usage: ApiUsage,
}

#[derive(Deserialize)]
struct ContentBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ApiUsage {
    input_tokens: u64,
    output_tokens: u64,
}

/// The Messages API's stream events: `content_block_delta` text becomes deltas,
/// `message_start` and `message_delta` carry the model and usage, `message_stop` ends it, `ping`
/// and the block markers are skipped, and an `error` event ends it with a typed error.
fn stream_events(
    events: impl futures_util::Stream<Item = Result<super::sse::SseEvent, super::sse::SseError>>
    + Send
    + 'static,
) -> CompletionStream {
    completion_stream(P, events, "message_stop", |ev, st| {
        let data: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
        match ev.event.as_str() {
            "message_start" => {
                let m = &data["message"];
                st.model = m["model"].as_str().unwrap_or_default().to_owned();
                st.usage.input_tokens = m["usage"]["input_tokens"].as_u64().unwrap_or(0);
                Step::Skip
            }
            "content_block_delta" if data["delta"]["type"] == "text_delta" => Step::Emit(
                data["delta"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            "message_delta" => {
                if let Some(out) = data["usage"]["output_tokens"].as_u64() {
                    st.usage.output_tokens = out;
                }
                st.truncated |= data["delta"]["stop_reason"] == "max_tokens";
                if data["delta"]["stop_reason"] == "stop_sequence" {
                    st.stop_sequence = data["delta"]["stop_sequence"].as_str().map(str::to_owned);
                }
                Step::Skip
            }
            "message_stop" => Step::Finish,
            "error" => {
                let status = if data["error"]["type"] == "overloaded_error" {
                    529
                } else {
                    500
                };
                Step::Fail(ProviderError::Status {
                    provider: P,
                    status,
                    kind: error_kind(ev.data.as_bytes()),
                    retry_after: None,
                })
            }
            _ => Step::Skip,
        }
    })
}

fn parse_response(bytes: &[u8]) -> Result<Completion, ProviderError> {
    let parsed: MessagesResponse =
        serde_json::from_slice(bytes).map_err(|e| ProviderError::Malformed {
            provider: P,
            // serde's message names the field and position, never the body's content.
            reason: format!("not a Messages API response ({})", json_error_class(&e)),
        })?;
    let text: String = parsed
        .content
        .iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text.as_deref())
        .collect();
    if text.trim().is_empty() {
        return Err(ProviderError::Malformed {
            provider: P,
            reason: "no text content block".into(),
        });
    }
    Ok(Completion {
        text,
        model: parsed.model,
        usage: Usage {
            input_tokens: parsed.usage.input_tokens,
            output_tokens: parsed.usage.output_tokens,
        },
        truncated: parsed.stop_reason.as_deref() == Some("max_tokens"),
        stop_sequence: parsed
            .stop_sequence
            .filter(|_| parsed.stop_reason.as_deref() == Some("stop_sequence")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_text_blocks_and_reads_usage_and_stop_reason() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5",
            "content":[{"type":"text","text":"a"},{"type":"tool_use","id":"t","name":"x","input":{}},{"type":"text","text":"b"}],
            "stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":4}}"#;
        let c = parse_response(body).unwrap();
        assert_eq!(c.text, "ab");
        assert_eq!(
            c.usage,
            Usage {
                input_tokens: 3,
                output_tokens: 4
            }
        );
        assert!(c.truncated);
    }

    #[test]
    fn a_stop_sequence_is_reported_only_when_it_stopped_the_answer() {
        let body = br#"{"model":"m","content":[{"type":"text","text":"a"}],
            "stop_reason":"stop_sequence","stop_sequence":"}","usage":{"input_tokens":1,"output_tokens":1}}"#;
        assert_eq!(
            parse_response(body).unwrap().stop_sequence.as_deref(),
            Some("}")
        );
        let body = br#"{"model":"m","content":[{"type":"text","text":"a"}],
            "stop_reason":"end_turn","stop_sequence":"}","usage":{"input_tokens":1,"output_tokens":1}}"#;
        assert_eq!(parse_response(body).unwrap().stop_sequence, None);
    }

    #[test]
    fn empty_or_foreign_bodies_are_malformed() {
        for body in [
            &br#"{"content":[]}"#[..],
            b"not json",
            br#"{"model":"m","content":[],"usage":{"input_tokens":1,"output_tokens":0}}"#,
        ] {
            assert!(matches!(
                parse_response(body),
                Err(ProviderError::Malformed { .. })
            ));
        }
    }
}
