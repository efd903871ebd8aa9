//! The trace side of a provider attempt: its span, named and attributed as the OpenTelemetry
//! GenAI semantic conventions say, and what its outcome adds to it. Kept apart from the walk so
//! the routing rules read without the attribute lists.

use crate::providers::{CompletionRequest, ProviderError, ProviderId};
use crate::telemetry::trace;

/// One provider attempt's span, named and attributed as the OpenTelemetry GenAI semantic
/// conventions say (`chat {model}`, a client span). A `debug` span: when no trace is exported
/// it is disabled at its call site and costs nothing.
pub(super) fn attempt_span(
    id: ProviderId,
    call: &CompletionRequest,
    retry: u32,
    index: usize,
) -> tracing::Span {
    tracing::debug_span!(
        "provider_attempt",
        otel.name = %format_args!("chat {}", call.model),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.system = id.as_str(),
        gen_ai.provider.name = id.as_str(),
        gen_ai.request.model = %call.model,
        // Integers as i64: the OpenTelemetry layer records unsigned fields as text.
        gen_ai.request.max_tokens = i64::from(call.max_tokens),
        spark.retry = i64::from(retry),
        spark.plan_index = index as i64,
    )
}

/// What the provider answered, on the attempt's span: the model it reports and the tokens.
pub(super) fn record_answer(span: &tracing::Span, model: &str, usage: crate::providers::Usage) {
    trace::set_attribute(span, "gen_ai.response.model", model.to_owned());
    trace::set_attribute(span, "gen_ai.usage.input_tokens", usage.input_tokens as i64);
    trace::set_attribute(
        span,
        "gen_ai.usage.output_tokens",
        usage.output_tokens as i64,
    );
}

/// A failed attempt on its span: the status when there was one, and the error's kind (a fixed
/// word, never the provider's message).
pub(super) fn record_attempt_error(span: &tracing::Span, error: &ProviderError) {
    if let Some(status) = error.status() {
        trace::set_attribute(span, "http.response.status_code", i64::from(status));
    }
    trace::set_error(span, error.kind());
}
