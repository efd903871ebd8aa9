//! Admin endpoints (master key only): purge the response cache, reset a provider's breaker.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::providers::ProviderId;
use crate::state::AppState;

/// `GET /api/admin/errors`: grouped error fingerprints, most frequent first, and totals.
pub async fn errors(State(state): State<AppState>) -> Json<Value> {
    let totals = state.errors().totals();
    Json(json!({
        "groups": state.errors().groups(),
        "total": totals.iter().map(|(_, n)| n).sum::<u64>(),
        "bySeverity": totals
            .iter()
            .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
            .collect::<serde_json::Map<String, Value>>(),
    }))
}

pub async fn purge_cache(State(state): State<AppState>) -> Json<Value> {
    let purged = state.generator().cache().purge().await;
    tracing::info!(purged, "response cache purged");
    Json(json!({ "purged": purged }))
}

pub async fn reset_breaker(
    State(state): State<AppState>,
    Path(provider): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let breaker = ProviderId::parse(&provider)
        .and_then(|id| state.generator().router().breaker(id))
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!("no configured provider named {provider:?}"))
        })?;
    breaker.reset();
    tracing::info!(provider = %provider, "circuit breaker reset");
    Ok(Json(json!({ "provider": provider, "circuit": "closed" })))
}
