//! The access log: the one JSON line each request ends with, written straight to the log writer.
//!
//! Under load this line was the largest cost of a request the gateway controls (issue 20): with
//! tracing's JSON formatter the request span's fields are serialized when the span opens,
//! serialized again on every `Span::record` (caller, provider, cache), and parsed back into a
//! map to be embedded in the closing event. Here the facts a request gathers (who called, which
//! provider answered, whether from the cache) go into a task-local [`scope`], and the line is
//! formatted once into one buffer of the same shape as before: `message`, `status`,
//! `latency_ms`, `target`, and the request's fields under `span`. Other events inside a request
//! still come through tracing, with the span's `request_id`, `route` and `method`.
//!
//! Installed only with JSON logs ([`install`]); otherwise, and when traces are exported (the
//! span attributes are their payload), the facts are also recorded on the span as before.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use super::logwriter::LogWriter;

/// The log writer the access lines go to; set once, by `telemetry::init` with JSON logs.
static WRITER: OnceLock<LogWriter> = OnceLock::new();
/// Whether the facts are recorded on the request span too (pretty logs, trace export, tests).
static ON_SPAN: AtomicBool = AtomicBool::new(true);

/// A line longer than this is cut short of its span fields rather than grown without bound.
/// The request id is at most 128 bytes and routes are the router's own; a caller label comes
/// from an identity provider's claim, so it is bounded here too.
const MAX_FIELD: usize = 256;

tokio::task_local! {
    static FACTS: RefCell<Facts>;
}

/// What a request learned on its way, for its access line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Facts {
    pub caller: Option<String>,
    pub provider: Option<&'static str>,
    pub cache: Option<&'static str>,
}

/// Sends access lines to `writer` from now on; with `on_span` false the facts no longer go on
/// the request span (nothing reads them there but a trace exporter).
pub(super) fn install(writer: LogWriter, on_span: bool) {
    if WRITER.set(writer).is_ok() {
        ON_SPAN.store(on_span, Ordering::Relaxed);
    }
}

/// Whether [`line`] writes (JSON logs are set up); when not, the caller logs through tracing.
pub fn direct() -> bool {
    WRITER.get().is_some()
}

/// Runs a request with an empty set of facts; returns what it gathered with its output.
pub async fn scope<F: Future>(f: F) -> (F::Output, Facts) {
    FACTS
        .scope(RefCell::new(Facts::default()), async move {
            let out = f.await;
            let facts = FACTS.try_with(|facts| facts.take()).unwrap_or_default();
            (out, facts)
        })
        .await
}

/// The caller's label (never key material: see `Caller::label`).
pub fn set_caller(label: &str) {
    let _ = FACTS.try_with(|f| f.borrow_mut().caller = Some(label.to_owned()));
    if ON_SPAN.load(Ordering::Relaxed) {
        tracing::Span::current().record("caller", label);
    }
}

/// Who answered, and whether from the cache.
pub fn set_answer(provider: &'static str, cache: &'static str) {
    let _ = FACTS.try_with(|f| {
        let mut f = f.borrow_mut();
        f.provider = Some(provider);
        f.cache = Some(cache);
    });
    if ON_SPAN.load(Ordering::Relaxed) {
        let span = tracing::Span::current();
        span.record("provider", provider);
        span.record("cache", cache);
    }
}

/// One request's access line.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub message: &'static str,
    pub status: u16,
    pub latency_ms: f64,
    /// The error code of a rejected request.
    pub code: Option<&'static str>,
    pub trace_id: Option<&'a str>,
    pub request_id: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub facts: &'a Facts,
}

impl Line<'_> {
    /// The line as tracing's JSON formatter wrote it (flattened event, current span), newline
    /// included.
    pub fn render(&self, now: SystemTime) -> Vec<u8> {
        let mut out = Vec::with_capacity(400);
        let _ = write!(
            out,
            "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"message\":\"{}\",\"status\":{}",
            humantime::format_rfc3339_micros(now),
            self.message,
            self.status
        );
        if self.latency_ms.is_finite() {
            let _ = write!(out, ",\"latency_ms\":{}", self.latency_ms);
        }
        if let Some(code) = self.code {
            field(&mut out, "code", code);
        }
        if let Some(id) = self.trace_id {
            field(&mut out, "trace_id", id);
        }
        out.extend_from_slice(b",\"target\":\"spark_gateway::api::middleware\",\"span\":{");
        out.extend_from_slice(b"\"name\":\"request\"");
        field(&mut out, "request_id", self.request_id);
        field(&mut out, "route", self.route);
        field(&mut out, "method", self.method);
        if let Some(caller) = &self.facts.caller {
            field(&mut out, "caller", caller);
        }
        if let Some(provider) = self.facts.provider {
            field(&mut out, "provider", provider);
        }
        if let Some(cache) = self.facts.cache {
            field(&mut out, "cache", cache);
        }
        out.extend_from_slice(b"}}\n");
        out
    }
}

/// `,"name":"value"` with the value escaped as JSON and cut to [`MAX_FIELD`] bytes.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    let mut end = value.len().min(MAX_FIELD);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let _ = write!(out, ",\"{name}\":");
    // Writing a `str` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, &value[..end]);
}

/// Writes `line` to the log (lossy under a flood, like every other line: see `telemetry::init`).
/// Returns false when no writer is installed.
pub fn write(line: &Line<'_>) -> bool {
    let Some(writer) = WRITER.get() else {
        return false;
    };
    // One write is one line on the writer's queue.
    let _ = writer.clone().write_all(&line.render(SystemTime::now()));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(facts: &Facts) -> serde_json::Value {
        let l = Line {
            message: "request finished",
            status: 200,
            latency_ms: 1.25,
            code: None,
            trace_id: Some("0af7651916cd43dd8448eb211c80319c"),
            request_id: "req-1",
            route: "/api/spark/generate",
            method: "PO\"ST\n",
            facts,
        };
        let bytes = l.render(SystemTime::UNIX_EPOCH);
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn renders_the_shape_of_the_tracing_json_line() {
        let facts = Facts {
            caller: Some("ops".into()),
            provider: Some("simulator"),
            cache: Some("miss"),
        };
        let v = line(&facts);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request finished");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 1.25);
        assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(v["target"], "spark_gateway::api::middleware");
        assert_eq!(v["span"]["name"], "request");
        assert_eq!(v["span"]["request_id"], "req-1");
        assert_eq!(v["span"]["route"], "/api/spark/generate");
        // A hostile method stays one escaped value on one line.
        assert_eq!(v["span"]["method"], "PO\"ST\n");
        assert_eq!(v["span"]["caller"], "ops");
        assert_eq!(v["span"]["provider"], "simulator");
        assert_eq!(v["span"]["cache"], "miss");
        assert!(v.get("code").is_none());
    }

    #[test]
    fn a_long_caller_label_is_cut_on_a_character_boundary() {
        let facts = Facts {
            caller: Some("é".repeat(1000)),
            ..Facts::default()
        };
        let v = line(&facts);
        let caller = v["span"]["caller"].as_str().unwrap();
        assert!(caller.len() <= MAX_FIELD && caller.len() >= MAX_FIELD - 1);
        assert!(v["span"].get("provider").is_none());
    }

    #[tokio::test]
    async fn facts_are_gathered_inside_the_scope_only() {
        set_caller("outside"); // no scope: ignored, no panic
        let ((), facts) = scope(async {
            set_caller("u-1");
            tokio::task::yield_now().await;
            set_answer("anthropic", "hit");
        })
        .await;
        assert_eq!(
            facts,
            Facts {
                caller: Some("u-1".into()),
                provider: Some("anthropic"),
                cache: Some("hit"),
            }
        );
    }
}
