//! Our JSON extractor: axum's `Json`, with its rejections mapped to API.md's error table.
//!
//! axum's own rejections answer in plain text; every body this service sends is JSON in one shape,
//! so malformed JSON becomes 400 `invalid_request`, a body over the route's limit 413
//! `payload_too_large` and a missing or wrong content type 415 `unsupported_media_type`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;

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
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// The body is read here, under the route's read deadline: a client that trickles its
    /// body byte by byte holds an in-flight slot for at most that long, then gets 408.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limits = req.extensions().get::<BodyLimit>().copied();
        let req = match limits {
            Some(limits) => {
                let (parts, body) = req.into_parts();
                let read = axum::body::to_bytes(body, limits.bytes);
                let bytes = match tokio::time::timeout(limits.read_timeout, read).await {
                    Err(_) => return Err(ApiError::RequestTimeout(limits.read_timeout)),
                    Ok(Err(_)) => {
                        return Err(ApiError::PayloadTooLarge {
                            limit: limits.bytes,
                        });
                    }
                    Ok(Ok(bytes)) => bytes,
                };
                Request::from_parts(parts, axum::body::Body::from(bytes))
            }
            None => req,
        };
        let limit = limits.map_or(0, |l| l.bytes);
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(AppJson(v)),
            Err(rejection) => Err(match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit },
                StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
                _ => ApiError::InvalidRequest(rejection.body_text()),
            }),
        }
    }
}
