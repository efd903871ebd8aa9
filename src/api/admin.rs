//! Admin endpoints (master key only): purge the response cache, reset a provider's breaker.
//! Both are written to the audit trail (through the ledger's queue: the action does not wait
//! on the database).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::error::ApiError;
use super::keys::AuditCtx;
use crate::providers::ProviderId;
use crate::state::AppState;
use crate::store::audit::Entry;

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

/// `POST /api/admin/cache/purge`: this replica's memory and, with Redis, every replica's shared
/// level. A purge that could not reach Redis is an error, never a silent partial success.
pub async fn purge_cache(
    State(state): State<AppState>,
    AuditCtx(actor): AuditCtx,
) -> Result<Json<Value>, ApiError> {
    let purged =
        state.generator().cache().purge().await.map_err(|e| {
            ApiError::Internal(format!("the shared cache could not be purged: {e}"))
        })?;
    tracing::info!(purged, "response cache purged");
    state.ledger().audit(
        Entry::new(actor.name, "cache.purge")
            .request(actor.request_id, actor.client_address)
            .details(json!({ "purged": purged })),
    );
    Ok(Json(json!({ "purged": purged })))
}

pub async fn reset_breaker(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    AuditCtx(actor): AuditCtx,
) -> Result<Json<Value>, ApiError> {
    let (id, breaker) = ProviderId::parse(&provider)
        .and_then(|id| Some((id, state.generator().router().breaker(id)?)))
        .ok_or_else(|| {
            ApiError::InvalidRequest("no configured provider has that name".to_owned())
        })?;
    breaker.reset();
    let provider = id.as_str();
    tracing::info!(provider, "circuit breaker reset");
    state.ledger().audit(
        Entry::new(actor.name, "breaker.reset")
            .target(provider)
            .request(actor.request_id, actor.client_address),
    );
    Ok(Json(json!({ "provider": provider, "circuit": "closed" })))
}
