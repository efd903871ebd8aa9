//! OpenAI Chat Completions (and any server that speaks it) over plain reqwest, with
//! async-openai's request and response types.
//!
//! async-openai's own client is not used on this path: it retries 429/5xx by itself (honouring an
//! unbounded `Retry-After`) and hides response headers, while retry policy and the breaker belong
//! to the gateway and need the status and `retry-after` of every attempt (CRATES.md). Its types
//! still give us a checked wire format.

use super::http::{
    HttpProvider, Step, WireFormat, completion_stream, error_kind, json_error_class,
};
use super::{Completion, CompletionRequest, CompletionStream, ProviderError, ProviderId, Usage};
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequest, CreateChatCompletionResponse,
    FinishReason, StopConfiguration,
};

/// OpenAI Chat Completions as a provider.
pub type OpenAi = HttpProvider<ChatCompletions>;

/// The Chat Completions wire format.
pub struct ChatCompletions;

const P: ProviderId = ProviderId::OpenAi;

impl WireFormat for ChatCompletions {
    const ID: ProviderId = P;

    fn url(base: &str) -> String {
        format!("{base}/chat/completions")
    }

    /// Streaming asks for usage in the last chunk.
    fn request(
        builder: reqwest::RequestBuilder,
        key: &str,
        req: &CompletionRequest,
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let mut body = serde_json::to_value(build_request(req)).unwrap_or_default();
        if stream {
            body["stream"] = serde_json::Value::Bool(true);
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        builder.bearer_auth(key).json(&body)
    }

    fn parse(bytes: &[u8]) -> Result<Completion, ProviderError> {
        parse_response(bytes)
    }

    fn stream(
        events: impl futures_util::Stream<Item = Result<super::sse::SseEvent, super::sse::SseError>>
        + Send
        + 'static,
    ) -> CompletionStream {
        stream_events(events)
    }
}

/// OpenAI's reasoning models (o-series, gpt-5) reject `max_tokens` and `temperature`; everything
/// else, including most OpenAI-compatible servers, still expects `max_tokens`.
fn is_reasoning_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    m.starts_with("gpt-5")
        || (m.starts_with('o') && m[1..].starts_with(|c: char| c.is_ascii_digit()))
}

#[expect(
    deprecated,
    reason = "max_tokens is deprecated by OpenAI but is what non-reasoning models and compatible servers read"
)]
pub(crate) fn build_request(req: &CompletionRequest) -> CreateChatCompletionRequest {
    let reasoning = is_reasoning_model(&req.model);
    CreateChatCompletionRequest {
        model: req.model.clone(),
        messages: vec![
            ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage::from(
                req.system.as_str(),
            )),
            ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage::from(
                req.prompt.as_str(),
            )),
        ],
        max_tokens: (!reasoning).then_some(req.max_tokens),
        max_completion_tokens: reasoning.then_some(req.max_tokens),
        temperature: if reasoning { None } else { req.temperature },
        stop: (!req.stop.is_empty()).then(|| StopConfiguration::StringArray(req.stop.clone())),
        stream: Some(false),
        ..Default::default()
    }
}

/// `chat.completion.chunk`s: `delta.content` becomes deltas, the model, `finish_reason` and
/// the final usage chunk are noted, an `error` object ends the stream, and `data: [DONE]`
/// finishes it.
fn stream_events(
    events: impl futures_util::Stream<Item = Result<super::sse::SseEvent, super::sse::SseError>>
    + Send
    + 'static,
) -> CompletionStream {
    completion_stream(P, events, "[DONE]", |ev, st| {
        if ev.data.trim() == "[DONE]" {
            return Step::Finish;
        }
        let Ok(chunk) = serde_json::from_str::<serde_json::Value>(&ev.data) else {
            return Step::Fail(ProviderError::Malformed {
                provider: P,
                reason: "a chunk is not JSON".into(),
            });
        };
        if chunk.get("error").is_some() {
            return Step::Fail(ProviderError::Status {
                provider: P,
                status: 500,
                kind: error_kind(ev.data.as_bytes()),
                retry_after: None,
            });
        }
        if let Some(m) = chunk["model"].as_str() {
            st.model = m.to_owned();
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            st.usage = Usage {
                input_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
            };
        }
        let choice = &chunk["choices"][0];
        st.truncated |= choice["finish_reason"] == "length";
        match choice["delta"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            Some(text) => Step::Emit(text.to_owned()),
            None => Step::Skip,
        }
    })
}

fn parse_response(bytes: &[u8]) -> Result<Completion, ProviderError> {
    let parsed: CreateChatCompletionResponse =
        serde_json::from_slice(bytes).map_err(|e| ProviderError::Malformed {
            provider: P,
            reason: format!("not a chat completion ({})", json_error_class(&e)),
        })?;
    let choice = parsed
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Malformed {
            provider: P,
            reason: "no choices".into(),
        })?;
    let text = choice.message.content.unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ProviderError::Malformed {
            provider: P,
            reason: "empty message content".into(),
        });
    }
    let usage = parsed.usage.map_or(Usage::default(), |u| Usage {
        input_tokens: u64::from(u.prompt_tokens),
        output_tokens: u64::from(u.completion_tokens),
    });
    Ok(Completion {
        text,
        model: parsed.model,
        usage,
        truncated: choice.finish_reason == Some(FinishReason::Length),
        stop_sequence: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;

    fn req(model: &str) -> CompletionRequest {
        CompletionRequest {
            model: model.into(),
            system: "sys".into(),
            prompt: "hi".into(),
            max_tokens: 100,
            temperature: Some(0.2),
            stop: Vec::new(),
            engine: Engine::Unity,
            timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn chat_models_get_max_tokens_and_reasoning_models_max_completion_tokens() {
        let v = serde_json::to_value(build_request(&req("gpt-4o-mini"))).unwrap();
        assert_eq!(v["max_tokens"], 100);
        assert!(v.get("max_completion_tokens").is_none());
        assert!((v["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][1]["role"], "user");
        assert_eq!(v["messages"][1]["content"], "hi");

        let v = serde_json::to_value(build_request(&req("o4-mini"))).unwrap();
        assert_eq!(v["max_completion_tokens"], 100);
        assert!(v.get("max_tokens").is_none());
        assert!(v.get("temperature").is_none());
        assert!(!is_reasoning_model("omni-custom"));
    }

    #[test]
    fn parses_content_usage_and_length_finish() {
        let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o-mini",
          "choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"length"}],
          "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        let c = parse_response(body).unwrap();
        assert_eq!(c.text, "hello");
        assert_eq!(c.usage.output_tokens, 7);
        assert!(c.truncated);
        assert!(
            parse_response(
                br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[]}"#
            )
            .is_err()
        );
    }
}
