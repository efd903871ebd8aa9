//! Telemetry: Prometheus metrics ([`Metrics`]), the logging set-up (one `tracing` subscriber,
//! JSON lines in production, pretty locally) and, when configured, OpenTelemetry trace export
//! ([`trace`]) as a second layer of the same subscriber.
//!
//! `RUST_LOG` filters the log lines (default `info`); it does not filter the exported spans.
//! Spans carry the request id, route and caller label, never keys or prompt text (see
//! `api::middleware`).

pub mod access;
pub mod errors;
pub mod logwriter;
pub mod metrics;
mod spanfields;
pub mod summary;
pub mod trace;

pub use errors::{ErrorTracker, Severity};
pub use metrics::Metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written (`SPARK_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(LogFormat::Json),
            "pretty" => Some(LogFormat::Pretty),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        }
    }
}

/// Counts events and lets a log line through at most once per interval, with the count since
/// the last one. For events that come in floods exactly when an operator needs the log to stay
/// readable (requests shed under overload).
pub struct Throttle {
    interval: std::time::Duration,
    last: std::sync::Mutex<Option<tokio::time::Instant>>,
    pending: std::sync::atomic::AtomicU64,
}

impl Throttle {
    pub fn new(interval: std::time::Duration) -> Self {
        Throttle {
            interval,
            last: std::sync::Mutex::new(None),
            pending: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts one event; `Some(n)` when a line is due, `n` being the events it stands for.
    pub fn hit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            return None;
        }
        *last = Some(now);
        Some(self.pending.swap(0, Ordering::Relaxed))
    }
}

/// Spawns a background task inside a span named after it, so its log lines say which task wrote
/// them. The one place the crate calls `tokio::spawn` (clippy's `disallowed-methods` bans it
/// elsewhere): a detached task with no name is how work gets lost without a trace.
#[expect(
    clippy::disallowed_methods,
    reason = "the one sanctioned spawn; everything else goes through here"
)]
pub fn spawn_named<F>(name: &'static str, task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(task.instrument(tracing::info_span!("task", name)))
}

/// Keeps the log writer thread alive; dropping it flushes the lines still queued. Hold it for as
/// long as the process logs.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code, reason = "held for its Drop")] logwriter::LogWriterGuard);

/// Installs the global subscriber. Call once, from `main`, and keep the guard.
///
/// Lines are formatted on the request's thread but written by a dedicated thread: a request
/// never waits on a write to stderr, which in a container is a pipe that a slow log collector can
/// fill. Measured under load (BENCHMARKS.md), writing each request line in place cost throughput
/// at the knee; under a flood beyond `logwriter::MAX_BUFFERED` bytes lines are dropped (and
/// counted in a line of their own), never requests.
///
/// With a `tracer` (tracing configured), our own spans also go to OpenTelemetry, whatever
/// `RUST_LOG` says: the log filter and the span export are separate per-layer filters, so the
/// `debug` step spans are exported without their becoming log lines.
pub fn init(
    format: LogFormat,
    filter: &str,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> LogGuard {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let (writer, guard) = logwriter::start(std::io::stderr());
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer.clone())
        // Colour codes only for a person at a terminal: in a file or a pipe they are noise, and
        // writing them costs time on every request line.
        .with_ansi(std::io::stderr().is_terminal());
    if format == LogFormat::Json {
        // The per-request line is written by `access` itself; the facts stay on the span only
        // when a trace exporter reads them there.
        access::install(writer.clone(), tracer.is_some());
    }
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(spanfields::JsonSpanFields)
            .boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    };
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Each of these is an attribute or a thread-local step per span or per poll that
            // nobody reading a gateway trace needs; off, export costs less per request.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // The OpenTelemetry context is not attached on every enter: parents come from the
            // span tree, and propagation reads a span's context explicitly.
            .with_context_activation(false)
            .with_filter(tracing_subscriber::filter::filter_fn(exported_span))
    });
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
    LogGuard(guard)
}

/// Which spans become OpenTelemetry spans: the gateway's own, except the wrapper of a
/// long-lived background task (it would be a trace that lasts as long as the process). Events
/// stay in the log: a span's outcome is in its attributes and status.
fn exported_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("spark_gateway") && meta.name() != "task"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_throttle_lets_one_line_through_per_interval_with_the_count() {
        let t = Throttle::new(std::time::Duration::from_secs(1));
        assert_eq!(t.hit(), Some(1));
        for _ in 0..999 {
            assert_eq!(t.hit(), None);
        }
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!(t.hit(), Some(1000));
    }
}
