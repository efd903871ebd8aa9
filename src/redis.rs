//! The Redis connection shared by every replica-wide feature: the rate limiter, the second-level
//! response cache and (later) key revocation.
//!
//! One [`RedisBackend`] connects in the background (a gateway must start while Redis is down),
//! hands out clones of the `redis` crate's `ConnectionManager` (which reconnects by itself),
//! bounds every operation by a short timeout so Redis can never hold a request, and keeps a
//! health flag that the health endpoint reads. Its users decide what a failure means: the limiter
//! falls back to its memory twin, the cache treats it as a miss. Every failure is counted in
//! `spark_redis_fallback_total{op}`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

use crate::telemetry::Metrics;

pub struct RedisBackend {
    conn: RwLock<Option<ConnectionManager>>,
    healthy: AtomicBool,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// After a failure, requests skip Redis until this window has passed, so a stalled Redis
    /// costs one timeout per window instead of one per request.
    backoff: Mutex<Backoff>,
    /// Set while one request probes Redis at the end of a back-off window; the others keep
    /// skipping it until the probe has answered.
    probing: AtomicBool,
}

/// The back-off after Redis failures: 1 s, doubling to 30 s, reset by a success.
#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    window: Duration,
}

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("not connected")]
    NotConnected,
    #[error("timed out")]
    Timeout,
    #[error("skipped: backing off after a failure")]
    BackingOff,
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
        let backend = Self::disconnected_with(timeout, metrics);
        let weak = Arc::downgrade(&backend);
        crate::telemetry::spawn_named("redis-connect", async move {
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
                        // Failures before the first connection say nothing about this one.
                        backend.settle(true, false);
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

    /// A backend that is not connected (yet): every operation fails fast and falls back.
    pub fn disconnected(metrics: Arc<Metrics>) -> Arc<Self> {
        Self::disconnected_with(Duration::from_millis(100), metrics)
    }

    fn disconnected_with(timeout: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(RedisBackend {
            conn: RwLock::new(None),
            healthy: AtomicBool::new(false),
            timeout,
            metrics,
            backoff: Mutex::new(Backoff::default()),
            probing: AtomicBool::new(false),
        })
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn conn(&self) -> Option<ConnectionManager> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    /// Runs one operation under the timeout and keeps the health flag current. `op` is the
    /// `spark_redis_fallback_total` label counted when it fails.
    pub async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, redis::RedisError>>,
    {
        let Some(probe) = self.admit() else {
            self.metrics.redis_fallback(op);
            return Err(RedisError::BackingOff);
        };
        let result = match self.conn() {
            None => Err(RedisError::NotConnected),
            Some(conn) => match tokio::time::timeout(self.timeout, f(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(RedisError::Redis(e)),
                Err(_) => Err(RedisError::Timeout),
            },
        };
        self.settle(result.is_ok(), probe);
        if let Err(e) = &result {
            self.metrics.redis_fallback(op);
            tracing::debug!(op, error = %e, "Redis operation failed; using local state");
        }
        result
    }

    /// Whether an operation may go to Redis now: always when no failure is recent; during a
    /// back-off window never; after it, one probe at a time. `Some(true)` marks the probe.
    fn admit(&self) -> Option<bool> {
        let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        match backoff.until {
            None => Some(false),
            Some(until) if Instant::now() < until => None,
            Some(_) => self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                .then_some(true),
        }
    }

    /// Records an operation's outcome: a success ends the back-off, a failure starts or
    /// doubles it.
    fn settle(&self, ok: bool, probe: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            *backoff = Backoff::default();
        } else {
            backoff.window = if backoff.window.is_zero() {
                BACKOFF_FIRST
            } else {
                (backoff.window * 2).min(BACKOFF_MAX)
            };
            backoff.until = Some(Instant::now() + backoff.window);
        }
        if probe {
            self.probing.store(false, Ordering::Release);
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ping(backend: &RedisBackend) -> Result<(), RedisError> {
        backend
            .run("test", |mut c| async move {
                redis::cmd("PING").query_async::<()>(&mut c).await
            })
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_from_one_second_doubling_to_thirty() {
        let backend = RedisBackend::disconnected(Arc::new(Metrics::new().unwrap()));
        // The first failure is a real attempt; the next ones within the window are skipped.
        assert!(matches!(
            ping(&backend).await,
            Err(RedisError::NotConnected)
        ));
        assert!(matches!(ping(&backend).await, Err(RedisError::BackingOff)));
        let mut expected = BACKOFF_FIRST;
        for _ in 0..8 {
            tokio::time::advance(expected - Duration::from_millis(1)).await;
            assert!(matches!(ping(&backend).await, Err(RedisError::BackingOff)));
            tokio::time::advance(Duration::from_millis(1)).await;
            // The window is over: one probe goes to Redis (and fails again).
            assert!(matches!(
                ping(&backend).await,
                Err(RedisError::NotConnected)
            ));
            expected = (expected * 2).min(BACKOFF_MAX);
        }
        assert_eq!(expected, BACKOFF_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_probe_runs_at_a_time() {
        let backend = RedisBackend::disconnected(Arc::new(Metrics::new().unwrap()));
        let _ = ping(&backend).await;
        tokio::time::advance(BACKOFF_FIRST).await;
        assert_eq!(backend.admit(), Some(true));
        // While that probe is out, everyone else still skips Redis.
        assert_eq!(backend.admit(), None);
        backend.settle(true, true);
        assert_eq!(backend.admit(), Some(false));
    }
}
