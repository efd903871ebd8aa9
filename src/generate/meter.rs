//! What a generation costs and who pays: budget reservations before the upstream call, a ledger
//! row after it.
//!
//! Every path that reaches a provider goes through [`Metering::reserve`] then
//! [`Metering::finish`] exactly once (the plain call, the stream flight); an answer from the cache
//! goes through [`Metering::cached`]. The leader of a coalesced call pays for it; requests that
//! shared its answer are cached rows that cost nothing.

use std::sync::Arc;

use super::{GenerateError, GenerateRequest};
use crate::budget::{Amount, BudgetError, Budgets, Reservation};
use crate::ledger::{Ledger, Usage as LedgerUsage};
use crate::providers::simulator::token_estimate;
use crate::providers::{ProviderId, Usage};

#[derive(Clone)]
pub struct Metering {
    pub ledger: Ledger,
    pub budgets: Arc<Budgets>,
}

/// How a metered call ended.
pub(super) struct Outcome<'a> {
    pub provider: ProviderId,
    pub model: &'a str,
    pub usage: Usage,
    /// `ok`, or the error code.
    pub status: &'a str,
    pub latency_ms: u64,
}

impl Metering {
    /// The most the request can use: its input estimate and `max_tokens` of output, costed at
    /// the dearest price among the models of its plan.
    fn worst_case(&self, req: &GenerateRequest) -> Amount {
        let input = req.input_estimate();
        let output = u64::from(req.max_tokens);
        Amount {
            nusd: req
                .plan
                .iter()
                .map(|(_, model)| self.ledger.price(model, input, output).0)
                .max()
                .unwrap_or(0),
            tokens: i64::try_from(input.saturating_add(output)).unwrap_or(i64::MAX),
        }
    }

    /// Holds the worst case against the caller's budgets, or refuses.
    pub(super) async fn reserve(
        &self,
        req: &GenerateRequest,
    ) -> Result<Reservation, GenerateError> {
        if req.account.limits.is_empty() {
            return Ok(Reservation::none());
        }
        self.budgets
            .reserve(&req.account.limits, self.worst_case(req))
            .await
            .map_err(|e| match e {
                BudgetError::Exceeded(e) => GenerateError::BudgetExceeded(e),
                BudgetError::Unavailable(why) => GenerateError::LedgerUnavailable(why),
            })
    }

    /// Writes the call's ledger row and settles its reservation with the real cost.
    pub(super) fn finish(&self, req: &GenerateRequest, reservation: Reservation, o: &Outcome<'_>) {
        let nusd = self.ledger.record(&row(req, o, false));
        let tokens = o.usage.input_tokens.saturating_add(o.usage.output_tokens);
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        self.budgets.settle(reservation, Amount { nusd, tokens });
    }

    /// A request answered from the cache (or by another request's call): a row that costs
    /// nothing.
    pub(super) fn cached(&self, req: &GenerateRequest, g: &super::Generation, latency_ms: u64) {
        let o = Outcome {
            provider: g.provider,
            model: &g.model,
            usage: g.usage,
            status: "ok",
            latency_ms,
        };
        self.ledger.record(&row(req, &o, true));
    }

    /// What a stream that ended early used, as far as the gateway can tell: the input estimate
    /// and the text relayed so far.
    pub(super) fn estimate(req: &GenerateRequest, text: &str) -> Usage {
        Usage {
            input_tokens: req.input_estimate(),
            output_tokens: token_estimate(text),
        }
    }
}

/// The ledger's view of a request and how it ended.
fn row<'a>(req: &'a GenerateRequest, o: &'a Outcome<'_>, cached: bool) -> LedgerUsage<'a> {
    LedgerUsage {
        request_id: &req.account.request_id,
        key_id: req.account.key_id.as_deref(),
        user_id: &req.account.user_id,
        route: req.account.route,
        provider: o.provider.as_str(),
        model: o.model,
        engine: req.engine.as_str(),
        input_tokens: o.usage.input_tokens,
        output_tokens: o.usage.output_tokens,
        cached,
        status: o.status,
        latency_ms: o.latency_ms,
    }
}
