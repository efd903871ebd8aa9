//! The brake on guessing keys: failed authentications counted per client address.
//!
//! Before a key is checked, an address that failed more than `SPARK_AUTH_FAILURES_PER_MIN` times
//! within a minute of its first failure is refused (429 with `Retry-After`) for the rest of that
//! minute, without its key being looked at: a brute-force run costs the attacker time, not the
//! gateway CPU. The address is the one `SPARK_TRUSTED_PROXIES` resolves, so clients behind an
//! ingress are told apart. The table is bounded (least recently used addresses leave first) so a
//! flood from many addresses cannot grow it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The window a failure count lives in.
const WINDOW: Duration = Duration::from_secs(60);
/// Most addresses tracked at once.
const MAX_ADDRESSES: u64 = 100_000;

struct Window {
    started: Instant,
    failures: AtomicU32,
}

pub struct AuthBrake {
    limit: u32,
    windows: moka::sync::Cache<IpAddr, Arc<Window>>,
    /// Windows alive now (kept by moka's eviction listener): while it is zero, which is almost
    /// always, a request pays one atomic load here instead of a hash lookup.
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl AuthBrake {
    /// `limit` failures a minute per address; 0 turns the brake off.
    pub fn new(limit: u32) -> Self {
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gone = Arc::clone(&live);
        AuthBrake {
            limit,
            windows: moka::sync::Cache::builder()
                .max_capacity(MAX_ADDRESSES)
                .time_to_live(WINDOW)
                .eviction_listener(move |_, _, _| {
                    gone.fetch_sub(1, Ordering::Relaxed);
                })
                .build(),
            live,
        }
    }

    /// Whether any address is being counted now; while not, [`AuthBrake::check`] would answer
    /// `None` for every address.
    pub fn active(&self) -> bool {
        self.limit > 0 && self.live.load(Ordering::Relaxed) > 0
    }

    /// `Some(retry_after)` when `addr` is braked now.
    pub fn check(&self, addr: IpAddr) -> Option<Duration> {
        if !self.active() {
            return None;
        }
        let w = self.windows.get(&addr)?;
        let left = WINDOW.saturating_sub(w.started.elapsed());
        (w.failures.load(Ordering::Relaxed) >= self.limit && !left.is_zero()).then_some(left)
    }

    /// Records a failed authentication from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let w = self.windows.get_with(addr, || {
            self.live.fetch_add(1, Ordering::Relaxed);
            Arc::new(Window {
                started: Instant::now(),
                failures: AtomicU32::new(0),
            })
        });
        if w.started.elapsed() >= WINDOW {
            // moka's own expiry runs on its clock; a stale window is restarted here.
            self.windows.invalidate(&addr);
            return self.failed(addr);
        }
        w.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Addresses tracked now (for tests and health).
    pub fn tracked(&self) -> u64 {
        self.windows.run_pending_tasks();
        self.windows.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_address_is_braked_past_the_limit_for_the_rest_of_its_minute() {
        let brake = AuthBrake::new(30);
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let b: IpAddr = "203.0.113.8".parse().unwrap();
        for _ in 0..30 {
            assert_eq!(brake.check(a), None);
            brake.failed(a);
        }
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(brake.check(a), Some(Duration::from_secs(40)));
        assert_eq!(brake.check(b), None, "other addresses are not affected");
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(brake.check(a), None, "the minute is over");
        brake.failed(a);
        assert_eq!(brake.check(a), None, "a new window starts at one failure");
    }

    #[test]
    fn zero_turns_it_off() {
        let brake = AuthBrake::new(0);
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..100 {
            brake.failed(a);
        }
        assert_eq!(brake.check(a), None);
        assert_eq!(brake.tracked(), 0);
    }
}
