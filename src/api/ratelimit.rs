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

use crate::auth::Caller;
use crate::error::ApiError;
use crate::ratelimit::{LimitKey, RouteClass, ceil_secs};
use crate::state::AppState;

pub async fn limit(
    State((state, class)): State<(AppState, RouteClass)>,
    req: Request,
    next: Next,
) -> Response {
    let key = match req.extensions().get::<Caller>() {
        Some(Caller::User(user)) => LimitKey::User(user.clone()),
        Some(Caller::Master) if state.config().rate_limits.master_exempt => {
            return next.run(req).await;
        }
        Some(Caller::Master) => LimitKey::Master,
        Some(Caller::Anonymous) | None => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
            let forwarded = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            LimitKey::Ip(state.config().trusted_proxies.client_ip(peer, forwarded))
        }
    };
    let decision = state.limiter().check(class, &key).await;
    let mut resp = if decision.allowed {
        next.run(req).await
    } else {
        state
            .metrics()
            .rate_limited
            .with_label_values(&[class.as_str()])
            .inc();
        ApiError::RateLimited {
            retry_after: decision.retry_after,
        }
        .into_response()
    };
    let headers = resp.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(ceil_secs(decision.reset)),
    );
    resp
}
