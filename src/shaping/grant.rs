//! What a request holds of a lane: its place in line while it waits ([`Place`]) and the
//! capacity it took once admitted ([`Grant`]). Both give back what they hold when dropped, so a
//! request that goes away mid-wait or mid-call never leaks a slot or a place.

use std::sync::Arc;

use tokio::time::Instant;

use super::Lane;
use super::queue::Class;

/// A waiting request's place in line; dropping it while still waiting gives the place up.
pub(super) struct Place<'a> {
    pub(super) lane: &'a Arc<Lane>,
    pub(super) class: Class,
    pub(super) caller: Arc<str>,
    pub(super) id: u64,
    pub(super) waiting: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.waiting {
            let mut st = self.lane.lock();
            st.line.remove(self.class, &self.caller, self.id);
            self.lane.set_depth(&st, self.class);
            drop(st);
            // The head may have changed.
            self.lane.changed.notify_waiters();
        }
    }
}

/// Capacity taken for one call: its in-flight slot is released when dropped; [`Grant::settle`]
/// corrects the token charge with the real usage.
#[derive(Debug)]
pub struct Grant {
    pub(super) lane: Arc<Lane>,
    pub(super) tokens: u64,
}

impl Grant {
    /// The call used `tokens` (input + output): the difference from the estimate is charged or
    /// refunded.
    pub fn settle(&self, tokens: u64) {
        let delta = i64::try_from(tokens).unwrap_or(i64::MAX)
            - i64::try_from(self.tokens).unwrap_or(i64::MAX);
        if delta == 0 {
            return;
        }
        let mut st = self.lane.lock();
        let Some(g) = st.tpm.as_mut() else {
            // No token budget to correct.
            return;
        };
        g.adjust(delta, Instant::now());
        drop(st);
        if self.lane.shared.is_some() {
            let lane = Arc::clone(&self.lane);
            crate::telemetry::spawn_named("shaping-settle", async move {
                if let Some(shared) = &lane.shared {
                    let _ = shared.adjust_tokens(delta).await;
                }
            });
        }
        if delta < 0 {
            // A refund may let the head of the line go sooner.
            self.lane.changed.notify_waiters();
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let mut st = self.lane.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        drop(st);
        self.lane.changed.notify_waiters();
    }
}
