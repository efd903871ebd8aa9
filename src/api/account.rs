//! Who pays for a request: the [`Payer`] extractor, and the `X-Spark-Budget-Remaining` (and
//! `-Tokens`) headers.
//!
//! Both read what authentication left in the request (the caller, the managed key) and the
//! request id; the budgets themselves live in `budget`.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::HeaderValue;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::middleware::RequestId;
use crate::auth::{Caller, GroupTier, ManagedKey};
use crate::budget::{Account, Limit};
use crate::state::AppState;

/// The paying account of a generation route, and the models its key allows (`None`: all).
pub struct Payer(pub Account, pub Option<Vec<String>>);

fn limits(state: &AppState, parts: &Parts) -> (String, Option<ManagedKey>, Vec<Limit>) {
    let user = parts
        .extensions
        .get::<Caller>()
        .map_or("anonymous", Caller::label)
        .to_owned();
    let key = parts.extensions.get::<ManagedKey>().cloned();
    let tier = parts.extensions.get::<GroupTier>().and_then(|t| t.0.budget);
    let limits = state.budgets().limits(
        &user,
        key.as_ref().map(|k| (k.0.id.as_str(), k.0.budget)),
        tier,
    );
    (user, key, limits)
}

/// The route label of the ledger: a fixed set, never the caller's path.
fn route(path: &str) -> &'static str {
    if path.ends_with("/chat/completions") {
        "chat"
    } else if path.contains("/messages") {
        "messages"
    } else {
        "generate"
    }
}

impl FromRequestParts<AppState> for Payer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (user_id, key, limits) = limits(state, parts);
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let models = key.as_ref().and_then(|k| k.0.models.clone());
        Ok(Payer(
            Account {
                request_id,
                user_id,
                key_id: key.map(|k| k.0.id.clone()),
                route: route(parts.uri.path()),
                limits,
            },
            models,
        ))
    }
}

/// After authentication: a caller with a budget learns on every response what is left of its
/// tightest one, in USD, and in tokens when a limit counts them.
pub async fn budget_header(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let (_, _, limits) = limits(&state, &parts);
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if !limits.is_empty()
        && let Some(left) = state.budgets().remaining(&limits).await
    {
        if let Ok(v) = HeaderValue::from_str(&format!("{:.6}", crate::store::usd(left.nusd))) {
            resp.headers_mut()
                .insert(super::names::X_SPARK_BUDGET_REMAINING, v);
        }
        if let Some(tokens) = left.tokens {
            resp.headers_mut().insert(
                super::names::X_SPARK_BUDGET_REMAINING_TOKENS,
                HeaderValue::from(tokens),
            );
        }
    }
    resp
}
