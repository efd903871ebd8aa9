//! The response cache: successful generations, shared by identical requests.
//!
//! Sits after the sanitizer and before the provider router in DESIGN.md's request path. A moka
//! `future::Cache` keyed by a SHA-256 of everything that shapes an answer (the normalized prompt,
//! engine, provider preference, model, token budget, temperature and, with
//! `SPARK_CACHE_SCOPE=key`, the caller), bounded in bytes by a weigher and expiring after
//! `SPARK_CACHE_TTL`. Concurrent identical misses share one upstream call (moka's
//! `or_try_insert_with` runs the first caller's future and hands its result to the others);
//! errors are never stored. moka keeps no statistics, so hits and misses are counted here.
//!
//! With `REDIS_URL` a second level is shared by every replica (`spark:cache:{hash}`, same TTL): a
//! miss in memory looks in Redis before calling a provider, and a fresh answer is written to
//! both. Values carry a format version; one this build does not understand is a miss, never a
//! crash, so replicas of different versions can share a Redis during a rollout.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::generate::{GenerateError, GenerateRequest, Generation, ProviderChoice};
use crate::ratelimit::redis::RedisBackend;
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

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Zero turns the cache off.
    pub ttl: Duration,
    pub max_bytes: u64,
    pub scope: CacheScope,
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

/// What the health endpoint shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheStats {
    pub entries: u64,
    pub weighted_bytes: u64,
    pub hit_rate: f64,
}

pub struct ResponseCache {
    /// `None` when the TTL is zero: every request bypasses.
    store: Option<moka::future::Cache<CacheKey, Arc<Generation>>>,
    scope: CacheScope,
    ttl: Duration,
    /// The shared second level, when configured.
    redis: Option<Arc<RedisBackend>>,
    hits: AtomicU64,
    misses: AtomicU64,
    metrics: Arc<Metrics>,
}

/// The version of the second-level value format. Bump it when `Generation` changes shape.
const L2_VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct L2Value {
    v: u32,
    generation: Generation,
    /// `Generation::answer`, which the Spark API body leaves out.
    #[serde(default)]
    answer: String,
    #[serde(default)]
    truncated: bool,
}

fn l2_key(key: &CacheKey) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("spark:cache:{hex}")
}

fn l2_decode(bytes: &[u8]) -> Option<Generation> {
    let value: L2Value = serde_json::from_slice(bytes).ok()?;
    (value.v == L2_VERSION).then_some(Generation {
        answer: value.answer,
        truncated: value.truncated,
        ..value.generation
    })
}

fn l2_encode(g: &Generation) -> Vec<u8> {
    serde_json::to_vec(&L2Value {
        v: L2_VERSION,
        generation: g.clone(),
        answer: g.answer.clone(),
        truncated: g.truncated,
    })
    .unwrap_or_default()
}

/// Approximate heap size of a cached answer, for the byte bound.
fn weight(g: &Generation) -> u32 {
    let strings = g.id.len()
        + g.code.len()
        + g.language.len()
        + g.engine.len()
        + g.script_name.len()
        + g.file_name.len()
        + g.provider.len()
        + g.model.len()
        + g.answer.len()
        + g.warnings.iter().map(String::len).sum::<usize>();
    u32::try_from(strings + std::mem::size_of::<Generation>() + 32 + 64).unwrap_or(u32::MAX)
}

impl ResponseCache {
    pub fn new(cfg: &CacheConfig, metrics: Arc<Metrics>, redis: Option<Arc<RedisBackend>>) -> Self {
        let store = (!cfg.ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(cfg.max_bytes)
                .weigher(|_k: &CacheKey, v: &Arc<Generation>| weight(v))
                .time_to_live(cfg.ttl)
                .build()
        });
        ResponseCache {
            store,
            scope: cfg.scope,
            ttl: cfg.ttl,
            redis,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            metrics,
        }
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    /// The key for a validated request. Fields are length-prefixed so no two different requests
    /// can concatenate to the same bytes.
    pub fn key(&self, req: &GenerateRequest, caller: &Caller) -> CacheKey {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"spark-cache-v1");
        field(req.prompt.as_bytes());
        field(req.engine.as_str().as_bytes());
        match req.provider {
            ProviderChoice::Auto => field(b"auto"),
            ProviderChoice::Only(p) => field(p.as_str().as_bytes()),
        }
        field(req.model.as_deref().unwrap_or("").as_bytes());
        field(&req.max_tokens.to_le_bytes());
        match req.temperature {
            Some(t) => field(&t.to_bits().to_le_bytes()),
            None => field(b"default"),
        }
        field(req.system.as_deref().unwrap_or("").as_bytes());
        if self.scope == CacheScope::Key {
            field(caller.label().as_bytes());
        }
        h.finalize().into()
    }

    /// Answers from the cache, or runs `generate` (once for all concurrent callers of the same
    /// key) and stores its success. With `read` false the cache is not consulted but a fresh
    /// answer is still stored (`Cache-Control: no-cache`).
    pub async fn get_or_generate<F>(
        &self,
        key: CacheKey,
        read: bool,
        generate: F,
    ) -> Result<(Arc<Generation>, CacheResult), GenerateError>
    where
        F: Future<Output = Result<Generation, GenerateError>>,
    {
        let Some(store) = &self.store else {
            return self.count(generate.await.map(Arc::new), CacheResult::Bypass);
        };
        if !read {
            let fresh = Arc::new(generate.await?);
            self.store_l2(&key, &fresh).await;
            store.insert(key, Arc::clone(&fresh)).await;
            return self.count(Ok(fresh), CacheResult::Bypass);
        }
        let from_l2 = AtomicBool::new(false);
        let entry = store
            .entry(key)
            .or_try_insert_with(async {
                if let Some(g) = self.load_l2(&key).await {
                    from_l2.store(true, Ordering::Relaxed);
                    return Ok(Arc::new(g));
                }
                let fresh = Arc::new(generate.await?);
                self.store_l2(&key, &fresh).await;
                Ok(fresh)
            })
            .await
            .map_err(|e: Arc<GenerateError>| (*e).clone());
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
    pub async fn lookup(&self, key: &CacheKey) -> Option<Arc<Generation>> {
        let store = self.store.as_ref()?;
        let found = match store.get(key).await {
            Some(g) => Some(g),
            None => {
                let g = Arc::new(self.load_l2(key).await?);
                store.insert(*key, Arc::clone(&g)).await;
                Some(g)
            }
        };
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .cache_requests
                .with_label_values(&["hit"])
                .inc();
        }
        found
    }

    /// Stores a fresh answer in both levels (the streaming path), counting the lookup's result.
    pub async fn store_fresh(&self, key: CacheKey, g: Generation, result: CacheResult) {
        if result == CacheResult::Miss {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics
            .cache_requests
            .with_label_values(&[result.label()])
            .inc();
        if let Some(store) = &self.store {
            let g = Arc::new(g);
            self.store_l2(&key, &g).await;
            store.insert(key, g).await;
        }
    }

    async fn load_l2(&self, key: &CacheKey) -> Option<Generation> {
        let redis = self.redis.as_ref()?;
        let bytes = redis.get(&l2_key(key)).await.ok()??;
        l2_decode(&bytes)
    }

    async fn store_l2(&self, key: &CacheKey, g: &Generation) {
        if let Some(redis) = &self.redis {
            // Best effort: a failure is counted and logged by the backend, and the answer is
            // still served from this replica's memory.
            let _ = redis.set_px(&l2_key(key), l2_encode(g), self.ttl).await;
        }
    }

    fn count(
        &self,
        outcome: Result<Arc<Generation>, GenerateError>,
        result: CacheResult,
    ) -> Result<(Arc<Generation>, CacheResult), GenerateError> {
        self.metrics
            .cache_requests
            .with_label_values(&[result.label()])
            .inc();
        outcome.map(|g| (g, result))
    }

    /// Drops every entry (the admin purge). Returns how many there were.
    pub async fn purge(&self) -> u64 {
        let Some(store) = &self.store else {
            return 0;
        };
        store.run_pending_tasks().await;
        let n = store.entry_count();
        store.invalidate_all();
        store.run_pending_tasks().await;
        n
    }

    pub async fn stats(&self) -> CacheStats {
        let (entries, weighted_bytes) = match &self.store {
            Some(store) => {
                store.run_pending_tasks().await;
                (store.entry_count(), store.weighted_size())
            }
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
mod tests {
    use super::*;
    use crate::generate::{Engine, UsageBody};
    use std::sync::atomic::AtomicUsize;

    fn cache(ttl: Duration, scope: CacheScope) -> ResponseCache {
        ResponseCache::new(
            &CacheConfig {
                ttl,
                max_bytes: 1 << 20,
                scope,
            },
            Arc::new(Metrics::new().unwrap()),
            None,
        )
    }

    #[test]
    fn second_level_values_are_versioned_and_unknown_versions_are_misses() {
        let g = generation("x");
        assert_eq!(l2_decode(&l2_encode(&g)), Some(g.clone()));
        let future = serde_json::to_vec(&serde_json::json!({"v": 2, "generation": g})).unwrap();
        assert_eq!(l2_decode(&future), None);
        assert_eq!(l2_decode(b"garbage"), None);
    }

    fn generation(code: &str) -> Generation {
        Generation {
            id: "gen_1".into(),
            code: code.into(),
            language: "csharp".into(),
            engine: "unity".into(),
            script_name: "A".into(),
            file_name: "A.cs".into(),
            provider: "simulator".into(),
            model: "m".into(),
            cached: false,
            usage: UsageBody {
                input_tokens: 1,
                output_tokens: 2,
            },
            warnings: vec![],
            latency_ms: 0,
            answer: "the whole answer".into(),
            truncated: false,
        }
    }

    fn request(prompt: &str) -> GenerateRequest {
        GenerateRequest {
            prompt: prompt.into(),
            engine: Engine::Unity,
            provider: ProviderChoice::Auto,
            model: None,
            max_tokens: 100,
            temperature: Some(0.2),
            stream: false,
            warnings: vec![],
            system: None,
        }
    }

    #[tokio::test]
    async fn concurrent_identical_misses_run_one_generation() {
        let c = Arc::new(cache(Duration::from_secs(60), CacheScope::Global));
        let calls = Arc::new(AtomicUsize::new(0));
        let key = c.key(&request("door"), &Caller::Anonymous);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let c = Arc::clone(&c);
                let calls = Arc::clone(&calls);
                tokio::spawn(async move {
                    c.get_or_generate(key, true, async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(generation("x"))
                    })
                    .await
                })
            })
            .collect();
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
    async fn errors_are_not_stored() {
        let c = cache(Duration::from_secs(60), CacheScope::Global);
        let key = c.key(&request("door"), &Caller::Anonymous);
        let err = c
            .get_or_generate(key, true, async {
                Err(GenerateError::Invalid("boom".into()))
            })
            .await;
        assert!(err.is_err());
        let (_, r) = c
            .get_or_generate(key, true, async { Ok(generation("fresh")) })
            .await
            .unwrap();
        assert_eq!(r, CacheResult::Miss);
    }

    #[tokio::test]
    async fn no_cache_skips_the_read_but_stores_and_ttl_zero_bypasses() {
        let c = cache(Duration::from_secs(60), CacheScope::Global);
        let key = c.key(&request("door"), &Caller::Anonymous);
        c.get_or_generate(key, true, async { Ok(generation("old")) })
            .await
            .unwrap();
        let (g, r) = c
            .get_or_generate(key, false, async { Ok(generation("new")) })
            .await
            .unwrap();
        assert_eq!((g.code.as_str(), r), ("new", CacheResult::Bypass));
        let (g, r) = c
            .get_or_generate(key, true, async { Ok(generation("unused")) })
            .await
            .unwrap();
        assert_eq!((g.code.as_str(), r), ("new", CacheResult::Hit));

        let off = cache(Duration::ZERO, CacheScope::Global);
        let (_, r) = off
            .get_or_generate(key, true, async { Ok(generation("x")) })
            .await
            .unwrap();
        assert_eq!(r, CacheResult::Bypass);
        assert!(!off.enabled());
    }

    #[test]
    fn keys_separate_every_field_and_the_caller_only_in_key_scope() {
        let global = cache(Duration::from_secs(1), CacheScope::Global);
        let per_key = cache(Duration::from_secs(1), CacheScope::Key);
        let base = request("door");
        let alice = Caller::User("alice".into());
        let bob = Caller::User("bob".into());
        assert_eq!(global.key(&base, &alice), global.key(&base, &bob));
        assert_ne!(per_key.key(&base, &alice), per_key.key(&base, &bob));
        let variants = [
            GenerateRequest {
                prompt: "door2".into(),
                ..base.clone()
            },
            GenerateRequest {
                engine: Engine::Godot,
                ..base.clone()
            },
            GenerateRequest {
                provider: ProviderChoice::Only(crate::providers::ProviderId::Simulator),
                ..base.clone()
            },
            GenerateRequest {
                model: Some("m".into()),
                ..base.clone()
            },
            GenerateRequest {
                max_tokens: 101,
                ..base.clone()
            },
            GenerateRequest {
                temperature: None,
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(global.key(&v, &alice), global.key(&base, &alice), "{v:?}");
        }
    }

    #[tokio::test]
    async fn purge_empties_the_cache() {
        let c = cache(Duration::from_secs(60), CacheScope::Global);
        let key = c.key(&request("door"), &Caller::Anonymous);
        c.get_or_generate(key, true, async { Ok(generation("x")) })
            .await
            .unwrap();
        assert_eq!(c.stats().await.entries, 1);
        assert_eq!(c.purge().await, 1);
        assert_eq!(c.stats().await.entries, 0);
    }
}
