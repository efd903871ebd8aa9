//! The OpenAI-compatible API: `POST /v1/chat/completions` (plain and streaming) and
//! `GET /v1/models`, so an unmodified OpenAI SDK pointed at the gateway works.
//!
//! The same pipeline as the Spark API (auth by Bearer key, the `openai` rate-limit class, the
//! sanitizer on the conversation, cache, breakers, metrics); only the shapes differ. Errors are
//! rendered in OpenAI's shape by the request-context layer for every `/v1/` route.

use std::convert::Infallible;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::account::Payer;
use super::chat::{ChatParams, completion_body, finish_reason, to_params, usage_body};
use super::error::ApiError;
use super::json::AppJson;
use crate::auth::Caller;
use crate::generate::StreamItem;
use crate::state::AppState;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /v1/models`: OpenAI's list, or Anthropic's when the request says `anthropic-version`.
pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let models = state.generator().models();
    if headers.contains_key(super::anthropic::VERSION_HEADER) {
        return Json(super::anthropic::models_list(models));
    }
    let data: Vec<Value> = models
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Payer(account, models): Payer,
    headers: HeaderMap,
    AppJson(chat): AppJson<ChatParams>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let service = state.generator();
    let request = service.validate_as(
        to_params(service, chat)?,
        &caller,
        account,
        models.as_deref(),
    )?;
    let read_cache = !super::wants_fresh(&headers);

    if !request.stream {
        let answer = service.generate(&request, read_cache, started).await?;
        let (generation, cache) = (&*answer.generation, answer.cache);
        let mut resp = Json(completion_body(generation, unix_now())).into_response();
        super::mark_answer(&mut resp, generation.provider, cache);
        return Ok(resp);
    }

    let (stream, provider, cache) = service
        .generate_stream(&request, read_cache, started)
        .await?;
    // Until the final chunk names the model that answered, chunks name the provider.
    let name = provider.as_str();
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = unix_now();
    let chunk = move |model: &str, delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let first = chunk(
        name,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    );
    let head = futures_util::stream::once(async move { vec![first.to_string()] });
    let body = stream.map(move |item| match item {
        StreamItem::Delta(text) => vec![chunk(name, json!({"content": text}), Value::Null).to_string()],
        StreamItem::Done(g) => {
            let mut last = chunk(&g.model, json!({}), json!(finish_reason(&g)));
            let mut usage_chunk = last.clone();
            usage_chunk["choices"] = json!([]);
            usage_chunk["usage"] = usage_body(&g);
            last["usage"] = Value::Null;
            vec![last.to_string(), usage_chunk.to_string(), "[DONE]".to_owned()]
        }
        StreamItem::Error(e) => {
            let api = ApiError::from(e);
            vec![json!({"error": openai_error(&api.body().message, api.code(), api.status().as_u16())}).to_string()]
        }
    });
    let events = head
        .chain(body)
        .flat_map(futures_util::stream::iter)
        .map(|data| Ok::<_, Infallible>(Event::default().data(data)));
    let mut resp = Sse::new(events).into_response();
    super::mark_answer(&mut resp, provider, cache);
    Ok(resp)
}

/// OpenAI's error object: `{"message", "type", "code", "param"}`, the type chosen the way
/// OpenAI's own API chooses it for the status, so SDKs raise the matching exception.
pub fn openai_error(message: &str, code: &str, status: u16) -> Value {
    let kind = match status {
        // A spent budget is OpenAI's quota error (the SDK raises RateLimitError for the 429).
        429 if code == "budget_exceeded" => "insufficient_quota",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"message": message, "type": kind, "code": code, "param": null})
}
