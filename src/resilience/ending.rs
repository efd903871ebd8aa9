//! How a walk ends: the error when no provider answered, and the wrappers a successful stream
//! leaves with (its breaker outcome, its shaping capacity held until it ends).

use std::time::Duration;

use super::{RouteError, breaker};
use crate::providers::{CompletionStream, ProviderError, StreamEvent};
use crate::shaping::Grant;

/// Why a walk through the plan ended without an answer: the last failure, else the time until
/// the first open circuit lets a probe through.
pub(super) fn walk_ended(
    last_error: Option<ProviderError>,
    earliest_open: Option<Duration>,
    busy: Option<Duration>,
) -> RouteError {
    match (last_error, busy, earliest_open) {
        (Some(e), _, _) => RouteError::Provider(e),
        (None, Some(retry_after), _) => RouteError::Busy { retry_after },
        (None, None, Some(retry_after)) => RouteError::Unavailable { retry_after },
        (None, None, None) => RouteError::Unavailable {
            retry_after: Duration::from_secs(1),
        },
    }
}

/// The stream holding its lane's capacity until it ends (or is dropped): a stream is in flight
/// for as long as it streams. Its real token usage settles the lane's token budget.
pub(super) fn hold_grant(stream: CompletionStream, grant: Grant) -> CompletionStream {
    use futures_util::StreamExt;
    let mut grant = Some(grant);
    Box::pin(stream.inspect(move |item| {
        if let Ok(StreamEvent::Finished { usage, .. }) = item
            && let Some(g) = grant.take()
        {
            g.settle(usage.input_tokens + usage.output_tokens);
        }
    }))
}

/// The stream after its first event, reporting its outcome to the breaker: success when it
/// finishes, failure when it breaks, nothing when the client goes away first.
pub(super) fn guard_stream(
    first: StreamEvent,
    rest: CompletionStream,
    permit: breaker::Permit,
) -> CompletionStream {
    use futures_util::StreamExt;
    let mut permit = Some(permit);
    let head = futures_util::stream::once(async move { Ok(first) });
    Box::pin(head.chain(rest).inspect(move |item| match item {
        Ok(StreamEvent::Finished { .. }) => {
            if let Some(p) = permit.take() {
                p.success();
            }
        }
        Err(e) => {
            if let Some(p) = permit.take() {
                if e.is_provider_fault() {
                    p.failure();
                } else {
                    p.neutral();
                }
            }
        }
        Ok(StreamEvent::Delta(_)) => {}
    }))
}
