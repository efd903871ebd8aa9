//! `POST /api/spark/generate`: parse, call the generation service, answer as JSON or as SSE.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;

use super::json::AppJson;
use super::middleware::RequestId;
use crate::auth::Caller;
use crate::error::{ApiError, render_body};
use crate::generate::{GenerateParams, StreamItem};
use crate::state::AppState;

pub async fn generate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    AppJson(params): AppJson<GenerateParams>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let service = state.generator();
    let request = service.validate(params)?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let read_cache = !super::wants_fresh(&headers);
    let span = tracing::Span::current();

    if request.stream || wants_sse {
        let (stream, provider, cache) = service
            .generate_stream(&request, &caller, read_cache, started)
            .await?;
        span.record("provider", provider.as_str());
        span.record("cache", cache.label());
        let request_id = request_id.map(|Extension(id)| id.0).unwrap_or_default();
        let events = stream.map(move |item| Ok::<_, Infallible>(sse_event(item, &request_id)));
        let mut resp = Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response();
        let h = resp.headers_mut();
        h.insert("x-cache", HeaderValue::from_static(cache.header()));
        if let Ok(v) = HeaderValue::from_str(&provider) {
            h.insert("x-provider", v);
        }
        return Ok(resp);
    }

    let (generation, cache) = service
        .generate(&request, &caller, read_cache, started)
        .await?;
    span.record("provider", generation.provider.as_str());
    span.record("cache", cache.label());
    let provider = HeaderValue::from_str(&generation.provider)
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    Ok((
        [
            ("x-cache", HeaderValue::from_static(cache.header())),
            ("x-provider", provider),
        ],
        Json(generation),
    )
        .into_response())
}

/// API.md's SSE events: `delta` with `{"text"}`, `done` with the full body, `error` with the
/// error object.
fn sse_event(item: StreamItem, request_id: &str) -> Event {
    let event = match item {
        StreamItem::Delta(text) => Event::default()
            .event("delta")
            .json_data(serde_json::json!({ "text": text })),
        StreamItem::Done(generation) => Event::default().event("done").json_data(&*generation),
        StreamItem::Error(e) => {
            let api = ApiError::from(e);
            tracing::warn!(code = api.code(), cause = %api, "stream ended with an error");
            let body = String::from_utf8(render_body(&api.body(), request_id)).unwrap_or_default();
            Ok(Event::default().event("error").data(body))
        }
    };
    event.unwrap_or_else(|_| Event::default().event("error").data("{}"))
}
