//! Distributed tracing: the request's `tracing` spans exported as OpenTelemetry spans over
//! OTLP/HTTP (protobuf), and W3C trace context (`traceparent`, `tracestate`) taken from clients
//! and passed on to providers.
//!
//! Why this shape:
//! - Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set. Off means no
//!   OpenTelemetry layer at all, so the request path pays nothing: the step spans are `debug`
//!   spans, disabled at their call site when only the log layer listens.
//! - Spans leave the request path through a bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`): ending a
//!   span never waits on the network, a slow or dead collector costs dropped spans (counted in
//!   `spark_otel_spans_total{outcome="dropped"}`), never latency or memory. The SDK's own batch
//!   processor cannot be used for this: it exports on a plain thread with `block_on`, which the
//!   async reqwest client cannot run on, and its drop count is private.
//! - Span fields are chosen by the code that opens the span, never copied from a request:
//!   no prompt text, no key, no header a caller chose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
use tokio::sync::mpsc;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What the OTLP exporter is told, read from the standard `OTEL_*` variables.
#[derive(Clone)]
pub struct TraceConfig {
    /// The full URL spans are POSTed to (`.../v1/traces`).
    pub endpoint: String,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`), typically a collector's token.
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub service_name: String,
    pub sampler: SamplerChoice,
    /// Finished spans waiting for export at most; more are dropped and counted.
    pub max_queue: usize,
    pub max_batch: usize,
    /// How long a partial batch waits before it is sent.
    pub delay: Duration,
    /// Continue a client's `traceparent` (true) or start a new trace linked to it (false).
    pub trust_client_context: bool,
}

impl std::fmt::Debug for TraceConfig {
    // The headers usually carry a collector's credentials: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceConfig")
            .field("endpoint", &self.endpoint)
            .field(
                "headers",
                &format_args!("<{} redacted>", self.headers.len()),
            )
            .field("timeout", &self.timeout)
            .field("service_name", &self.service_name)
            .field("sampler", &self.sampler)
            .field("max_queue", &self.max_queue)
            .field("max_batch", &self.max_batch)
            .field("delay", &self.delay)
            .field("trust_client_context", &self.trust_client_context)
            .finish()
    }
}

/// `OTEL_TRACES_SAMPLER` with its argument, as the specification names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentAlwaysOn,
    ParentAlwaysOff,
    ParentRatio(f64),
}

/// The sampler names `OTEL_TRACES_SAMPLER` accepts.
pub const SAMPLERS: &[&str] = &[
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
];

impl SamplerChoice {
    /// `name` is one of [`SAMPLERS`]; `arg` is the ratio of the ratio samplers (default 1.0).
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            match arg {
                None => Ok(1.0),
                Some(a) => a
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG: {a:?} is not a ratio between 0 and 1")
                    }),
            }
        };
        Ok(match name {
            "always_on" => SamplerChoice::AlwaysOn,
            "always_off" => SamplerChoice::AlwaysOff,
            "traceidratio" => SamplerChoice::Ratio(ratio()?),
            "parentbased_always_on" => SamplerChoice::ParentAlwaysOn,
            "parentbased_always_off" => SamplerChoice::ParentAlwaysOff,
            "parentbased_traceidratio" => SamplerChoice::ParentRatio(ratio()?),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER: {other:?} is not one of {}",
                    SAMPLERS.join(", ")
                ));
            }
        })
    }

    fn sampler(self) -> Sampler {
        let parent = |s: Sampler| Sampler::ParentBased(Box::new(s));
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerChoice::ParentAlwaysOn => parent(Sampler::AlwaysOn),
            SamplerChoice::ParentAlwaysOff => parent(Sampler::AlwaysOff),
            SamplerChoice::ParentRatio(r) => parent(Sampler::TraceIdRatioBased(r)),
        }
    }
}

/// The traces URL from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is) or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (a base, `/v1/traces` appended), as the OTLP specification
/// says. `None` when neither is set: tracing is off.
pub fn traces_endpoint(base: Option<&str>, traces: Option<&str>) -> Result<Option<String>, String> {
    let (var, url) = match (traces, base) {
        (Some(t), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", t.trim().to_owned()),
        (None, Some(b)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", b.trim().trim_end_matches('/')),
        ),
        (None, None) => return Ok(None),
    };
    match url.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Ok(Some(url))
        }
        _ => Err(format!(
            "{var}: {url:?} is not an http(s) URL such as http://otel-collector:4318"
        )),
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `name=value` pairs separated by commas, values
/// percent-encoded. A malformed pair is an error that names its position, never its value.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, pair) in text.split(',').enumerate() {
        if pair.trim().is_empty() {
            continue;
        }
        let parsed = pair.split_once('=').and_then(|(name, value)| {
            let name = name.trim().to_ascii_lowercase();
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .ok()?
                .into_owned();
            let ok = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && http::HeaderValue::from_str(&value).is_ok();
            ok.then_some((name, value))
        });
        match parsed {
            Some(h) => out.push(h),
            None => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_HEADERS: pair {} is not name=value with a valid header name and value",
                    n + 1
                ));
            }
        }
    }
    Ok(out)
}

/// Spans exported, dropped (queue full) and failed (the collector refused or did not answer),
/// since the process started. Process-wide because the subscriber that produces them is.
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// `(outcome, spans)` for `spark_otel_spans_total`.
pub fn span_counts() -> [(&'static str, u64); 3] {
    [
        ("exported", EXPORTED.load(Ordering::Relaxed)),
        ("dropped", DROPPED.load(Ordering::Relaxed)),
        ("failed", FAILED.load(Ordering::Relaxed)),
    ]
}

/// Hands finished spans to the export task without ever waiting: a full queue drops the span.
#[derive(Debug)]
struct QueueProcessor {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() && self.tx.try_send(span).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    // Flushing is the export task's job (`SpanExport::run` drains on shutdown); these are
    // called from synchronous code that must not block a runtime thread.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export side of the pipeline: run it on the runtime with [`SpanExport::run`].
pub struct SpanExport {
    rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    max_batch: usize,
    delay: Duration,
    /// Kept so the tracer's provider lives as long as the export does.
    _provider: SdkTracerProvider,
}

/// Builds the tracer the `tracing` layer writes to and the export task that sends its spans.
/// Needs no runtime: the task is started later with [`SpanExport::run`].
pub fn pipeline(cfg: &TraceConfig) -> Result<(SdkTracer, SpanExport), String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let http = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .build()
        .map_err(|e| format!("OTLP exporter: cannot build the HTTP client: {e}"))?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(cfg.endpoint.clone())
        .with_timeout(cfg.timeout)
        .with_headers(cfg.headers.iter().cloned().collect())
        .build()
        .map_err(|e| format!("OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(cfg.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    // The processor does not pass the resource on (the exporter is not its own): set it here.
    exporter.set_resource(&resource);
    let (tx, rx) = mpsc::channel(cfg.max_queue.max(1));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(QueueProcessor { tx })
        .with_sampler(cfg.sampler.sampler())
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("spark-gateway");
    Ok((
        tracer,
        SpanExport {
            rx,
            exporter,
            max_batch: cfg.max_batch.max(1),
            delay: cfg.delay,
            _provider: provider,
        },
    ))
}

impl SpanExport {
    /// Sends batches of `max_batch` spans, or whatever has waited `delay`, one export at a time,
    /// until `shutdown` resolves; then sends what is queued and returns. While an export is in
    /// flight new spans wait in the bounded queue.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(self.max_batch);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                n = self.rx.recv_many(&mut batch, self.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    if batch.len() >= self.max_batch {
                        self.export(&mut batch).await;
                    }
                }
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        self.export(&mut batch).await;
                    }
                }
            }
        }
        // Shutdown: what is queued now goes out; spans ended later are dropped and counted.
        self.rx.close();
        while let Some(span) = self.rx.recv().await {
            batch.push(span);
            if batch.len() >= self.max_batch {
                self.export(&mut batch).await;
            }
        }
        if !batch.is_empty() {
            self.export(&mut batch).await;
        }
    }

    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        let spans = std::mem::replace(batch, Vec::with_capacity(self.max_batch));
        let n = spans.len() as u64;
        match self.exporter.export(spans).await {
            Ok(()) => {
                EXPORTED.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                // Once per failed batch, at most one per `delay`: the collector's fault, not a
                // request's, and it must be visible without flooding the log.
                FAILED.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(spans = n, error = %e, "OTLP span export failed; spans lost");
            }
        }
    }
}

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// Ties the request's span to the client's W3C trace context, if it sent one: continued as the
/// parent when `trust` is true, else only linked, so the request starts a trace of its own (a
/// caller cannot then force sampling or join someone else's trace). Call before the span is
/// entered. Without the OpenTelemetry layer this does nothing.
pub fn adopt_client_context(span: &tracing::Span, headers: &HeaderMap, trust: bool) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let cx = propagator().extract(&opentelemetry_http::HeaderExtractor(headers));
    let client = cx.span().span_context().clone();
    if !client.is_valid() {
        return;
    }
    if trust {
        let _ = span.set_parent(cx);
    } else {
        span.add_link(client);
    }
}

/// The span's trace id (32 hex digits), when the OpenTelemetry layer is installed.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The current span's context as `traceparent` (and `tracestate`) headers, for a request to a
/// provider. Empty when tracing is off.
pub fn outgoing_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        propagator().inject_context(&cx, &mut opentelemetry_http::HeaderInjector(&mut headers));
    }
    headers
}

/// Sets an attribute on a span's OpenTelemetry side only: the log lines do not carry it and,
/// without the layer, it costs one lookup.
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    span.set_attribute(key, value);
}

/// Marks a span failed, with `error.type` as the semantic conventions name it. `kind` is one of
/// our own bounded error kinds or a status code, never a message.
pub fn set_error(span: &tracing::Span, kind: &str) {
    span.set_attribute("error.type", kind.to_owned());
    span.set_status(opentelemetry::trace::Status::error(kind.to_owned()));
}

#[cfg(test)]
mod tests;
