//! The outermost request step, and load shedding.
//!
//! [`request_context`] runs first and finishes last on every route, errors and 404s included.
//! It assigns the request id (echoing a well-formed incoming one), opens the request's span,
//! renders any [`ApiError`] parked in the response into API.md's JSON body with that id, adds the
//! security headers and writes the one log line per request. Doing all of that in one place means
//! no path, not even a panic turned into a 500, can skip the id, the headers or the log.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::{ApiError, ErrorBody, render_body};
use crate::state::AppState;
use crate::telemetry::{Severity, access, trace};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id, in the request's extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A client's id is echoed only if it is short and made of safe characters, so it cannot
/// inject into logs or headers.
fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Names as http's constants, not text: a `&str` name would be parsed at every response.
const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

pub async fn request_context(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    // A root span: the request is its own trace (or continues its client's), never a child of
    // the connection task that happens to serve it. The OpenTelemetry fields are declared only
    // when traces are exported: the log line does not need them and would format them.
    macro_rules! request_span {
        ($($otel:tt)*) => {
            tracing::info_span!(
                parent: None,
                "request",
                request_id = %id,
                route = %route,
                method = %method,
                caller = tracing::field::Empty,
                provider = tracing::field::Empty,
                cache = tracing::field::Empty,
                $($otel)*
            )
        };
    }
    let span = if state.config().trace.is_some() {
        let method = crate::telemetry::metrics::method_label(method.as_str());
        request_span!(otel.name = %format_args!("{method} {route}"), otel.kind = "server")
    } else {
        request_span!()
    };
    // The trace id goes on the request's log line (its closing event), not into the span: a
    // `Span::record` would re-serialize the span's fields for the JSON log.
    let trace_id = state.config().trace.as_ref().and_then(|trace| {
        trace::adopt_client_context(&span, req.headers(), trace.trust_client_context);
        trace::trace_id(&span)
    });

    // HSTS only where the client used HTTPS: over native TLS, or behind a proxy that says so.
    // (A client that fakes the header over plain HTTP gains nothing: browsers ignore HSTS
    // received without TLS.)
    let secure = req.extensions().get::<super::tls::Secure>().is_some()
        || req
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let (mut resp, facts) = access::scope(next.run(req).instrument(span.clone())).await;

    let error = resp.extensions_mut().remove::<ErrorBody>();
    // The router that served the request decides the error shape: the `/v1` router marks its
    // responses (its unknown paths included) for OpenAI's or Anthropic's.
    let shape = resp.extensions().get::<super::ErrorShape>().copied();
    if let Some(err) = &error {
        if shape.is_some() && resp.status() == axum::http::StatusCode::UNPROCESSABLE_ENTITY {
            // Both compatible APIs refuse content with a 400, not a 422, and their SDKs raise
            // their bad-request error for it.
            *resp.status_mut() = axum::http::StatusCode::BAD_REQUEST;
        }
        let status = resp.status().as_u16();
        let body = match shape {
            Some(super::ErrorShape::OpenAi) => serde_json::to_vec(&serde_json::json!({
                "error": super::openai::openai_error(&err.message, err.code, status)
            }))
            .unwrap_or_default(),
            Some(super::ErrorShape::Anthropic) => {
                serde_json::to_vec(&super::messages::error_body(&err.message, status))
                    .unwrap_or_default()
            }
            None => render_body(err, &id),
        };
        *resp.body_mut() = Body::from(body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID, v);
    }
    for (name, value) in SECURITY_HEADERS {
        // The console's pages set their own policy: scripts and styles from this origin.
        if name == header::CONTENT_SECURITY_POLICY
            && headers.contains_key(header::CONTENT_SECURITY_POLICY)
        {
            continue;
        }
        headers.insert(name, HeaderValue::from_static(value));
    }
    if secure {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    // File downloads choose their own cache policy; everything else must not be stored. An
    // event stream says `no-cache` by itself (axum's default), which still allows storing it.
    let is_stream = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_stream || !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }

    let status = resp.status().as_u16();
    if state.config().trace.is_some() {
        trace::set_attribute(&span, "http.response.status_code", i64::from(status));
        if status >= 500 {
            trace::set_error(&span, &status.to_string());
        }
    }
    let elapsed = started.elapsed();
    // Status and latency go on the closing event only: with the JSON formatter every
    // `Span::record` re-parses and re-serializes the span's fields, a cost paid per request.
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if let Some(err) = &error {
        // A caller's mistake is grouped by code and route alone: its message may carry what the
        // caller sent, and nothing a caller sends is stored. Our own failures keep their cause.
        let cause = if status >= 500 {
            err.cause.as_str()
        } else {
            ""
        };
        state
            .errors()
            .record(err.code, &route, cause, Severity::of_code(err.code));
    }
    state
        .metrics()
        .http_response(&route, method.as_str(), status, elapsed);
    let line = |message, code| access::Line {
        message,
        status,
        latency_ms,
        code,
        trace_id: trace_id.as_deref(),
        request_id: &id,
        route: &route,
        method: method.as_str(),
        facts: &facts,
    };
    span.in_scope(|| match &error {
        // Under overload one line a second says how many were shed; a line per request would
        // flood the log exactly when it is needed.
        Some(e) if e.code == "overloaded" => {
            if let Some(shed) = state.shed_log().hit() {
                tracing::warn!(shed, "requests shed: SPARK_MAX_INFLIGHT reached");
            }
        }
        Some(e) if status >= 500 => tracing::error!(
            status,
            latency_ms,
            code = e.code,
            cause = %e.cause,
            trace_id,
            caller = facts.caller.as_deref(),
            provider = facts.provider,
            "request failed"
        ),
        // The common lines, written without tracing's JSON span machinery when logs are JSON.
        Some(e) if access::direct() && tracing::enabled!(tracing::Level::INFO) => {
            access::write(&line("request rejected", Some(e.code)));
        }
        Some(e) => tracing::info!(
            status,
            latency_ms,
            code = e.code,
            trace_id,
            "request rejected"
        ),
        None if access::direct() && tracing::enabled!(tracing::Level::INFO) => {
            access::write(&line("request finished", None));
        }
        None => tracing::info!(status, latency_ms, trace_id, "request finished"),
    });
    resp
}

/// Sheds load at once with 503 `overloaded` when `SPARK_MAX_INFLIGHT` requests are already being
/// served: a short, honest answer beats an unbounded queue that times everyone out. A request
/// holds its slot until its response body has been produced: a stream counts for as long as it
/// streams (until its body ends or is dropped), not only until its headers are built.
pub async fn shed_load(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.inflight().try_acquire_owned() {
        Ok(permit) => {
            let resp = next.run(req).await;
            // A body whose size is already known is in memory in full: the work it stood for is
            // done and the slot can go now. Anything else (a stream) keeps it to the end.
            if http_body::Body::size_hint(resp.body()).exact().is_some() {
                return resp;
            }
            resp.map(|body| {
                Body::new(PermitBody {
                    body,
                    _permit: permit,
                })
            })
        }
        Err(_) => ApiError::Overloaded.into_response(),
    }
}

/// A response body that holds an in-flight permit until it is finished or dropped.
struct PermitBody {
    body: Body,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for PermitBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Turns a panic inside a handler into API.md's 500. The payload goes to the log only.
pub fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    ApiError::Internal(format!("panic: {what}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_echoed_only_when_safe() {
        assert!(valid_request_id("abc-123_x.y:z"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id("a\r\nb"));
        assert!(!valid_request_id(&"a".repeat(129)));
    }
}
