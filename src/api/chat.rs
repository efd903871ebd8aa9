//! The OpenAI chat translation: a `/v1/chat/completions` body to the generation service's fields,
//! and a [`Generation`] back to OpenAI's completion and chunk shapes.
//!
//! Kept next to `openai.rs` because it is wire format, not business logic: the model picks the
//! provider (`claude-*` Anthropic, `gpt-*`/`o*` OpenAI, `simulator`, `spark-auto` the fallback
//! order), system and developer messages become the caller's system text (sanitized like the
//! prompt, and appended to the engine prompt unless the caller may replace it), and the
//! conversation becomes the prompt.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::generate::{GenerateError, GenerateParams, GenerateService, Generation, ProviderChoice};

/// `POST /v1/chat/completions` as OpenAI SDKs send it. Fields this gateway does not use (`n`,
/// `top_p`, `user`, …) are accepted and ignored, as OpenAI-compatible servers do.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct ChatParams {
    pub model: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    /// A string or an array of up to four strings.
    #[schema(value_type = Option<Object>)]
    pub stop: Option<Value>,
    pub stream: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct ChatMessage {
    pub role: String,
    /// A string, or an array of parts of which the `text` ones are read.
    #[schema(value_type = Option<Object>)]
    pub content: Option<Value>,
}

fn message_text(content: &Option<Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn invalid(msg: &str) -> GenerateError {
    GenerateError::Invalid(msg.to_owned())
}

/// The generation fields a chat body asks for.
pub fn to_params(
    service: &GenerateService,
    chat: ChatParams,
) -> Result<GenerateParams, GenerateError> {
    let (provider, model) = route_model(service, chat.model)?;
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
            _ => {
                return Err(invalid(
                    "a message role is not supported; expected system, developer, user or assistant",
                ));
            }
        }
    }
    if !turns.iter().any(|(who, _)| *who == "User") {
        return Err(invalid("messages must hold a user message"));
    }
    Ok(GenerateParams {
        prompt: Some(conversation_prompt(&turns)),
        engine: None,
        provider: Some(provider.to_owned()),
        model,
        max_tokens: chat.max_completion_tokens.or(chat.max_tokens),
        temperature: chat.temperature,
        stream: chat.stream,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        stop: stop_list(chat.stop)?,
    })
}

/// OpenAI's `stop`: null, a string, or an array of strings.
fn stop_list(stop: Option<Value>) -> Result<Vec<String>, GenerateError> {
    match stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(invalid("stop must be a string or an array of strings")),
            })
            .collect(),
        Some(_) => Err(invalid("stop must be a string or an array of strings")),
    }
}

/// The `provider` and `model` fields a compatible API's `model` names: `spark-auto` the fallback
/// order, `simulator` the simulator, any other allowed model its provider. Shared by both
/// compatible APIs, so a model routes the same way on either.
pub fn route_model(
    service: &GenerateService,
    model: Option<String>,
) -> Result<(&'static str, Option<String>), GenerateError> {
    let model = model
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| invalid("model is required"))?;
    Ok(match service.provider_for_model(&model)? {
        ProviderChoice::Auto => ("auto", None),
        ProviderChoice::Only(p) if model == "simulator" => (p.as_str(), None),
        ProviderChoice::Only(p) => (p.as_str(), Some(model)),
    })
}

/// A conversation as one prompt: a lone user message as it is, several turns labelled by speaker.
/// Shared by both compatible APIs, so the same conversation hits the same cache entry.
pub fn conversation_prompt(turns: &[(&str, String)]) -> String {
    match turns {
        [("User", only)] => only.clone(),
        _ => turns
            .iter()
            .map(|(who, text)| format!("{who}: {text}"))
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

pub fn usage_body(g: &Generation) -> Value {
    json!({
        "prompt_tokens": g.usage.input_tokens,
        "completion_tokens": g.usage.output_tokens,
        "total_tokens": g.usage.input_tokens + g.usage.output_tokens,
    })
}

pub fn finish_reason(g: &Generation) -> &'static str {
    if g.truncated { "length" } else { "stop" }
}

pub fn completion_body(g: &Generation, created: u64) -> Value {
    json!({
        "id": format!("chatcmpl-{}", g.id.trim_start_matches("gen_")),
        "object": "chat.completion",
        "created": created,
        "model": g.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": g.answer, "refusal": null},
            "logprobs": null,
            "finish_reason": finish_reason(g),
        }],
        "usage": usage_body(g),
    })
}
