//! `POST /api/spark/generate`: parse, call the generation service, answer as JSON or as SSE.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;

use super::account::Payer;
use super::error::{ApiError, render_body};
use super::json::AppJson;
use super::middleware::RequestId;
use crate::auth::Caller;
use crate::generate::{GenerateParams, Generation, StreamItem};
use crate::state::AppState;

/// The 200 body of `POST /api/spark/generate` (API.md), rendered from the domain value.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerationBody<'a> {
    id: &'a str,
    code: &'a str,
    language: &'static str,
    engine: &'static str,
    script_name: &'a str,
    file_name: &'a str,
    provider: &'static str,
    model: &'a str,
    cached: bool,
    usage: UsageBody,
    warnings: &'a [String],
    latency_ms: u64,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageBody {
    input_tokens: u64,
    output_tokens: u64,
}

impl<'a> From<&'a Generation> for GenerationBody<'a> {
    fn from(g: &'a Generation) -> Self {
        GenerationBody {
            id: &g.id,
            code: &g.code,
            language: g.engine.language(),
            engine: g.engine.as_str(),
            script_name: &g.script_name,
            file_name: &g.file_name,
            provider: g.provider.as_str(),
            model: &g.model,
            cached: g.cached,
            usage: UsageBody {
                input_tokens: g.usage.input_tokens,
                output_tokens: g.usage.output_tokens,
            },
            warnings: &g.warnings,
            latency_ms: g.latency_ms,
        }
    }
}

pub async fn generate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Payer(account, models): Payer,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    AppJson(params): AppJson<GenerateParams>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let service = state.generator();
    let request = service.validate_as(params, &caller, account, models.as_deref())?;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let read_cache = !super::wants_fresh(&headers);

    if request.stream || wants_sse {
        let (stream, provider, cache) = service
            .generate_stream(&request, read_cache, started)
            .await?;
        let request_id = request_id.map(|Extension(id)| id.0).unwrap_or_default();
        let events = stream.map(move |item| Ok::<_, Infallible>(sse_event(item, &request_id)));
        let mut resp = Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response();
        super::mark_answer(&mut resp, provider, cache);
        return Ok(resp);
    }

    let (generation, cache) = service.generate(&request, read_cache, started).await?;
    let mut resp = Json(GenerationBody::from(&generation)).into_response();
    super::mark_answer(&mut resp, generation.provider, cache);
    Ok(resp)
}

/// API.md's SSE events: `delta` with `{"text"}`, `done` with the full body, `error` with the
/// error object.
fn sse_event(item: StreamItem, request_id: &str) -> Event {
    let event = match item {
        StreamItem::Delta(text) => Event::default()
            .event("delta")
            .json_data(serde_json::json!({ "text": text })),
        StreamItem::Done(generation) => Event::default()
            .event("done")
            .json_data(GenerationBody::from(&*generation)),
        StreamItem::Error(e) => {
            let api = ApiError::from(e);
            tracing::warn!(code = api.code(), cause = %api, "stream ended with an error");
            let body = String::from_utf8(render_body(&api.body(), request_id)).unwrap_or_default();
            Ok(Event::default().event("error").data(body))
        }
    };
    event.unwrap_or_else(|_| Event::default().event("error").data("{}"))
}
