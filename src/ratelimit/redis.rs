//! Redis, shared by every replica: the connection, the GCRA script, and the limiter on top.
//!
//! One [`RedisBackend`] serves the limiter and the second-level response cache. It connects in the
//! background (a gateway must start while Redis is down), hands out clones of the `redis` crate's
//! `ConnectionManager` (which reconnects by itself), bounds every operation by a short timeout so
//! Redis can never hold a request, and keeps a health flag that the health endpoint reads. The
//! limiter falls back to its memory twin on any Redis error and counts it in
//! `spark_redis_fallback_total{op="ratelimit"}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{Decision, LimitKey, Limiter, MemoryLimiter, Quotas, RouteClass};
use crate::telemetry::Metrics;

/// GCRA with the server's clock (no replica clock skew), one key per limit (cluster-safe), and an
/// expiry so idle keys vanish. Returns {allowed, remaining, retry_after_us, reset_after_us}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((now - (new_tat - tolerance)) / interval), 0, new_tat - now}
";

pub struct RedisBackend {
    conn: RwLock<Option<ConnectionManager>>,
    healthy: AtomicBool,
    timeout: Duration,
    gcra: redis::Script,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("not connected")]
    NotConnected,
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

impl RedisBackend {
    /// Starts connecting in the background; until it succeeds every operation falls back.
    /// Must be called inside a tokio runtime.
    pub fn connect(
        url: &SecretString,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        // Parse now so a malformed URL is a start-up error, not an endless retry loop. The URL
        // holds a password: errors never include it.
        let client = redis::Client::open(url.expose_secret())
            .map_err(|_| "REDIS_URL is not a valid redis:// URL".to_owned())?;
        let backend = Arc::new(RedisBackend {
            conn: RwLock::new(None),
            healthy: AtomicBool::new(false),
            timeout,
            gcra: redis::Script::new(GCRA),
            metrics,
        });
        let weak = Arc::downgrade(&backend);
        tokio::spawn(async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            loop {
                let Some(backend) = weak.upgrade() else {
                    return;
                };
                match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                    Ok(conn) => {
                        if let Ok(mut slot) = backend.conn.write() {
                            *slot = Some(conn);
                        }
                        backend.healthy.store(true, Ordering::Relaxed);
                        tracing::info!("connected to Redis");
                        return;
                    }
                    Err(_) => {
                        backend.healthy.store(false, Ordering::Relaxed);
                        drop(backend);
                        tracing::warn!("Redis unreachable; serving on local state, retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(backend)
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn conn(&self) -> Option<ConnectionManager> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    /// Runs one operation under the timeout and keeps the health flag current.
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, redis::RedisError>>,
    {
        let result = match self.conn() {
            None => Err(RedisError::NotConnected),
            Some(conn) => match tokio::time::timeout(self.timeout, f(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(RedisError::Redis(e)),
                Err(_) => Err(RedisError::Timeout),
            },
        };
        match &result {
            Ok(_) => self.healthy.store(true, Ordering::Relaxed),
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                self.metrics.redis_fallback.with_label_values(&[op]).inc();
                tracing::debug!(op, error = %e, "Redis operation failed; using local state");
            }
        }
        result
    }

    /// `GET`, for the second-level cache.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        self.run("cache_get", |mut c| async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut c)
                .await
        })
        .await
    }

    /// `SET key value PX ttl`, for the second-level cache.
    pub async fn set_px(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), RedisError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.run("cache_set", |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// One GCRA step. `EVALSHA`, reloading the script on `NOSCRIPT` (the crate's `Script` does
    /// both).
    async fn gcra(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<[i64; 4], RedisError> {
        let interval_us = i64::try_from(interval.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        self.run("ratelimit", |mut c| async move {
            let v: Vec<i64> = self
                .gcra
                .key(key)
                .arg(interval_us)
                .arg(burst)
                .invoke_async(&mut c)
                .await?;
            match v.as_slice() {
                [a, b, c, d] => Ok([*a, *b, *c, *d]),
                _ => Err(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "unexpected GCRA reply",
                ))),
            }
        })
        .await
    }
}

/// The shared limiter: Redis first, the memory twin when Redis fails.
pub struct RedisLimiter {
    backend: Arc<RedisBackend>,
    fallback: MemoryLimiter,
    quotas: Quotas,
}

impl RedisLimiter {
    pub fn new(backend: Arc<RedisBackend>, quotas: Quotas) -> Self {
        RedisLimiter {
            backend,
            fallback: MemoryLimiter::new(quotas.clone()),
            quotas,
        }
    }
}

fn micros(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, class: RouteClass, key: &LimitKey) -> Decision {
        let quota = key
            .user()
            .and_then(|u| self.quotas.overrides.get(u).copied())
            .unwrap_or_else(|| self.quotas.for_class(class));
        // Keys are hashed: user ids and addresses never appear in Redis.
        let digest = Sha256::digest(key.id().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let redis_key = format!("spark:rl:{}:{hex}", class.as_str());
        match self
            .backend
            .gcra(&redis_key, quota.interval(), quota.burst)
            .await
        {
            Ok([allowed, remaining, retry_us, reset_us]) => Decision {
                allowed: allowed == 1,
                limit: quota.limit,
                remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
                reset: micros(reset_us),
                retry_after: micros(retry_us),
            },
            Err(_) => self.fallback.decide(class, key),
        }
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn ok(&self) -> bool {
        self.backend.healthy()
    }

    fn maintain(&self) {
        self.fallback.retain_recent();
    }
}
