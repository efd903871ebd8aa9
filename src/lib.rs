//! Spark Gateway: an API gateway that lets game-development tools generate engine-ready code with
//! LLMs safely.
//!
//! # Layout
//! The modules follow a request's way through the service (DESIGN.md):
//! - [`api`]: routes, middleware (request id, security headers, auth, load shedding), handlers;
//! - [`auth`]: API keys as SHA-256 digests, compared in constant time;
//! - [`ratelimit`]: per-key GCRA limits, in memory or shared through Redis;
//! - [`sanitize`]: prompt normalization and injection detection;
//! - [`generate`]: engines, the generation service, code extraction and naming;
//! - [`cache`]: the response cache, single-flight on misses;
//! - [`resilience`]: circuit breakers, retries and fallback within one deadline;
//! - [`providers`]: Anthropic, OpenAI and the built-in simulator behind one trait;
//! - [`error`]: API.md's error table; [`config`]: typed configuration; [`state`]: `AppState`;
//! - [`telemetry`]: logging set-up.
//!
//! `main.rs` is a shim: it parses the command line, reads the config and calls [`serve`].

pub mod api;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod export;
pub mod generate;
pub mod providers;
pub mod ratelimit;
pub mod resilience;
pub mod sanitize;
pub mod state;
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
/// finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Upkeep for as long as the server runs: the limiter forgets idle keys so its memory
    // follows active keys, not every key ever seen.
    // It also re-reads the API key file four times a second, so a rotated key takes effect
    // within a second without a restart.
    let upkeep_state = state.clone();
    let upkeep = tokio::spawn(async move {
        let mut keys_tick = tokio::time::interval(std::time::Duration::from_millis(250));
        let mut limiter_tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = keys_tick.tick() => {
                    if let Err(e) = upkeep_state.key_ring().reload(false) {
                        tracing::error!(error = %e, "API key file not reloaded; the keys in force stay");
                    }
                }
                _ = limiter_tick.tick() => upkeep_state.limiter().maintain(),
            }
        }
    });
    let result = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    upkeep.abort();
    result
}
