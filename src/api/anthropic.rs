//! The Anthropic-compatible API: `POST /v1/messages` (plain and streaming),
//! `POST /v1/messages/count_tokens`, and `GET /v1/models` in Anthropic's list shape, so the
//! official Anthropic SDKs and tools that take an `ANTHROPIC_BASE_URL` work unmodified.
//!
//! The same pipeline as every other generation route (auth by `x-api-key` or Bearer key, the
//! `anthropic` rate-limit class, the sanitizer, cache, breakers, fallback, metrics); only the
//! shapes differ, and they live in `messages.rs`. Errors are rendered in Anthropic's shape by the
//! request-context layer for these routes and for any `/v1` request that carries
//! `anthropic-version`.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::account::Payer;
use super::error::ApiError;
use super::json::AppJson;
use super::messages::{self, MessagesParams};
use crate::auth::Caller;
use crate::generate::StreamItem;
use crate::state::AppState;

/// The header Anthropic clients send on every request; its presence on `GET /v1/models` asks for
/// Anthropic's list shape.
pub const VERSION_HEADER: &str = "anthropic-version";

fn event(name: &'static str, data: &Value) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(data.to_string()))
}

pub async fn messages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Payer(account, models): Payer,
    headers: HeaderMap,
    AppJson(body): AppJson<MessagesParams>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let service = state.generator();
    let (params, mut warnings) = messages::to_params(service, body)?;
    let request = service.validate_as(params, &caller, account, models.as_deref())?;
    let read_cache = !super::wants_fresh(&headers);

    if !request.stream {
        let answer = service.generate(&request, read_cache, started).await?;
        let (generation, cache) = (&*answer.generation, answer.cache);
        warnings.extend(generation.warnings.iter().cloned());
        let mut resp = Json(messages::message_body(generation)).into_response();
        super::mark_answer(&mut resp, generation.provider, cache);
        super::set_warnings(&mut resp, &warnings);
        return Ok(resp);
    }

    let (stream, provider, cache) = service
        .generate_stream(&request, read_cache, started)
        .await?;
    warnings.extend(request.warnings.iter().cloned());
    // The model the answering provider is asked for (a cache hit: the plan's model for the
    // provider that produced it); the final `message_delta` carries the usage, and a plain
    // answer names the model the provider reported.
    let model = request
        .plan
        .iter()
        .find(|(p, _)| *p == provider)
        .map_or_else(|| provider.as_str().to_owned(), |(_, m)| m.clone());
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let head = messages::stream_head(&id, &model);
    let body = stream.map(|item| match item {
        StreamItem::Delta(text) => vec![messages::text_delta(&text)],
        StreamItem::Done(g) => messages::stream_tail(&g),
        StreamItem::Error(e) => {
            let api = ApiError::from(e);
            tracing::warn!(code = api.code(), cause = %api, "stream ended with an error");
            vec![(
                "error",
                messages::error_body(&api.body().message, api.status().as_u16()),
            )]
        }
    });
    let events = futures_util::stream::iter(head)
        .chain(body.flat_map(futures_util::stream::iter))
        .map(|(name, data)| event(name, &data));
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    super::mark_answer(&mut resp, provider, cache);
    super::set_warnings(&mut resp, &warnings);
    Ok(resp)
}

/// `POST /v1/messages/count_tokens`: the request is prepared like a message (model, roles,
/// blocks, the sanitizer: its text may go to a provider), then counted as it would be sent, by
/// Anthropic's tokenizer when Anthropic is the provider, else estimated.
/// `X-Spark-Token-Count` says which: `anthropic` or `estimate`.
pub async fn count_tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Payer(account, models): Payer,
    AppJson(body): AppJson<MessagesParams>,
) -> Result<Response, ApiError> {
    let service = state.generator();
    let (params, warnings) = messages::to_params(service, body)?;
    let request = service.validate_as(params, &caller, account, models.as_deref())?;
    let count = service.count_tokens(&request).await;
    let mut resp = Json(json!({"input_tokens": count.tokens})).into_response();
    let source = count.counted_by.map_or("estimate", |p| p.as_str());
    resp.headers_mut().insert(
        super::names::X_SPARK_TOKEN_COUNT,
        HeaderValue::from_static(source),
    );
    super::set_warnings(&mut resp, &warnings);
    Ok(resp)
}

/// `GET /v1/models` in Anthropic's list shape (one page holding every model).
pub fn models_list(models: Vec<(String, &'static str)>) -> Value {
    let data: Vec<Value> = models
        .into_iter()
        .map(|(id, _)| {
            json!({"type": "model", "id": id, "display_name": id,
                   "created_at": "1970-01-01T00:00:00Z"})
        })
        .collect();
    let first = data.first().map(|m| m["id"].clone()).unwrap_or(Value::Null);
    let last = data.last().map(|m| m["id"].clone()).unwrap_or(Value::Null);
    json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
}
