//! `POST /api/spark/generate`: parse, call the generation service, answer as JSON or as SSE.

use std::convert::Infallible;
use std::io::Write as _;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt;

use super::account::Payer;
use super::error::{ApiError, render_body};
use super::json::AppJson;
use super::middleware::RequestId;
use crate::auth::Caller;
use crate::generate::{Answer, GenerateParams, Generation, StreamItem};
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

    let answer = service.generate(&request, read_cache, started).await?;
    let mut resp = json_response(&answer);
    super::mark_answer(&mut resp, answer.generation.provider, answer.cache);
    Ok(resp)
}

/// The 200 body of an answer. Two cache hits of one cached value differ only in `latencyMs`,
/// the body's last field, so a hit writes the bytes before it, rendered on the value's first hit
/// and kept with it in the cache, and then its own latency: no serializing (and escaping) of
/// the code per hit.
fn json_response(answer: &Answer) -> Response {
    if answer.cached() {
        let prefix = answer
            .generation
            .rendered
            .get_or_init(|| hit_prefix(&answer.generation));
        if !prefix.is_empty() {
            let mut body = Vec::with_capacity(prefix.len() + 21);
            body.extend_from_slice(prefix);
            let _ = write!(body, "{}}}", answer.latency_ms);
            let mut resp = Response::new(axum::body::Body::from(body));
            let headers = resp.headers_mut();
            // Room for every header the response leaves with (the rate limit's, the request
            // id, the security headers, `X-Cache`...): one allocation instead of regrowing.
            headers.reserve(ANSWER_HEADERS);
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return resp;
        }
    }
    let mut body = GenerationBody::from(&*answer.generation);
    body.cached = answer.cached();
    body.latency_ms = answer.latency_ms;
    let mut resp = Json(body).into_response();
    resp.headers_mut().reserve(ANSWER_HEADERS);
    resp
}

/// About how many headers a generation's response carries when it leaves the gateway.
const ANSWER_HEADERS: usize = 16;

/// A hit's body up to its `latencyMs` value: the whole body rendered with `cached: true` and a
/// latency of 0, less that final `0}`. Empty if the rendering does not end as expected, and the
/// caller then serializes as for a miss.
fn hit_prefix(g: &Generation) -> bytes::Bytes {
    const END: &[u8] = b"\"latencyMs\":0}";
    let mut body = GenerationBody::from(g);
    body.cached = true;
    body.latency_ms = 0;
    match serde_json::to_vec(&body) {
        Ok(mut out) if out.ends_with(END) => {
            out.truncate(out.len() - 2);
            bytes::Bytes::from(out)
        }
        _ => bytes::Bytes::new(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheResult;
    use crate::engine::Engine;
    use crate::providers::{ProviderId, Usage};
    use std::sync::Arc;

    fn generation() -> Generation {
        Generation {
            id: "gen_1".into(),
            code: "public class Door : MonoBehaviour {\n  // \"open\" \\ \u{e9}\u{1F600}\t\n}"
                .into(),
            engine: Engine::Unity,
            script_name: "Door".into(),
            file_name: "Door.cs".into(),
            provider: ProviderId::Anthropic,
            model: "claude-sonnet-4-5".into(),
            cached: false,
            usage: Usage {
                input_tokens: 12,
                output_tokens: 340,
            },
            warnings: vec!["a \"quoted\" warning".into()],
            latency_ms: 987,
            answer: "prose".into(),
            truncated: false,
            stop_sequence: None,
            rendered: Default::default(),
        }
    }

    async fn body_of(resp: Response) -> (Option<String>, Vec<u8>) {
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (ct, bytes.to_vec())
    }

    #[tokio::test]
    async fn a_hit_writes_the_same_bytes_as_serializing_it_would() {
        let shared = Arc::new(generation());
        for latency_ms in [0, 7, 1234, u64::MAX] {
            let answer = Answer {
                generation: Arc::clone(&shared),
                cache: CacheResult::Hit,
                latency_ms,
            };
            let (ct, fast) = body_of(json_response(&answer)).await;
            let mut slow = GenerationBody::from(&*shared);
            slow.cached = true;
            slow.latency_ms = latency_ms;
            let (slow_ct, slow) = body_of(Json(slow).into_response()).await;
            assert_eq!(ct, slow_ct);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(slow).unwrap()
            );
        }
        // The prefix was rendered once and is kept with the shared value.
        let kept = shared.rendered.get_or_init(|| panic!("rendered again"));
        assert!(kept.ends_with(b"\"latencyMs\":"));
    }

    #[tokio::test]
    async fn a_miss_says_so_and_carries_its_own_latency() {
        let answer = Answer {
            generation: Arc::new(generation()),
            cache: CacheResult::Miss,
            latency_ms: 42,
        };
        let (_, body) = body_of(json_response(&answer)).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["cached"], false);
        assert_eq!(v["latencyMs"], 42);
        assert!(
            answer
                .generation
                .rendered
                .get_or_init(bytes::Bytes::new)
                .is_empty()
        );
    }
}
