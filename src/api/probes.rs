//! Kubernetes probes. `/livez` says the process is up and serving HTTP; it checks nothing else,
//! so a slow provider can never get a healthy pod restarted.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use crate::state::AppState;

pub async fn livez() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Panics on purpose (mounted only with `SPARK_ENABLE_PANIC_ROUTE=true`).
#[expect(clippy::panic, reason = "this route exists to exercise the panic path")]
pub async fn panic() -> Json<Value> {
    panic!("forced panic from /api/debug/panic")
}

/// `/metrics` and `/api/metrics`: the Prometheus text exposition of this gateway's registry.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    super::health::refresh_breakers(&state);
    let text = state
        .metrics()
        .render()
        .map_err(|e| ApiError::Internal(format!("metrics rendering failed: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}
