//! Our JSON extractor: axum's `Json`, with its rejections mapped to API.md's error table.
//!
//! axum's own rejections answer in plain text; every body this service sends is JSON in one shape,
//! so malformed JSON becomes 400 `invalid_request`, a body over the route's limit 413
//! `payload_too_large` and a missing or wrong content type 415 `unsupported_media_type`.

use axum::Json;
use axum::extract::{FromRequest, Request};

use super::error::ApiError;

/// The body limits of the route: its size (set next to its `DefaultBodyLimit` so a 413 can say
/// it) and how long the whole body may take to arrive (`SPARK_BODY_READ_TIMEOUT`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub bytes: usize,
    pub read_timeout: std::time::Duration,
}

pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// The body is read here, under the route's read deadline: a client that trickles its
    /// body byte by byte holds an in-flight slot for at most that long, then gets 408.
    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // Every route that takes JSON sets its limits; a route that forgot gets the generate
        // route's defaults rather than none.
        let limits = req
            .extensions()
            .get::<BodyLimit>()
            .copied()
            .unwrap_or(BodyLimit {
                bytes: 64 * 1024,
                read_timeout: std::time::Duration::from_secs(10),
            });
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        // `timeout` polls the read first: a body that has already arrived sets no timer.
        let read = axum::body::to_bytes(req.into_body(), limits.bytes);
        let bytes = match tokio::time::timeout(limits.read_timeout, read).await {
            Err(_) => return Err(ApiError::RequestTimeout(limits.read_timeout)),
            Ok(Err(_)) => {
                return Err(ApiError::PayloadTooLarge {
                    limit: limits.bytes,
                });
            }
            Ok(Ok(bytes)) => bytes,
        };
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(AppJson(v)),
            Err(rejection) => Err(ApiError::InvalidRequest(rejection.body_text())),
        }
    }
}

/// `Content-Type: application/json` (or `application/*+json`), as axum's `Json` requires.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}
