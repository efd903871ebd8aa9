//! Keys issued through the admin API, held in memory so a request never waits on the database.
//!
//! A managed key reads `sk-spark-{id}-{secret}`. The id is public (the admin API lists it), so
//! finding the record by id reveals nothing; the presented key's SHA-256 digest is then compared
//! with the stored one in constant time. With PostgreSQL every change is announced as it commits
//! (`LISTEN`/`NOTIFY` on [`KEY_CHANNEL`](crate::store::keys::KEY_CHANNEL)) and each replica polls
//! at once; whatever the backend, every replica also polls each second for keys changed in the
//! last [`SKEW`] (so a replica whose clock is behind the writer's still sees the change, and a
//! lost announcement costs at most a second) and reloads everything every five minutes. A key
//! revoked on any replica is refused everywhere at once, within about a second when the
//! announcement is lost, and at worst after the next poll that reaches the database.
//! While the database is down the keys in force stay (a key cannot be learned revoked until it
//! answers again; none is dropped either), and the failure is logged once per outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::keys::KeyRecord;
use crate::store::{Store, StoreError};

/// What every managed key starts with.
pub const KEY_PREFIX: &str = "sk-spark-";
/// Length of the public id: 12 characters of `[a-z0-9]`, about 62 bits.
const ID_LEN: usize = 12;
/// Length of the secret: 40 alphanumerics, about 238 bits.
const SECRET_LEN: usize = 40;
/// How far back each poll looks, to absorb clock differences between replicas.
const SKEW: i64 = 30_000;
/// A full reload at this period catches anything a poll could have missed.
const FULL_RELOAD: Duration = Duration::from_secs(300);
/// How long a listener that lost the database waits before it subscribes again.
const RELISTEN: Duration = Duration::from_secs(5);

/// A new key: the secret to hand out once, and what is stored.
pub struct Minted {
    pub id: String,
    pub key: String,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted").field("id", &self.id).finish()
    }
}

/// Draws a new key from the operating system's generator (through `rand`'s thread RNG, a CSPRNG
/// seeded from it).
pub fn mint() -> Minted {
    let mut rng = rand::rng();
    const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id: String = (0..ID_LEN)
        .map(|_| char::from(ID_CHARS[rng.random_range(0..ID_CHARS.len())]))
        .collect();
    let secret: String = (0..SECRET_LEN)
        .map(|_| char::from(rng.sample(Alphanumeric)))
        .collect();
    let key = format!("{KEY_PREFIX}{id}-{secret}");
    let digest = Sha256::digest(key.as_bytes()).into();
    Minted { id, key, digest }
}

/// The id part of a presented managed key, or `None` when it is not one.
pub fn key_id(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('-')?;
    (id.len() == ID_LEN && !secret.is_empty()).then_some(id)
}

/// The managed key that authenticated a request; carried in the request's extensions beside
/// the [`super::Caller`] (which is `User` with the key's user id).
#[derive(Debug, Clone)]
pub struct ManagedKey(pub Arc<KeyRecord>);

/// The managed keys in force on this replica.
#[derive(Default)]
pub struct ManagedKeys {
    by_id: RwLock<HashMap<String, Arc<KeyRecord>>>,
    /// The newest `updated_at` seen.
    newest: AtomicI64,
    /// Whether a load has succeeded since start-up.
    loaded: AtomicBool,
    /// Whether the last poll failed (logged once per outage).
    failing: AtomicBool,
}

impl std::fmt::Debug for ManagedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedKeys")
            .field("keys", &self.len())
            .finish()
    }
}

impl ManagedKeys {
    /// The record a presented key belongs to, when it is a managed key that is neither revoked
    /// nor expired at `now_ms`.
    pub fn authenticate(&self, presented: &str, now_ms: i64) -> Option<Arc<KeyRecord>> {
        let id = key_id(presented)?;
        let record = self.by_id.read().ok()?.get(id).cloned()?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let same: bool = record.digest.ct_eq(&digest).into();
        (same && record.usable_at(now_ms)).then_some(record)
    }

    /// Installs changed records: revoked ones leave, others replace what was there. A record
    /// older than the one held (a poll racing a local change) is ignored.
    pub fn apply(&self, records: impl IntoIterator<Item = KeyRecord>) {
        let Ok(mut map) = self.by_id.write() else {
            return;
        };
        for record in records {
            self.newest.fetch_max(record.updated_at, Ordering::Relaxed);
            if map
                .get(&record.id)
                .is_some_and(|held| held.updated_at > record.updated_at)
            {
                continue;
            }
            if record.revoked_at.is_some() {
                map.remove(&record.id);
            } else {
                map.insert(record.id.clone(), Arc::new(record));
            }
        }
    }

    /// After a full load: drops the keys held here that the table no longer has (deleted by
    /// hand). A key changed since the load's query began (`began`, less the clock skew allowed)
    /// is kept: it may be a key this replica created while the query ran, which the snapshot
    /// cannot contain, and dropping it would answer its owner 401 until the next poll. A key
    /// deleted by hand within that window goes at the next full load.
    fn drop_vanished(&self, snapshot: &[KeyRecord], began: i64) {
        let live: std::collections::HashSet<&str> =
            snapshot.iter().map(|r| r.id.as_str()).collect();
        let recent = began.saturating_sub(SKEW);
        if let Ok(mut map) = self.by_id.write() {
            map.retain(|id, held| live.contains(id.as_str()) || held.updated_at >= recent);
        }
    }

    /// Forgets a key at once (this replica's revocation; the others learn it from the poll).
    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.by_id.write() {
            map.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.read().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the keys have been loaded from the database at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// One poll: everything on the first (or a `full`) load, otherwise what changed since the
    /// newest change seen, less the skew allowance.
    pub async fn sync(&self, store: &Store, full: bool) -> Result<usize, StoreError> {
        let since = if full || !self.loaded() {
            0
        } else {
            self.newest.load(Ordering::Relaxed).saturating_sub(SKEW)
        };
        let began = crate::store::now_ms();
        let records = store.keys_changed_since(since).await?;
        let n = records.len();
        if since == 0 {
            self.drop_vanished(&records, began);
        }
        self.apply(records);
        self.loaded.store(true, Ordering::Relaxed);
        Ok(n)
    }

    /// Polls `store` every `period`, and at once when PostgreSQL announces a change, until the
    /// process ends.
    pub fn spawn_sync(self: &Arc<Self>, store: Store, period: Duration) {
        let keys = Arc::clone(self);
        let wake = Arc::new(tokio::sync::Notify::new());
        crate::telemetry::spawn_named(
            "managed-keys-listen",
            listen(store.clone(), Arc::clone(&wake)),
        );
        crate::telemetry::spawn_named("managed-keys", async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_full = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = wake.notified() => {}
                }
                let full = last_full.elapsed() >= FULL_RELOAD;
                match keys.sync(&store, full).await {
                    Ok(_) => {
                        if full {
                            last_full = tokio::time::Instant::now();
                        }
                        if keys.failing.swap(false, Ordering::Relaxed) {
                            tracing::warn!(
                                keys = keys.len(),
                                "managed keys reload again from the database"
                            );
                        }
                    }
                    Err(e) => {
                        if !keys.failing.swap(true, Ordering::Relaxed) {
                            tracing::error!(
                                error = %e,
                                keys = keys.len(),
                                "managed keys cannot be reloaded; the keys in force stay until the database answers"
                            );
                        }
                    }
                }
            }
        });
    }
}

/// Wakes the poller whenever the database announces a key change, and after every reconnection
/// (announcements made while disconnected are lost). Ends at once for SQLite. A listener that
/// cannot connect is retried every [`RELISTEN`]; the poll goes on meanwhile, so nothing is
/// missed for longer than a poll period.
async fn listen(store: Store, wake: Arc<tokio::sync::Notify>) {
    let mut failing = false;
    loop {
        let err = match store.key_changes().await {
            Ok(None) => return,
            Ok(Some(mut changes)) => {
                if std::mem::take(&mut failing) {
                    tracing::warn!("key change announcements are received again");
                }
                wake.notify_one();
                loop {
                    match changes.next().await {
                        // A change, or a lost connection (remade by the next call): reload.
                        Ok(_) => wake.notify_one(),
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e,
        };
        if !std::mem::replace(&mut failing, true) {
            tracing::warn!(
                error = %err,
                "key change announcements are not received; revocations reach this replica by the poll"
            );
        }
        tokio::time::sleep(RELISTEN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(m: &Minted, updated_at: i64) -> KeyRecord {
        KeyRecord {
            id: m.id.clone(),
            digest: m.digest,
            prefix: format!("{KEY_PREFIX}{}", m.id),
            user_id: "alice".into(),
            name: "laptop".into(),
            budget: None,
            rate_limit: None,
            models: None,
            expires_at: None,
            created_at: 1,
            updated_at,
            revoked_at: None,
        }
    }

    #[test]
    fn minted_keys_parse_and_differ() {
        let a = mint();
        let b = mint();
        assert_ne!(a.key, b.key);
        assert_eq!(key_id(&a.key), Some(a.id.as_str()));
        assert_eq!(a.key.len(), KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
        assert!(!format!("{a:?}").contains(&a.key));
        assert_eq!(key_id("sk-spark-short-x"), None);
        assert_eq!(key_id("user-alice-0123456789abcdef"), None);
    }

    #[test]
    fn only_the_exact_key_authenticates_and_revocation_or_expiry_end_it() {
        let keys = ManagedKeys::default();
        let m = mint();
        keys.apply([record(&m, 10)]);
        assert!(keys.authenticate(&m.key, 0).is_some());
        let mut wrong = m.key.clone();
        wrong.pop();
        wrong.push('#');
        assert!(keys.authenticate(&wrong, 0).is_none());
        // An older copy (a poll that raced a local change) does not win.
        let mut stale = record(&m, 5);
        stale.revoked_at = Some(5);
        keys.apply([stale]);
        assert!(keys.authenticate(&m.key, 0).is_some());
        let mut expiring = record(&m, 11);
        expiring.expires_at = Some(100);
        keys.apply([expiring]);
        assert!(keys.authenticate(&m.key, 99).is_some());
        assert!(keys.authenticate(&m.key, 100).is_none());
        let mut revoked = record(&m, 12);
        revoked.revoked_at = Some(12);
        keys.apply([revoked]);
        assert!(keys.authenticate(&m.key, 0).is_none());
        assert!(keys.is_empty());
    }

    #[test]
    fn a_full_load_keeps_a_key_created_while_it_ran_and_drops_one_deleted_long_ago() {
        let keys = ManagedKeys::default();
        let old = mint();
        let fresh = mint();
        let listed = mint();
        let began = 1_000_000;
        keys.apply([
            record(&old, began - SKEW - 1),
            record(&fresh, began + 5),
            record(&listed, 1),
        ]);
        // The snapshot was read before `fresh` was inserted, and `old` was deleted by hand.
        keys.drop_vanished(&[record(&listed, 1)], began);
        assert!(keys.authenticate(&fresh.key, 0).is_some());
        assert!(keys.authenticate(&listed.key, 0).is_some());
        assert!(keys.authenticate(&old.key, 0).is_none());
    }
}
