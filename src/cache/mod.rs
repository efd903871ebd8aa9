//! The response cache: successful answers, shared by identical requests.
//!
//! Sits after the sanitizer and before the provider router in DESIGN.md's request path. It knows
//! nothing of what it stores or how keys are made: the generation service hands it a
//! [`CacheKey`] (a digest of exactly what is sent upstream) and a value implementing
//! [`CacheValue`]. A moka `future::Cache`, bounded in bytes by a weigher and expiring after
//! `SPARK_CACHE_TTL`. Concurrent identical misses share one upstream call (moka's
//! `or_try_insert_with` runs the first caller's future and hands its result to the others);
//! errors are never stored. moka keeps no statistics, so hits and misses are counted here.
//!
//! With `REDIS_URL` a second level is shared by every replica. Redis is not trusted: anyone who
//! can write to it could otherwise hand code to every game project behind the gateway. So every
//! shared value carries an HMAC-SHA256 tag over the cache key and the value
//! (`SPARK_CACHE_HMAC_KEY`), is size-bounded, and is checked by the caller against its request
//! before use; a value that fails any check is a miss and is replaced. A purge bumps a namespace
//! generation in Redis (`spark:cache:gen`): every replica's lookups move to the new namespace at
//! once, and each replica empties its memory level when it sees the generation change (checked
//! every second), so a purged answer does not come back from anywhere.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tracing::Instrument;

use hmac::{Hmac, KeyInit};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::redis::RedisBackend;
use shared::{GENERATION_KEY, L2_MAX_VALUE_BYTES, SharedLevel, read_generation};

mod shared;
use crate::telemetry::Metrics;

/// Whether callers share cached answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// The same prompt costs once, whoever asks.
    Global,
    /// Each caller sees only answers to its own requests.
    Key,
}

impl CacheScope {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "global" => Some(CacheScope::Global),
            "key" => Some(CacheScope::Key),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Global => "global",
            CacheScope::Key => "key",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Zero turns the cache off.
    pub ttl: Duration,
    pub max_bytes: u64,
    pub scope: CacheScope,
    /// Authenticates second-level values. `None`: a random key per process (no sharing).
    pub hmac_key: Option<SecretString>,
}

/// How a request was answered, for `X-Cache` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Bypass,
}

impl CacheResult {
    pub fn header(self) -> &'static str {
        match self {
            CacheResult::Hit => "HIT",
            CacheResult::Miss => "MISS",
            CacheResult::Bypass => "BYPASS",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
        }
    }
}

pub type CacheKey = [u8; 32];

/// What the cache needs of a value: its weight for the byte bound, and a byte form for the
/// shared level.
pub trait CacheValue: Send + Sync + Sized + 'static {
    /// Approximate heap size in bytes.
    fn weight(&self) -> u32;
    fn encode(&self) -> Vec<u8>;
    /// `None` for bytes this build does not understand (another version, garbage): a miss.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// What the health endpoint shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheStats {
    pub entries: u64,
    pub weighted_bytes: u64,
    pub hit_rate: f64,
}

pub struct ResponseCache<V> {
    /// `None` when the TTL is zero: every request bypasses.
    store: Option<moka::future::Cache<CacheKey, Arc<V>>>,
    scope: CacheScope,
    ttl: Duration,
    /// The shared second level, when configured.
    shared: Option<Arc<SharedLevel>>,
    hits: AtomicU64,
    misses: AtomicU64,
    metrics: Arc<Metrics>,
}

impl<V: CacheValue> ResponseCache<V> {
    /// Must be called inside a tokio runtime when `redis` is set (it starts the purge watcher).
    pub fn new(cfg: &CacheConfig, metrics: Arc<Metrics>, redis: Option<Arc<RedisBackend>>) -> Self {
        let store = (!cfg.ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(cfg.max_bytes)
                .weigher(|_k: &CacheKey, v: &Arc<V>| v.weight())
                .time_to_live(cfg.ttl)
                .build()
        });
        let shared = redis.filter(|_| store.is_some()).and_then(|redis| {
            let key: Vec<u8> = match &cfg.hmac_key {
                Some(k) => k.expose_secret().as_bytes().to_vec(),
                None => {
                    tracing::warn!(
                        "SPARK_CACHE_HMAC_KEY is unset: this replica signs its shared cache values \
                         with a key of its own, so replicas do not share cached answers"
                    );
                    rand::random::<[u8; 32]>().to_vec()
                }
            };
            let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).ok()?;
            Some(Arc::new(SharedLevel {
                redis,
                mac,
                generation: AtomicU64::new(0),
            }))
        });
        let cache = ResponseCache {
            store,
            scope: cfg.scope,
            ttl: cfg.ttl,
            shared,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            metrics,
        };
        cache.watch_purges();
        cache
    }

    /// Follows the shared purge generation: when another replica purges, this one empties its
    /// memory level too. Polling once a second costs one tiny `GET` and, unlike pub/sub, cannot
    /// miss a purge sent while this replica was disconnected.
    fn watch_purges(&self) {
        let (Some(shared), Some(store)) = (&self.shared, &self.store) else {
            return;
        };
        let shared = Arc::downgrade(shared);
        let store = store.clone();
        crate::telemetry::spawn_named("cache-purge-watch", async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                if let Some(seen) = read_generation(&shared.redis).await {
                    let previous = shared.generation.swap(seen, Ordering::Relaxed);
                    if previous != seen {
                        store.invalidate_all();
                        tracing::info!(
                            generation = seen,
                            "shared cache purged elsewhere; memory level emptied"
                        );
                    }
                }
            }
        });
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    pub fn scope(&self) -> CacheScope {
        self.scope
    }

    /// Answers from the cache, or runs the future `generate` makes (once for all concurrent
    /// callers of the same key) and stores its success. With `read` false the cache is not
    /// consulted but a fresh answer is still stored (`Cache-Control: no-cache`). `fits` checks a
    /// value found in the shared level against the request; one that does not fit is a miss and
    /// is replaced.
    ///
    /// Why `generate` makes the future instead of being it, and why the miss path is boxed: a
    /// future is as large as its largest state, and it is copied whole each time it moves. The
    /// provider call and moka's insert around it made this future 12.7 KB and every API
    /// handler's 13.9 KB, copied several times per request, hits included (6% of a hit's CPU
    /// was `memmove`). A hit now runs a small lookup; the call's future exists, on the heap, only
    /// when there is something to generate.
    pub async fn get_or_generate<E, F, Fut>(
        &self,
        key: CacheKey,
        read: bool,
        fits: impl Fn(&V) -> bool,
        generate: F,
    ) -> Result<(Arc<V>, CacheResult), E>
    where
        E: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let Some(store) = &self.store else {
            return self.count(
                Box::pin(generate()).await.map(Arc::new),
                CacheResult::Bypass,
            );
        };
        if !read {
            let fresh = Arc::new(Box::pin(generate()).await?);
            self.store_shared(&key, &fresh);
            store.insert(key, Arc::clone(&fresh)).await;
            return self.count(Ok(fresh), CacheResult::Bypass);
        }
        if let Some(found) = store.get(&key).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return self.count(Ok(found), CacheResult::Hit);
        }
        Box::pin(self.fill(store, key, fits, generate)).await
    }

    /// The miss path of [`get_or_generate`](Self::get_or_generate): the shared level, else one
    /// generation for every concurrent caller of `key` (moka's `or_try_insert_with`). A caller
    /// that finds the value another inserted since its lookup counts a hit.
    async fn fill<E, F, Fut>(
        &self,
        store: &moka::future::Cache<CacheKey, Arc<V>>,
        key: CacheKey,
        fits: impl Fn(&V) -> bool,
        generate: F,
    ) -> Result<(Arc<V>, CacheResult), E>
    where
        E: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let from_l2 = AtomicBool::new(false);
        let entry = store
            .entry(key)
            .or_try_insert_with(async {
                if let Some(v) = self.load_shared(&key, &fits).await {
                    from_l2.store(true, Ordering::Relaxed);
                    return Ok(Arc::new(v));
                }
                let fresh = Arc::new(generate().await?);
                self.store_shared(&key, &fresh);
                Ok(fresh)
            })
            .await
            .map_err(|e: Arc<E>| (*e).clone());
        match entry {
            Ok(entry) => {
                // An answer another replica generated is a hit too: nobody paid for it here.
                let result = if entry.is_fresh() && !from_l2.load(Ordering::Relaxed) {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    CacheResult::Miss
                } else {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    CacheResult::Hit
                };
                self.count(Ok(entry.into_value()), result)
            }
            Err(e) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                self.count(Err(e), CacheResult::Miss)
            }
        }
    }

    /// A cached answer, without generating on a miss (the streaming path). Counts a hit when
    /// found; the caller counts the miss when it stores the fresh answer.
    pub async fn lookup(&self, key: &CacheKey, fits: impl Fn(&V) -> bool) -> Option<Arc<V>> {
        let store = self.store.as_ref()?;
        let found = match store.get(key).await {
            Some(g) => Some(g),
            None => {
                let g = Arc::new(self.load_shared(key, &fits).await?);
                store.insert(*key, Arc::clone(&g)).await;
                Some(g)
            }
        };
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.metrics.cache_request(CacheResult::Hit.label());
        }
        found
    }

    /// Stores a fresh answer in both levels (the streaming path), counting the lookup's result.
    pub async fn store_fresh(&self, key: CacheKey, value: V, result: CacheResult) {
        if result == CacheResult::Miss {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.cache_request(result.label());
        if let Some(store) = &self.store {
            let value = Arc::new(value);
            self.store_shared(&key, &value);
            store.insert(key, value).await;
        }
    }

    async fn load_shared(&self, key: &CacheKey, fits: &impl Fn(&V) -> bool) -> Option<V> {
        let shared = self.shared.as_ref()?;
        let sealed = shared
            .redis
            .get(&shared.key(key))
            .instrument(tracing::debug_span!("cache_shared_lookup"))
            .await
            .ok()??;
        let value = shared
            .open(key, &sealed)
            .and_then(V::decode)
            .filter(|v| fits(v));
        if value.is_none() {
            // Tampered, foreign or stale: not served; the fresh answer overwrites it.
            self.metrics.cache_l2_rejected.inc();
            tracing::warn!("a shared cache value failed its integrity or request check; ignored");
        }
        value
    }

    /// Writes to the shared level without making the response wait for Redis.
    fn store_shared(&self, key: &CacheKey, value: &V) {
        let Some(shared) = &self.shared else {
            return;
        };
        let payload = value.encode();
        if payload.is_empty() || payload.len() > L2_MAX_VALUE_BYTES {
            return;
        }
        let sealed = shared.seal(key, &payload);
        let redis_key = shared.key(key);
        let redis = Arc::clone(&shared.redis);
        let ttl = self.ttl;
        crate::telemetry::spawn_named("cache-l2-write", async move {
            // Best effort: a failure is counted and logged by the backend, and the answer is
            // still served from this replica's memory.
            let _ = redis.set_px(&redis_key, sealed, ttl).await;
        });
    }

    fn count<E>(
        &self,
        outcome: Result<Arc<V>, E>,
        result: CacheResult,
    ) -> Result<(Arc<V>, CacheResult), E> {
        self.metrics.cache_request(result.label());
        outcome.map(|g| (g, result))
    }

    /// Drops every entry (the admin purge): this replica's memory level at once, and the shared
    /// level for every replica by moving to a new namespace generation. Returns how many entries
    /// this replica held. Fails only when the shared level could not be purged: the caller must
    /// not report a purge that did not happen.
    pub async fn purge(&self) -> Result<u64, crate::redis::RedisError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let mut result = Ok(());
        if let Some(shared) = &self.shared {
            match shared
                .redis
                .run("cache_purge", |mut c| async move {
                    redis::cmd("INCR")
                        .arg(GENERATION_KEY)
                        .query_async::<u64>(&mut c)
                        .await
                })
                .await
            {
                Ok(generation) => shared.generation.store(generation, Ordering::Relaxed),
                Err(e) => result = Err(e),
            }
        }
        store.run_pending_tasks().await;
        let n = store.entry_count();
        store.invalidate_all();
        store.run_pending_tasks().await;
        result.map(|()| n)
    }

    /// Figures for health. moka's counts are estimates brought up to date by its own
    /// housekeeping: health reads them as they are and does no maintenance per call (a probe
    /// every few seconds must not pay for the cache's upkeep).
    pub fn stats(&self) -> CacheStats {
        let (entries, weighted_bytes) = match &self.store {
            Some(store) => (store.entry_count(), store.weighted_size()),
            None => (0, 0),
        };
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        CacheStats {
            entries,
            weighted_bytes,
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
        }
    }
}

#[cfg(test)]
mod tests;
