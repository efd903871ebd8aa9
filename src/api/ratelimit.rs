//! Rate-limit layer: one check per request of a limited route, and the `X-RateLimit-*` headers
//! on every response it lets through or refuses.
//!
//! Runs after authentication, so the budget belongs to the caller's user id; with auth off it
//! belongs to the client address (`X-Forwarded-For` believed only from `SPARK_TRUSTED_PROXIES`).
//! The master key is exempt unless `SPARK_RATE_LIMIT_MASTER_EXEMPT=false`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::ApiError;
use crate::auth::{Caller, GroupTier, ManagedKey};
use crate::ratelimit::{LimitKey, Quota, RouteClass, ceil_secs};
use crate::state::AppState;

/// The client's address: the peer, or what `X-Forwarded-For` says when the peer is a trusted
/// proxy. Every `X-Forwarded-For` line counts, joined in order (a proxy may add a line rather
/// than extend the first).
pub fn client_ip(state: &AppState, req: &Request) -> IpAddr {
    client_ip_of(state, req.extensions(), req.headers())
}

/// [`client_ip`] from a request's parts (for extractors, which see no whole request).
pub fn client_ip_of(
    state: &AppState,
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
) -> IpAddr {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let lines: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let joined = (!lines.is_empty()).then(|| lines.join(","));
    state
        .config()
        .trusted_proxies
        .client_ip(peer, joined.as_deref())
}

pub async fn limit(
    State((state, class)): State<(AppState, RouteClass)>,
    req: Request,
    next: Next,
) -> Response {
    // A managed key with a quota of its own is limited by it, apart from its user's others.
    let own = req.extensions().get::<ManagedKey>().and_then(|k| {
        let quota = Quota::parse(k.0.rate_limit.as_deref()?)?;
        Some(LimitKey::Key {
            id: k.0.id.clone(),
            quota,
        })
    });
    let tier = req
        .extensions()
        .get::<GroupTier>()
        .and_then(|t| t.0.rate_limit);
    let key = match (req.extensions().get::<Caller>(), own) {
        (Some(Caller::User(_) | Caller::Admin(_)), Some(own)) => own,
        (Some(Caller::User(user) | Caller::Admin(user)), None) => match tier {
            // An operator's per-user override is more specific than a group's tier.
            Some(quota) if !state.config().rate_limits.overrides.contains_key(user) => {
                LimitKey::Tier {
                    user: user.clone(),
                    quota,
                }
            }
            _ => LimitKey::User(user.clone()),
        },
        // Exempt: no budget applies, so no X-RateLimit-* headers either (API.md).
        (Some(Caller::Master), _) if state.config().rate_limits.master_exempt => {
            return next.run(req).await;
        }
        (Some(Caller::Master), _) => LimitKey::Master,
        (Some(Caller::Anonymous) | None, _) => LimitKey::Ip(client_ip(&state, &req)),
    };
    let decision = state
        .limiter()
        .check(class, &key)
        .instrument(tracing::debug_span!(
            "rate_limit",
            spark.route_class = class.as_str()
        ))
        .await;
    let mut resp = if decision.allowed {
        next.run(req).await
    } else {
        state.metrics().rate_limited(class.as_str());
        ApiError::RateLimited {
            retry_after: decision.retry_after,
        }
        .into_response()
    };
    let headers = resp.headers_mut();
    headers.insert(
        super::names::X_RATELIMIT_LIMIT,
        HeaderValue::from(decision.limit),
    );
    headers.insert(
        super::names::X_RATELIMIT_REMAINING,
        HeaderValue::from(decision.remaining),
    );
    headers.insert(
        super::names::X_RATELIMIT_RESET,
        HeaderValue::from(ceil_secs(decision.reset)),
    );
    resp
}
