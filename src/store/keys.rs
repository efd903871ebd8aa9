//! Managed API keys as rows: what the admin API creates, changes and revokes, and what every
//! replica polls into memory.
//!
//! Only the SHA-256 digest of a secret is stored. Every change is written in one transaction with
//! its audit row, so the trail cannot miss a change that happened nor show one that did not.

use sqlx::any::AnyRow;
use sqlx::{Executor, Row};

use super::audit::{self, Entry};
use super::{Backend, Store, StoreError, now_ms};

/// The PostgreSQL channel every key change is announced on. `NOTIFY` is transactional: the
/// announcement goes out when the change commits, never for one that rolled back.
pub const KEY_CHANNEL: &str = "spark_keys";

/// Announces key changes as they commit (PostgreSQL), so every replica reloads at once instead
/// of at its next poll.
pub struct KeyChanges(sqlx::postgres::PgListener);

impl KeyChanges {
    /// Waits for the next announcement. `Ok(false)`: the connection was lost and is being
    /// remade, so announcements may have been missed (the caller should reload).
    pub async fn next(&mut self) -> Result<bool, StoreError> {
        Ok(self.0.try_recv().await?.is_some())
    }
}

/// A spend limit, and optionally a token limit (input and output tokens) in the same window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit_nusd: i64,
    pub limit_tokens: Option<i64>,
    pub period: Period,
}

/// The window a budget counts spend in (UTC calendar days and months).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    Month,
    Total,
}

impl Period {
    pub fn parse(text: &str) -> Option<Period> {
        match text {
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            "total" => Some(Period::Total),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }

    /// The start of the window holding `now_ms` (0 for `total`), and when it ends (`None` for
    /// `total`, which never resets). UTC.
    pub fn window(self, now_ms: i64) -> (i64, Option<i64>) {
        use time::{Date, Duration, OffsetDateTime};
        let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let ms = |d: Date| d.midnight().assume_utc().unix_timestamp() * 1_000;
        let today = now.date();
        match self {
            Period::Total => (0, None),
            Period::Day => {
                let next = today.checked_add(Duration::days(1)).unwrap_or(today);
                (ms(today), Some(ms(next)))
            }
            Period::Month => {
                let first = today.replace_day(1).unwrap_or(today);
                let next = match first.month() {
                    time::Month::December => first
                        .replace_year(first.year() + 1)
                        .and_then(|d| d.replace_month(time::Month::January)),
                    m => first.replace_month(m.next()),
                }
                .unwrap_or(first);
                (ms(first), Some(ms(next)))
            }
        }
    }
}

/// One managed key, as stored (the digest, never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Public: the middle part of `sk-spark-{id}-{secret}`.
    pub id: String,
    pub digest: [u8; 32],
    /// What the admin API shows to tell keys apart: `sk-spark-{id}`.
    pub prefix: String,
    pub user_id: String,
    pub name: String,
    pub budget: Option<Budget>,
    /// A quota in `SPARK_RATE_LIMIT_*` syntax that replaces the route quotas for this key.
    pub rate_limit: Option<String>,
    /// The models this key may use; `None`: every model.
    pub models: Option<Vec<String>>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub revoked_at: Option<i64>,
}

impl KeyRecord {
    /// Whether the key may authenticate at `now_ms`.
    pub fn usable_at(&self, now_ms: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now_ms < e)
    }
}

/// The fields a `PATCH` may change; `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub budget: Option<Option<Budget>>,
    pub rate_limit: Option<Option<String>>,
    pub models: Option<Option<Vec<String>>>,
    pub expires_at: Option<Option<i64>>,
}

const COLUMNS: &str = "id, digest, prefix, user_id, name, budget_limit_nusd, budget_period, \
                       rate_limit, models, expires_at, created_at, updated_at, revoked_at, \
                       budget_token_limit";

fn from_row(row: &AnyRow) -> Result<KeyRecord, StoreError> {
    let digest_hex: String = row.try_get("digest")?;
    let digest = decode_digest(&digest_hex)
        .ok_or_else(|| StoreError::Corrupt("a key digest is not 64 hex digits".to_owned()))?;
    let limit: Option<i64> = row.try_get("budget_limit_nusd")?;
    let period: Option<String> = row.try_get("budget_period")?;
    let limit_tokens: Option<i64> = row.try_get("budget_token_limit")?;
    let budget = match (limit, period.as_deref().and_then(Period::parse)) {
        (Some(limit_nusd), Some(period)) => Some(Budget {
            limit_nusd,
            limit_tokens,
            period,
        }),
        _ => None,
    };
    let models: Option<String> = row.try_get("models")?;
    let models = models
        .map(|m| serde_json::from_str::<Vec<String>>(&m))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("a key's model list: {e}")))?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        digest,
        prefix: row.try_get("prefix")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        budget,
        rate_limit: row.try_get("rate_limit")?,
        models,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn decode_digest(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the fields an admin sets, in the order both the insert and the update name them: name,
/// budget limit, budget period, rate limit, models, expiry (the token limit is bound last by
/// each, as it came with a later migration).
fn bind_settings<'q>(q: AnyQuery<'q>, key: &KeyRecord) -> AnyQuery<'q> {
    q.bind(key.name.clone())
        .bind(key.budget.map(|b| b.limit_nusd))
        .bind(key.budget.map(|b| b.period.as_str().to_owned()))
        .bind(key.rate_limit.clone())
        .bind(models_json(&key.models))
        .bind(key.expires_at)
}

fn models_json(models: &Option<Vec<String>>) -> Option<String> {
    models
        .as_ref()
        .map(|m| serde_json::to_string(m).unwrap_or_else(|_| "[]".to_owned()))
}

impl Store {
    /// Queues the announcement of a key change in `tx` (PostgreSQL; SQLite has one host, and its
    /// replicas poll).
    async fn announce_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    ) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            // The simple query protocol: NOTIFY takes no parameters and returns no rows.
            (&mut **tx)
                .execute(format!("NOTIFY {KEY_CHANNEL}").as_str())
                .await?;
        }
        Ok(())
    }

    /// A subscription to key changes, on a connection of its own; `None` for SQLite.
    pub async fn key_changes(&self) -> Result<Option<KeyChanges>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(KEY_CHANNEL).await?;
        Ok(Some(KeyChanges(listener)))
    }

    /// Stores a new key and its `key.create` audit row, in one transaction.
    pub async fn insert_key(&self, key: &KeyRecord, audit: Entry) -> Result<(), StoreError> {
        self.ready().await?;
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        );
        let q = sqlx::query(&sql)
            .bind(key.id.clone())
            .bind(hex(&key.digest))
            .bind(key.prefix.clone())
            .bind(key.user_id.clone());
        bind_settings(q, key)
            .bind(key.created_at)
            .bind(key.updated_at)
            .bind(key.revoked_at)
            .bind(key.budget.and_then(|b| b.limit_tokens))
            .execute(&mut *tx)
            .await?;
        self.announce_in(&mut tx).await?;
        audit::append_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        self.ready().await?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id.to_owned())
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// Keys in id order after `cursor`, at most `limit`, and whether more follow.
    pub async fn list_keys(
        &self,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<KeyRecord>, bool), StoreError> {
        self.ready().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(cursor.unwrap_or("").to_owned())
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let mut keys = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let more = keys.len() > limit as usize;
        keys.truncate(limit as usize);
        Ok((keys, more))
    }

    /// Keys changed at or after `since_ms` (every key for 0): what a replica's poll reloads.
    pub async fn keys_changed_since(&self, since_ms: i64) -> Result<Vec<KeyRecord>, StoreError> {
        self.ready().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE updated_at >= $1"
        ))
        .bind(since_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Applies `patch` and writes the `key.update` audit row, in one transaction. A revoked key
    /// cannot be changed (it is `NotFound` to the caller).
    pub async fn update_key(
        &self,
        id: &str,
        patch: &KeyPatch,
        audit: Entry,
    ) -> Result<KeyRecord, StoreError> {
        self.ready().await?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND revoked_at IS NULL"
        ))
        .bind(id.to_owned())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut key = from_row(&row)?;
        if let Some(name) = &patch.name {
            key.name = name.clone();
        }
        if let Some(budget) = patch.budget {
            key.budget = budget;
        }
        if let Some(rate_limit) = &patch.rate_limit {
            key.rate_limit = rate_limit.clone();
        }
        if let Some(models) = &patch.models {
            key.models = models.clone();
        }
        if let Some(expires_at) = patch.expires_at {
            key.expires_at = expires_at;
        }
        key.updated_at = now_ms().max(key.updated_at + 1);
        let q = sqlx::query(
            "UPDATE api_keys SET name = $1, budget_limit_nusd = $2, budget_period = $3, \
             rate_limit = $4, models = $5, expires_at = $6, updated_at = $7, \
             budget_token_limit = $8 WHERE id = $9",
        );
        bind_settings(q, &key)
            .bind(key.updated_at)
            .bind(key.budget.and_then(|b| b.limit_tokens))
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        self.announce_in(&mut tx).await?;
        audit::append_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Revokes a key and writes the `key.revoke` audit row. Revoking a revoked key is
    /// `NotFound`, so the trail holds one revocation per key.
    pub async fn revoke_key(&self, id: &str, audit: Entry) -> Result<(), StoreError> {
        self.ready().await?;
        let mut tx = self.begin_write().await?;
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1, updated_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.announce_in(&mut tx).await?;
        audit::append_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let d: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        assert_eq!(decode_digest(&hex(&d)), Some(d));
        assert_eq!(decode_digest("00"), None);
        assert_eq!(decode_digest(&"zz".repeat(32)), None);
    }

    #[test]
    fn budget_windows_are_utc_days_and_months() {
        // 2026-12-31T15:00:00Z
        let t = 1_798_729_200_000;
        assert_eq!(
            Period::Day.window(t),
            (1_798_675_200_000, Some(1_798_761_600_000))
        );
        // December 2026 .. January 2027.
        assert_eq!(
            Period::Month.window(t),
            (1_796_083_200_000, Some(1_798_761_600_000))
        );
        assert_eq!(Period::Total.window(t), (0, None));
    }

    #[test]
    fn expiry_and_revocation_end_a_key() {
        let mut k = KeyRecord {
            id: "a".into(),
            digest: [0; 32],
            prefix: "sk-spark-a".into(),
            user_id: "u".into(),
            name: "n".into(),
            budget: None,
            rate_limit: None,
            models: None,
            expires_at: Some(1_000),
            created_at: 0,
            updated_at: 0,
            revoked_at: None,
        };
        assert!(k.usable_at(999));
        assert!(!k.usable_at(1_000));
        k.expires_at = None;
        assert!(k.usable_at(i64::MAX));
        k.revoked_at = Some(5);
        assert!(!k.usable_at(0));
    }
}
