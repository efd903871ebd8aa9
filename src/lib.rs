//! Spark Gateway: an API gateway that lets game-development tools generate engine-ready code with
//! LLMs safely.
//!
//! # Layout
//! The modules follow a request's way through the service (DESIGN.md):
//! - [`api`]: the connection loop (`api::server`: timeouts, connection cap, HTTP/2), routes,
//!   middleware (request id, security headers, CORS, auth, load shedding), handlers, the
//!   OpenAPI document;
//! - [`auth`]: API keys as SHA-256 digests compared in constant time, the reloadable key ring,
//!   the brake on failed authentications;
//! - [`ratelimit`]: per-key GCRA limits, in memory or shared through Redis;
//! - [`sanitize`]: prompt normalization and injection detection;
//! - [`engine`]: the seven engines and their naming rules, a leaf shared by the steps below;
//! - [`generate`]: the generation service: validation, cache key, calls, code extraction;
//! - [`cache`]: the response cache, single-flight on misses;
//! - [`resilience`]: circuit breakers, retries and fallback within one deadline;
//! - [`shaping`]: each provider's capacity (requests, tokens, in flight) shared by priority and
//!   in fair turns;
//! - [`providers`]: Anthropic, OpenAI and the built-in simulator behind one trait;
//! - [`redis`]: the one Redis connection the limiter and the cache share;
//! - [`config`]: typed configuration; [`state`]: `AppState`; `api::error`: API.md's error table;
//! - [`telemetry`]: metrics, the error tracker, logging set-up.
//!
//! The module graph is a DAG (checked by `tests/module_graph.rs`): `engine`, `telemetry` and
//! `sanitize` are leaves, `config` and `state` sit above every service module, and only `api`
//! (and this file) know axum.
//!
//! `main.rs` is a shim: it parses the command line, reads the config and calls [`serve`].

pub mod api;
pub mod auth;
pub mod budget;
pub mod cache;
pub mod config;
pub mod engine;
pub mod export;
pub mod generate;
pub mod ledger;
pub mod providers;
pub mod ratelimit;
pub mod redis;
pub mod resilience;
pub mod sanitize;
pub mod shaping;
pub mod state;
pub mod store;
pub mod telemetry;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

pub use state::{AppState, InitError, build_state};

/// The router for a state: the one assembly main, tests and benches share.
pub fn app(state: AppState) -> Router {
    api::router(state)
}

/// Serves on an already-bound listener until `shutdown` resolves, then lets in-flight requests
/// finish. The connection loop (timeouts, connection cap, HTTP/2) is `api::server`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_ops(listener, None, state, shutdown).await
}

/// [`serve`], plus the operations listener (`SPARK_OPS_BIND`) when one is given: both stop
/// accepting on `shutdown` and drain together.
pub async fn serve_with_ops(
    listener: TcpListener,
    ops: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Native TLS: a pair that does not load stops the gateway here (fail closed); afterwards the
    // files are watched and a bad version never replaces the good one.
    let (tls, tls_watch) = match &state.config().tls {
        Some(files) => {
            let tls_error = |e: api::tls::TlsError| {
                std::io::Error::other(format!("SPARK_TLS_CERT/SPARK_TLS_KEY: {e}"))
            };
            let metrics = api::tls::TlsMetrics {
                reloads: state.metrics().tls_reloads.clone(),
                expiry: state.metrics().tls_expiry.clone(),
            };
            let certs = api::tls::Certificates::load(files.clone(), metrics).map_err(tls_error)?;
            let config = certs.server_config().map_err(tls_error)?;
            (Some(std::sync::Arc::new(config)), Some(certs.spawn_watch()))
        }
        None => (None, None),
    };

    // Upkeep for as long as the server runs: the limiter forgets idle keys so its memory
    // follows active keys, not every key ever seen.
    // It also re-reads the API key file four times a second, so a rotated key takes effect
    // within a second without a restart. The read is blocking I/O, so it runs on a blocking
    // thread; the ring logs and counts a refused reload itself, once per change.
    let upkeep_state = state.clone();
    let upkeep = telemetry::spawn_named("upkeep", async move {
        let mut keys_tick = tokio::time::interval(std::time::Duration::from_millis(250));
        let mut limiter_tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = keys_tick.tick() => {
                    let state = upkeep_state.clone();
                    let _ = tokio::task::spawn_blocking(move || state.reload_key_file(false)).await;
                }
                _ = limiter_tick.tick() => upkeep_state.limiter().maintain(),
            }
        }
    });
    let config = state.config();
    let limits = api::server::ServerLimits {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
        h2_max_streams: 256,
        h2_keepalive: std::time::Duration::from_secs(20),
    };
    // One shutdown signal for both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let ops_server = ops.map(|ops| {
        let router = api::ops_router(state.clone());
        telemetry::spawn_named(
            "ops-server",
            api::server::run(ops, router, limits, None, signal()),
        )
    });
    let public = api::server::run(listener, app(state), limits, tls, signal());
    let trigger = telemetry::spawn_named("shutdown-trigger", async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let result = public.await;
    trigger.abort();
    if let Some(ops) = ops_server {
        let _ = ops.await;
    }
    upkeep.abort();
    if let Some(watch) = tls_watch {
        watch.abort();
    }
    result
}
