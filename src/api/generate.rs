//! `POST /api/spark/generate`: parse, call the generation service, answer.

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::json::AppJson;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::generate::GenerateParams;
use crate::state::AppState;

pub async fn generate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
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
    if request.stream || wants_sse {
        return Err(ApiError::InvalidRequest(
            "streaming responses are not available on this gateway version; send stream: false"
                .into(),
        ));
    }
    // `Cache-Control: no-cache` asks for a fresh answer (which is still stored).
    let read_cache = !headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        });
    let (generation, cache) = service
        .generate(&request, &caller, read_cache, started)
        .await?;
    let span = tracing::Span::current();
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
