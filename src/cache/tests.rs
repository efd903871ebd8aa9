//! Unit tests of the cache: single-flight, errors, bypass, purge, and the shared level's seal.

use super::shared::{L2_MAX_VALUE_BYTES, SharedLevel};
use super::*;
use hmac::{Hmac, KeyInit};
use sha2::Sha256;
use std::sync::atomic::AtomicUsize;

#[derive(Debug, Clone, PartialEq)]
struct Text(String);

impl CacheValue for Text {
    fn weight(&self) -> u32 {
        self.0.len() as u32 + 32
    }
    fn encode(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok().map(Text)
    }
}

fn text(s: &str) -> Text {
    Text(s.into())
}

fn cache(ttl: Duration) -> ResponseCache<Text> {
    ResponseCache::new(
        &CacheConfig {
            ttl,
            max_bytes: 1 << 20,
            scope: CacheScope::Global,
            hmac_key: None,
        },
        Arc::new(Metrics::new().unwrap()),
        None,
    )
}

const KEY: CacheKey = [7; 32];
fn any(_: &Text) -> bool {
    true
}

#[test]
fn shared_values_are_bound_to_their_key_and_tamper_evident() {
    let level = SharedLevel {
        redis: RedisBackend::disconnected(Arc::new(Metrics::new().unwrap())),
        mac: <Hmac<Sha256> as KeyInit>::new_from_slice(b"k").unwrap(),
        generation: AtomicU64::new(0),
    };
    let sealed = level.seal(&KEY, b"payload");
    assert_eq!(level.open(&KEY, &sealed), Some(&b"payload"[..]));
    // Another key, a flipped byte, a truncated value, an oversized one: all refused.
    assert_eq!(level.open(&[8; 32], &sealed), None);
    let mut flipped = sealed.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(level.open(&KEY, &flipped), None);
    assert_eq!(level.open(&KEY, &sealed[..30]), None);
    let big = level.seal(&KEY, &vec![b'x'; L2_MAX_VALUE_BYTES + 1]);
    assert_eq!(level.open(&KEY, &big), None);
    // Unsigned JSON, as the previous format stored it, is refused too.
    assert_eq!(level.open(&KEY, br#"{"v":1,"generation":{}}"#), None);
}

#[tokio::test]
async fn concurrent_identical_misses_run_one_generation() {
    let c = Arc::new(cache(Duration::from_secs(60)));
    let calls = Arc::new(AtomicUsize::new(0));
    let (release, gate) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let c = Arc::clone(&c);
            let calls = Arc::clone(&calls);
            let mut gate = gate.clone();
            crate::telemetry::spawn_named("test-task", async move {
                c.get_or_generate(KEY, true, any, || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.wait_for(|open| *open).await;
                    Ok::<_, ()>(text("x"))
                })
                .await
            })
        })
        .collect();
    // Let every task reach the cache before the leader's generation finishes.
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    release.send(true).unwrap();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap().1);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        results.iter().filter(|r| **r == CacheResult::Miss).count(),
        1
    );
    assert_eq!(
        results.iter().filter(|r| **r == CacheResult::Hit).count(),
        31
    );
}

#[tokio::test]
async fn a_hit_never_makes_the_generation() {
    let c = cache(Duration::from_secs(60));
    c.get_or_generate(KEY, true, any, || async { Ok::<_, ()>(text("x")) })
        .await
        .unwrap();
    let made = AtomicUsize::new(0);
    let (g, r) = c
        .get_or_generate(KEY, true, any, || {
            made.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, ()>(text("unused")) }
        })
        .await
        .unwrap();
    assert_eq!((g.0.as_str(), r), ("x", CacheResult::Hit));
    assert_eq!(made.load(Ordering::SeqCst), 0);
}

/// The generation's future is not part of the cache's: however large a provider call's state
/// is, a request that waits on the cache carries a small future (it is copied whole each time
/// it moves; BENCHMARKS.md, "The cache's future").
#[test]
fn the_generation_does_not_make_the_cache_future_large() {
    let c = cache(Duration::from_secs(60));
    let fut = c.get_or_generate(KEY, true, any, || async {
        let state = [7u8; 16 * 1024];
        tokio::task::yield_now().await;
        Ok::<_, ()>(text(&state.len().to_string()))
    });
    let size = std::mem::size_of_val(&fut);
    assert!(size < 4 * 1024, "get_or_generate's future is {size} bytes");
}

#[tokio::test]
async fn errors_are_not_stored() {
    let c = cache(Duration::from_secs(60));
    let err = c
        .get_or_generate(KEY, true, any, || async { Err::<Text, _>("boom") })
        .await;
    assert!(err.is_err());
    let (_, r) = c
        .get_or_generate(KEY, true, any, || async { Ok::<_, &str>(text("fresh")) })
        .await
        .unwrap();
    assert_eq!(r, CacheResult::Miss);
}

#[tokio::test]
async fn no_cache_skips_the_read_but_stores_and_ttl_zero_bypasses() {
    let c = cache(Duration::from_secs(60));
    c.get_or_generate(KEY, true, any, || async { Ok::<_, ()>(text("old")) })
        .await
        .unwrap();
    let (g, r) = c
        .get_or_generate(KEY, false, any, || async { Ok::<_, ()>(text("new")) })
        .await
        .unwrap();
    assert_eq!((g.0.as_str(), r), ("new", CacheResult::Bypass));
    let (g, r) = c
        .get_or_generate(KEY, true, any, || async { Ok::<_, ()>(text("unused")) })
        .await
        .unwrap();
    assert_eq!((g.0.as_str(), r), ("new", CacheResult::Hit));

    let off = cache(Duration::ZERO);
    let (_, r) = off
        .get_or_generate(KEY, true, any, || async { Ok::<_, ()>(text("x")) })
        .await
        .unwrap();
    assert_eq!(r, CacheResult::Bypass);
    assert!(!off.enabled());
}

#[tokio::test]
async fn purge_empties_the_cache() {
    let c = cache(Duration::from_secs(60));
    c.get_or_generate(KEY, true, any, || async { Ok::<_, ()>(text("x")) })
        .await
        .unwrap();
    c.store.as_ref().unwrap().run_pending_tasks().await;
    assert_eq!(c.stats().entries, 1);
    assert_eq!(c.purge().await.unwrap(), 1);
    assert_eq!(c.stats().entries, 0);
}
