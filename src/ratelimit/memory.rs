//! The in-memory backend: `governor` keyed GCRA limiters, one per route class, plus one per
//! overridden user.
//!
//! governor is built without `quanta` (its TSC clock can run backwards across cores and reject
//! requests below the burst, governor#299), so the clock is std's monotonic one; tests pass a
//! `FakeRelativeClock`. A keyed limiter keeps an entry per key forever unless told otherwise:
//! [`Limiter::maintain`] drops keys whose bucket is full again, which is the same as forgetting
//! them, so memory follows the number of recently active keys, not of keys ever seen.

use std::collections::HashMap;
use std::num::NonZeroU32;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota as GQuota, RateLimiter};

use super::{Decision, LimitKey, Limiter, Quota, Quotas, RouteClass};

type Keyed<C> = RateLimiter<String, DefaultKeyedStateStore<String>, C, StateInformationMiddleware>;
type ByQuota<C> = HashMap<(RouteClass, Quota), std::sync::Arc<Keyed<C>>>;

pub struct MemoryLimiter<C: Clock = DefaultClock> {
    quotas: Quotas,
    classes: HashMap<RouteClass, Keyed<C>>,
    /// An overridden user's own limiter per class (their quota differs from everyone else's).
    overrides: HashMap<(RouteClass, String), Keyed<C>>,
    /// One limiter per class and quota that managed keys carry, made on first use. Quotas are
    /// set by the master key through the admin API, so there are few; past
    /// [`MAX_KEY_QUOTAS`] a key is limited by its route's quota instead of growing this.
    by_quota: std::sync::RwLock<ByQuota<C>>,
    clock: C,
}

/// Distinct (class, quota) limiters for managed keys at most.
const MAX_KEY_QUOTAS: usize = 4_096;

fn governor_quota(q: Quota) -> GQuota {
    let burst = NonZeroU32::new(q.burst).unwrap_or(NonZeroU32::MIN);
    GQuota::with_period(q.interval())
        .unwrap_or_else(|| GQuota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl MemoryLimiter<DefaultClock> {
    pub fn new(quotas: Quotas) -> Self {
        Self::with_clock(quotas, DefaultClock::default())
    }
}

impl<C: Clock + Clone> MemoryLimiter<C> {
    pub fn with_clock(quotas: Quotas, clock: C) -> Self {
        let keyed = |q: Quota| {
            RateLimiter::dashmap_with_clock(governor_quota(q), clock.clone())
                .with_middleware::<StateInformationMiddleware>()
        };
        let classes = RouteClass::ALL
            .into_iter()
            .map(|c| (c, keyed(quotas.for_class(c))))
            .collect();
        let overrides = quotas
            .overrides
            .iter()
            .flat_map(|(user, q)| RouteClass::ALL.map(|c| ((c, user.clone()), keyed(*q))))
            .collect();
        MemoryLimiter {
            quotas,
            classes,
            overrides,
            by_quota: std::sync::RwLock::new(HashMap::new()),
            clock,
        }
    }

    /// The decision, synchronously (the trait method just calls this).
    pub fn decide(&self, class: RouteClass, key: &LimitKey) -> Decision {
        if let Some(quota) = key.own_quota()
            && let Some(limiter) = self.key_limiter(class, quota)
        {
            return self.step(&limiter, quota, key);
        }
        let (limiter, quota) = match key.user().and_then(|u| {
            Some((
                self.overrides.get(&(class, u.to_owned()))?,
                self.quotas.overrides.get(u)?,
            ))
        }) {
            Some((l, q)) => (l, *q),
            None => match self.classes.get(&class) {
                Some(l) => (l, self.quotas.for_class(class)),
                // Every class is built in `with_clock`; an unknown one is not limited.
                None => return unlimited(self.quotas.for_class(class)),
            },
        };
        self.step(limiter, quota, key)
    }

    /// The shared limiter for a managed key's own quota on `class`.
    fn key_limiter(&self, class: RouteClass, quota: Quota) -> Option<std::sync::Arc<Keyed<C>>> {
        if let Some(l) = self.by_quota.read().ok()?.get(&(class, quota)) {
            return Some(std::sync::Arc::clone(l));
        }
        let mut map = self.by_quota.write().ok()?;
        if map.len() >= MAX_KEY_QUOTAS && !map.contains_key(&(class, quota)) {
            return None;
        }
        let l = map.entry((class, quota)).or_insert_with(|| {
            std::sync::Arc::new(
                RateLimiter::dashmap_with_clock(governor_quota(quota), self.clock.clone())
                    .with_middleware::<StateInformationMiddleware>(),
            )
        });
        Some(std::sync::Arc::clone(l))
    }

    fn step(&self, limiter: &Keyed<C>, quota: Quota, key: &LimitKey) -> Decision {
        let interval = quota.interval();
        match limiter.check_key(&key.id()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: quota.limit,
                    remaining,
                    reset: interval * quota.burst.saturating_sub(remaining),
                    retry_after: std::time::Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    limit: quota.limit,
                    remaining: 0,
                    reset: wait + interval * quota.burst.saturating_sub(1),
                    retry_after: wait,
                }
            }
        }
    }

    /// Keys currently held, for the memory benchmark.
    pub fn keys(&self) -> usize {
        self.classes.values().map(|l| l.len()).sum::<usize>()
            + self.overrides.values().map(|l| l.len()).sum::<usize>()
            + self
                .by_quota
                .read()
                .map_or(0, |m| m.values().map(|l| l.len()).sum::<usize>())
    }

    pub fn retain_recent(&self) {
        for l in self.classes.values().chain(self.overrides.values()) {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Ok(map) = self.by_quota.read() {
            for l in map.values() {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }
}

fn unlimited(q: Quota) -> Decision {
    Decision {
        allowed: true,
        limit: q.limit,
        remaining: q.burst,
        reset: std::time::Duration::ZERO,
        retry_after: std::time::Duration::ZERO,
    }
}

#[async_trait]
impl<C: Clock + Clone + Send + Sync> Limiter for MemoryLimiter<C>
where
    C::Instant: Send + Sync,
{
    async fn check(&self, class: RouteClass, key: &LimitKey) -> Decision {
        self.decide(class, key)
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    fn ok(&self) -> bool {
        true
    }

    fn maintain(&self) {
        self.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    fn quotas(generate: &str) -> Quotas {
        Quotas {
            generate: Quota::parse(generate).unwrap(),
            export: Quota::parse("100/min").unwrap(),
            openai: Quota::parse("100/min").unwrap(),
            anthropic: Quota::parse("100/min").unwrap(),
            overrides: Quotas::parse_overrides("vip=100/min;slow=1/min,burst=1").unwrap(),
            master_exempt: true,
        }
    }

    fn user(u: &str) -> LimitKey {
        LimitKey::User(u.into())
    }

    #[test]
    fn two_per_minute_burst_two_allows_two_then_limits_with_exact_headers() {
        let clock = FakeRelativeClock::default();
        let l = MemoryLimiter::with_clock(quotas("2/min,burst=2"), clock.clone());
        let a = l.decide(RouteClass::Generate, &user("alice"));
        assert_eq!((a.allowed, a.limit, a.remaining), (true, 2, 1));
        assert_eq!(a.reset, Duration::from_secs(30));
        let b = l.decide(RouteClass::Generate, &user("alice"));
        assert_eq!((b.allowed, b.remaining), (true, 0));
        assert_eq!(b.reset, Duration::from_secs(60));
        let c = l.decide(RouteClass::Generate, &user("alice"));
        assert!(!c.allowed);
        assert_eq!(c.remaining, 0);
        assert_eq!(c.retry_after, Duration::from_secs(30));
        assert_eq!(c.reset, Duration::from_secs(60));
        // Another key has its own bucket.
        assert!(l.decide(RouteClass::Generate, &user("bob")).allowed);
        // Half a minute later one request fits again.
        clock.advance(Duration::from_secs(30));
        let d = l.decide(RouteClass::Generate, &user("alice"));
        assert_eq!((d.allowed, d.remaining), (true, 0));
    }

    #[test]
    fn overrides_replace_the_quota_for_that_user_only() {
        let l = MemoryLimiter::with_clock(quotas("2/min"), FakeRelativeClock::default());
        for _ in 0..50 {
            assert!(l.decide(RouteClass::Generate, &user("vip")).allowed);
        }
        assert!(l.decide(RouteClass::Generate, &user("slow")).allowed);
        let d = l.decide(RouteClass::Generate, &user("slow"));
        assert!(!d.allowed);
        assert_eq!(d.limit, 1);
        assert_eq!(d.retry_after, Duration::from_secs(60));
    }

    #[test]
    fn retain_recent_forgets_keys_whose_buckets_are_full_again() {
        let clock = FakeRelativeClock::default();
        let l = MemoryLimiter::with_clock(quotas("60/min"), clock.clone());
        for i in 0..1000 {
            l.decide(
                RouteClass::Generate,
                &LimitKey::Ip(std::net::IpAddr::from([
                    10,
                    0,
                    (i / 256) as u8,
                    (i % 256) as u8,
                ])),
            );
        }
        assert_eq!(l.keys(), 1000);
        l.retain_recent();
        assert_eq!(l.keys(), 1000, "buckets not yet full again are kept");
        clock.advance(Duration::from_secs(2));
        l.retain_recent();
        assert_eq!(l.keys(), 0);
    }
}
