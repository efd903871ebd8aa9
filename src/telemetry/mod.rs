//! Telemetry: Prometheus metrics ([`Metrics`]) and the logging set-up (one `tracing` subscriber,
//! JSON lines in production, pretty locally).
//!
//! `RUST_LOG` filters (default `info`). Spans carry the request id, route and caller label, never
//! keys or prompt text (see `api::middleware`).

pub mod errors;
pub mod metrics;

pub use errors::{ErrorTracker, Severity};
pub use metrics::Metrics;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
