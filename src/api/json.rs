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

/// The body limit of the route, set next to its `DefaultBodyLimit` so a 413 can say it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
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
