//! The HTTP edge: routes, the middleware stack, and thin handlers.
//!
//! The only module that knows axum. Handlers extract, call one service function and map its
//! typed error; the business rules live in `generate/`, `sanitize/`, `providers/` and `auth`.

mod account;
mod admin;
mod anthropic;
mod auth;
mod chat;
mod console;
pub mod error;
mod export;
mod generate;
mod health;
pub mod json;
mod keys;
mod messages;
pub mod middleware;
mod openai;
pub mod openapi;
mod probes;
mod ratelimit;
pub mod server;
pub mod tls;

use std::convert::Infallible;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::{MethodRouter, get, patch, post};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::ratelimit::RouteClass;
use crate::state::AppState;
use json::BodyLimit;

/// The names of the headers the gateway writes, parsed once. A `&str` name is parsed and
/// checked again at every insert, and a cache hit's response carries about a dozen headers.
mod names {
    use axum::http::HeaderName;

    pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
    pub const X_PROVIDER: HeaderName = HeaderName::from_static("x-provider");
    pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    pub const X_SPARK_WARNINGS: HeaderName = HeaderName::from_static("x-spark-warnings");
    pub const X_SPARK_TOKEN_COUNT: HeaderName = HeaderName::from_static("x-spark-token-count");
    pub const X_SPARK_BUDGET_REMAINING: HeaderName =
        HeaderName::from_static("x-spark-budget-remaining");
    pub const X_SPARK_BUDGET_REMAINING_TOKENS: HeaderName =
        HeaderName::from_static("x-spark-budget-remaining-tokens");
}

/// Which API's error body a `/v1` response gets; the `/v1` router marks every response it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    OpenAi,
    Anthropic,
}

/// Marks a `/v1` response for the request-context layer: Anthropic's error shape for the
/// Messages routes and for any request that says `anthropic-version` (an Anthropic client asking
/// an unknown path, or sending a bad key to `/v1/models`), OpenAI's for the rest.
async fn mark_error_shape(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Inside `nest("/v1", …)` the path arrives without its prefix.
    let path = req.uri().path();
    let anthropic = req.headers().contains_key(anthropic::VERSION_HEADER)
        || path == "/messages"
        || path.starts_with("/messages/");
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(if anthropic {
        ErrorShape::Anthropic
    } else {
        ErrorShape::OpenAi
    });
    resp
}

/// Marks an answer with where it came from: `X-Cache` and `X-Provider`, and the same two fields
/// on the request's span (the access log's line). Every generation route answers through this.
fn mark_answer(
    resp: &mut axum::response::Response,
    provider: crate::providers::ProviderId,
    cache: crate::cache::CacheResult,
) {
    crate::telemetry::access::set_answer(provider.as_str(), cache.label());
    let h = resp.headers_mut();
    h.insert(
        names::X_CACHE,
        header::HeaderValue::from_static(cache.header()),
    );
    h.insert(
        names::X_PROVIDER,
        header::HeaderValue::from_static(provider.as_str()),
    );
}

/// `X-Spark-Warnings`, bounded like every header the gateway writes, when there is anything to
/// say.
fn set_warnings(resp: &mut axum::response::Response, warnings: &[String]) {
    if !warnings.is_empty()
        && let Ok(v) = header::HeaderValue::from_str(&crate::export::warnings_header(warnings))
    {
        resp.headers_mut().insert(names::X_SPARK_WARNINGS, v);
    }
}

/// `Cache-Control: no-cache` on a request asks for a fresh answer (which is still stored).
fn wants_fresh(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        })
}

/// CORS for the configured browser origins: an exact allow-list (never `*`), no credentials,
/// the headers a browser client needs to send and to read. `None` when no origin is configured:
/// then no CORS header is ever sent.
fn cors(config: &crate::config::Config) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let name = HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                name("x-api-key"),
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                middleware::X_REQUEST_ID,
                name("anthropic-version"),
            ])
            .expose_headers([
                middleware::X_REQUEST_ID,
                names::X_CACHE,
                names::X_PROVIDER,
                names::X_RATELIMIT_LIMIT,
                names::X_RATELIMIT_REMAINING,
                names::X_RATELIMIT_RESET,
                names::X_SPARK_WARNINGS,
                names::X_SPARK_TOKEN_COUNT,
                // A browser tool shows its caller what is left of the budget: without these it
                // could not read them, whatever the server sends.
                names::X_SPARK_BUDGET_REMAINING,
                names::X_SPARK_BUDGET_REMAINING_TOKENS,
                header::RETRY_AFTER,
                header::CONTENT_DISPOSITION,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Builds the router. The stack, outermost first:
/// 1. `request_context` — request id, span, error bodies, security headers, access log;
/// 2. sensitive headers — `X-API-Key` and `Authorization` are marked so no debug output shows them;
/// 3. catch panic — a panicking handler becomes a 500 with our body, the process lives on;
/// 4. per protected route: auth, the budget header, load shedding, then the route class's rate
///    limit and the body limit (admin routes: auth, then the admin check).
pub fn router(state: AppState) -> Router {
    let read_timeout = state.config().body_read_timeout;
    let generate_limit = BodyLimit {
        bytes: state.config().generate_body_limit,
        read_timeout,
    };
    let export_limit = BodyLimit {
        bytes: state.config().export_body_limit,
        read_timeout,
    };

    // A POST route with its body limits and its route class's rate limit, as one layer: axum
    // boxes the route once per `layer` call, and every middleware that clones its inner service
    // per request (`from_fn` does) clones each box inside it, so three calls cost a request
    // several allocations more than one stack (callgrind, BENCHMARKS.md).
    let limited = |handler: MethodRouter<AppState>, limit: BodyLimit, class: RouteClass| {
        handler.layer::<_, Infallible>(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    (state.clone(), class),
                    ratelimit::limit,
                ))
                .layer(axum::Extension(limit))
                .layer(DefaultBodyLimit::max(limit.bytes)),
        )
    };
    // Auth runs before the load shedder so anonymous floods are refused without taking a slot.
    // One stack, outermost first, for the reason `limited` gives.
    let authenticated = |router: Router<AppState>| {
        router.route_layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    auth::require_key,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    account::budget_header,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::shed_load,
                )),
        )
    };

    let protected = authenticated(
        Router::new()
            .route(
                "/api/spark/generate",
                limited(
                    post(generate::generate),
                    generate_limit,
                    RouteClass::Generate,
                ),
            )
            .route(
                "/api/export",
                limited(post(export::export), export_limit, RouteClass::Export),
            )
            .route("/api/usage", get(keys::usage)),
    );

    // The OpenAI-compatible API, nested so that everything under `/v1` (its own 404s and 405s
    // included) is marked for OpenAI's error shape by the router it is served from.
    let v1 = authenticated(
        Router::new()
            .route(
                "/chat/completions",
                limited(
                    post(openai::chat_completions),
                    generate_limit,
                    RouteClass::OpenAi,
                ),
            )
            .route(
                "/messages",
                limited(
                    post(anthropic::messages),
                    generate_limit,
                    RouteClass::Anthropic,
                ),
            )
            .route(
                "/messages/count_tokens",
                limited(
                    post(anthropic::count_tokens),
                    generate_limit,
                    RouteClass::Anthropic,
                ),
            )
            .route("/models", get(openai::models)),
    )
    .fallback(middleware::not_found)
    .method_not_allowed_fallback(middleware::method_not_allowed)
    .layer(axum::middleware::from_fn(mark_error_shape));

    let admin = Router::new()
        .route("/api/admin/cache/purge", post(admin::purge_cache))
        .route("/api/admin/errors", get(admin::errors))
        .route(
            "/api/admin/breakers/{provider}/reset",
            post(admin::reset_breaker),
        )
        .route("/api/admin/keys", post(keys::create).get(keys::list))
        .route(
            "/api/admin/keys/{id}",
            patch(keys::update).delete(keys::revoke),
        )
        .route("/api/admin/audit", get(keys::audit))
        .route("/api/admin/audit/verify", get(console::audit_verify))
        .route("/api/admin/summary", get(console::summary))
        .route_layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    auth::require_key,
                ))
                .layer(axum::middleware::from_fn(auth::require_admin)),
        );

    // With SPARK_OPS_BIND the operational routes leave the public port for their own listener.
    let open = if state.config().ops_bind.is_some() {
        Router::new()
    } else {
        ops_routes()
    };

    // A route that panics, for drills and tests of the panic path; off unless configured.
    let debug = if state.config().panic_route {
        Router::new().route("/api/debug/panic", get(probes::panic))
    } else {
        Router::new()
    };

    edge(
        Router::new()
            .route("/api/openapi.json", get(openapi::openapi_json))
            // The console's assets hold no data: the page asks for the key, then calls the API.
            .route("/console", get(console::index))
            .route("/console/{file}", get(console::asset))
            .merge(protected)
            .nest("/v1", v1)
            .merge(debug)
            .merge(admin)
            .merge(open),
        state,
    )
}

/// Probes, health and metrics: unauthenticated, for the kubelet and Prometheus.
fn ops_routes() -> Router<AppState> {
    Router::new()
        .route("/livez", get(probes::livez))
        .route("/readyz", get(health::readyz))
        .route("/api/spark/health", get(health::health))
        .route("/metrics", get(probes::metrics))
        .route("/api/metrics", get(probes::metrics))
}

/// The router of the operations listener (`SPARK_OPS_BIND`): the operational routes alone,
/// behind the same request context (ids, security headers, access log, metrics).
pub fn ops_router(state: AppState) -> Router {
    edge(ops_routes(), state)
}

/// The outer stack every router shares, outermost first.
fn edge(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::request_context,
                ))
                // Inside the request context (so a preflight has an id and the security
                // headers) and outside auth (a browser's preflight carries no key).
                .option_layer(cors(state.config()))
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::HeaderName::from_static("x-api-key"),
                ]))
                .layer(CatchPanicLayer::custom(middleware::panic_response)),
        )
        .with_state(state)
}
