//! Authentication layer: reads the presented key or token and puts the [`Caller`] in the request.
//!
//! Applied to the protected routes only (see `api::router`); probes and metrics stay open by
//! construction rather than by a path allow-list. A missing key, a wrong key and a refused token
//! get byte-identical 401 bodies (apart from the request id), so the answer reveals nothing about
//! which keys exist or why a token failed (the reason goes to the debug log, never the token).
//! A credential shaped like a JWT is checked against `SPARK_AUTH_ISSUERS_FILE` only when no API
//! key matched it; when its issuer's keys cannot be had, the caller gets 503 `auth_unavailable`
//! (it may be who it says), and API keys are unaffected.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::ApiError;
use crate::auth::jwt::{self, JwtError};
use crate::auth::{Caller, GroupTier, ManagedKey};
use crate::state::AppState;

/// `X-API-Key`, or `Authorization: Bearer` as OpenAI SDKs send it.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key") {
        return v.to_str().ok().map(str::trim);
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Authenticates the caller. An address that failed too often this minute is refused first,
/// without its key being checked; a failure is counted against the address.
pub async fn require_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let keys = state.keys();
    let brake = state.auth_brake();
    // The client address is worked out only when the brake needs it: while no address has
    // failed (almost always) a request pays nothing here.
    if !keys.is_open()
        && brake.active()
        && let Some(retry_after) = brake.check(super::ratelimit::client_ip(&state, &req))
    {
        state.metrics().auth_blocked.inc();
        return ApiError::RateLimited { retry_after }.into_response();
    }
    let (mut caller, managed) = tracing::debug_span!("auth").in_scope(|| {
        let presented = presented_key(req.headers());
        if let Some(caller) = keys.authenticate(presented) {
            return (Some(caller), None);
        }
        // Keys issued through the admin API: looked up in memory, never in the database.
        match presented.and_then(|p| state.managed_keys().authenticate(p, crate::store::now_ms())) {
            Some(record) if !keys.is_open() => (
                Some(Caller::User(record.user_id.clone())),
                Some(ManagedKey(record)),
            ),
            _ => (None, None),
        }
    });
    let mut tier = None;
    if caller.is_none()
        && let Some(verifier) = state.jwt()
        && let Some(token) = presented_key(req.headers()).filter(|p| jwt::looks_like_jwt(p))
    {
        match verifier
            .verify(token)
            .instrument(tracing::debug_span!("auth.jwt"))
            .await
        {
            Ok(identity) => {
                tier = identity.tier.map(GroupTier);
                caller = Some(if identity.admin {
                    Caller::Admin(identity.user)
                } else {
                    Caller::User(identity.user)
                });
            }
            Err(JwtError::Unavailable(retry_after)) => {
                state.metrics().auth_unavailable.inc();
                return ApiError::AuthUnavailable { retry_after }.into_response();
            }
            Err(e @ JwtError::Invalid(_)) => tracing::debug!(reason = %e, "bearer token refused"),
        }
    }
    match caller {
        Some(caller) => {
            crate::telemetry::access::set_caller(caller.label());
            req.extensions_mut().insert(caller);
            if let Some(managed) = managed {
                req.extensions_mut().insert(managed);
            }
            if let Some(tier) = tier {
                req.extensions_mut().insert(tier);
            }
            next.run(req).await
        }
        None => {
            state.metrics().auth_failures.inc();
            if !keys.is_open() {
                let ip = super::ratelimit::client_ip(&state, &req);
                brake.failed(ip);
                state.ledger().auth_failed(ip);
            }
            ApiError::Unauthorized.into_response()
        }
    }
}

/// For admin routes, after [`require_key`]: the master key, or a signed-in member of an
/// issuer's `admin_groups`. With auth off there is no admin, so admin routes stay closed.
pub async fn require_admin(req: Request, next: Next) -> Response {
    match req.extensions().get::<Caller>() {
        Some(c) if c.is_admin() => next.run(req).await,
        _ => ApiError::Forbidden.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_x_api_key_first_then_bearer() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer  abc ".parse().unwrap());
        assert_eq!(presented_key(&h), Some("abc"));
        h.insert("x-api-key", "xyz".parse().unwrap());
        assert_eq!(presented_key(&h), Some("xyz"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented_key(&h), None);
    }
}
