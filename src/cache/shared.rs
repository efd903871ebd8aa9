//! The shared second level of the cache: values in Redis, authenticated and namespaced.
//!
//! Redis is not trusted: every value is sealed as `magic ‖ HMAC-SHA256(key ‖ payload) ‖ payload`,
//! so a value rewritten in Redis, or moved to another key, fails to open and is a miss. Keys carry
//! the namespace generation (`spark:cache:{gen}:{hash}`) that a purge moves on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::CacheKey;
use crate::redis::RedisBackend;

/// The largest shared value accepted, read or written: a generation is bounded by the provider's
/// token cap, so anything bigger did not come from a gateway.
pub(super) const L2_MAX_VALUE_BYTES: usize = 4 << 20;
/// The prefix of the second-level wire format; bumped when the framing changes.
const L2_MAGIC: &[u8; 4] = b"spk2";
pub(super) const GENERATION_KEY: &str = "spark:cache:gen";

/// The shared second level: Redis, authenticated values, a purge generation.
pub(super) struct SharedLevel {
    pub(super) redis: Arc<RedisBackend>,
    pub(super) mac: Hmac<Sha256>,
    /// The namespace generation last read from Redis; every key carries it.
    pub(super) generation: AtomicU64,
}

impl SharedLevel {
    pub(super) fn key(&self, key: &CacheKey) -> String {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "spark:cache:{}:{hex}",
            self.generation.load(Ordering::Relaxed)
        )
    }

    fn tag(&self, key: &CacheKey, payload: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(key);
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    /// `magic ‖ tag ‖ payload`, the tag binding the payload to its key so a value cannot be
    /// moved to another key either.
    pub(super) fn seal(&self, key: &CacheKey, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 32 + payload.len());
        out.extend_from_slice(L2_MAGIC);
        out.extend_from_slice(&self.tag(key, payload));
        out.extend_from_slice(payload);
        out
    }

    pub(super) fn open<'a>(&self, key: &CacheKey, sealed: &'a [u8]) -> Option<&'a [u8]> {
        if sealed.len() > L2_MAX_VALUE_BYTES + 36 || sealed.len() < 36 {
            return None;
        }
        let (magic, rest) = sealed.split_at(4);
        let (tag, payload) = rest.split_at(32);
        if magic != L2_MAGIC {
            return None;
        }
        let mut mac = self.mac.clone();
        mac.update(key);
        mac.update(payload);
        // Constant-time comparison: the tag must not be guessable byte by byte.
        mac.verify_slice(tag).ok()?;
        Some(payload)
    }
}

pub(super) async fn read_generation(redis: &RedisBackend) -> Option<u64> {
    redis
        .run("cache_generation", |mut c| async move {
            redis::cmd("GET")
                .arg(GENERATION_KEY)
                .query_async::<Option<u64>>(&mut c)
                .await
        })
        .await
        .ok()
        .map(|g| g.unwrap_or(0))
}
