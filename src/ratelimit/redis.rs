//! The rate limiter shared by every replica: one GCRA step per request as a Lua script on the
//! shared [`RedisBackend`].
//!
//! The limiter falls back to its memory twin on any Redis error (counted in
//! `spark_redis_fallback_total{op="ratelimit"}`): a Redis outage degrades global accuracy, it
//! never turns limiting off.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{Decision, LimitKey, Limiter, MemoryLimiter, Quotas, RouteClass};
use crate::redis::{RedisBackend, RedisError};

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

/// The shared limiter: Redis first, the memory twin when Redis fails.
pub struct RedisLimiter {
    backend: Arc<RedisBackend>,
    script: redis::Script,
    fallback: MemoryLimiter,
    quotas: Quotas,
}

impl RedisLimiter {
    pub fn new(backend: Arc<RedisBackend>, quotas: Quotas) -> Self {
        RedisLimiter {
            backend,
            script: redis::Script::new(GCRA),
            fallback: MemoryLimiter::new(quotas.clone()),
            quotas,
        }
    }
}

impl RedisLimiter {
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
        self.backend
            .run("ratelimit", |mut c| async move {
                let v: Vec<i64> = self
                    .script
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

fn micros(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, class: RouteClass, key: &LimitKey) -> Decision {
        let quota = self.quotas.for_key(class, key);
        // Keys are hashed: user ids and addresses never appear in Redis.
        let digest = Sha256::digest(key.id().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let redis_key = format!("spark:rl:{}:{hex}", class.as_str());
        match self.gcra(&redis_key, quota.interval(), quota.burst).await {
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
