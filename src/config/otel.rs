//! The OpenTelemetry trace-export variables (`OTEL_*`, `SPARK_OTEL_TRUST_CLIENT_CONTEXT`), read
//! and checked like every other; the pipeline they configure is `telemetry::trace`.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::reader::Reader;
use crate::telemetry::trace::{SamplerChoice, TraceConfig};

/// The OpenTelemetry variables: `None` (tracing off) when no OTLP endpoint is set. Every
/// variable is read either way, so `check-config` shows the defaults in force.
pub(super) fn read_trace(r: &mut Reader) -> Option<TraceConfig> {
    let base = r.text("OTEL_EXPORTER_OTLP_ENDPOINT");
    let traces = r.text("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let endpoint =
        match crate::telemetry::trace::traces_endpoint(base.as_deref(), traces.as_deref()) {
            Ok(e) => e,
            Err(why) => {
                r.problem(why);
                None
            }
        };
    let headers = match r.secret("OTEL_EXPORTER_OTLP_HEADERS") {
        Some(h) => {
            crate::telemetry::trace::parse_headers(h.expose_secret()).unwrap_or_else(|why| {
                r.problem(why);
                Vec::new()
            })
        }
        None => Vec::new(),
    };
    r.choice("OTEL_EXPORTER_OTLP_PROTOCOL");
    let timeout = Duration::from_millis(r.int("OTEL_EXPORTER_OTLP_TIMEOUT"));
    let service_name = r.text("OTEL_SERVICE_NAME").unwrap_or_default();
    let sampler_name = r.choice("OTEL_TRACES_SAMPLER");
    let sampler_arg = r.text("OTEL_TRACES_SAMPLER_ARG");
    let sampler =
        SamplerChoice::parse(&sampler_name, sampler_arg.as_deref()).unwrap_or_else(|why| {
            r.problem(why);
            SamplerChoice::ParentAlwaysOn
        });
    let max_queue = r.int("OTEL_BSP_MAX_QUEUE_SIZE") as usize;
    let max_batch = r.int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") as usize;
    let delay = Duration::from_millis(r.int("OTEL_BSP_SCHEDULE_DELAY"));
    let trust_client_context = r.bool("SPARK_OTEL_TRUST_CLIENT_CONTEXT");
    if max_batch > max_queue {
        r.problem(format!(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE ({max_batch}) must not exceed OTEL_BSP_MAX_QUEUE_SIZE ({max_queue})"
        ));
    }
    Some(TraceConfig {
        endpoint: endpoint?,
        headers,
        timeout,
        service_name,
        sampler,
        max_queue,
        max_batch,
        delay,
        trust_client_context,
    })
}
