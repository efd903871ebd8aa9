//! The audit trail: append-only rows chained by hash, and the check that the chain is whole.
//!
//! Each row stores `sha256(previous row's hash ‖ canonical row)`, the canonical row being its
//! fields as JSON in a fixed order. Editing, deleting or reordering a row breaks the chain at that
//! row, which [`Store::verify_audit`] names. The single row of `audit_head` hands out positions:
//! every append updates it first, so appends from every replica are serialized by the database
//! (a row lock in PostgreSQL, the write lock in SQLite) and the chain never forks.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::keys::hex;
use super::{Store, StoreError, now_ms};

/// Every action the trail records.
pub const ACTIONS: &[&str] = &[
    "key.create",
    "key.update",
    "key.revoke",
    "cache.purge",
    "breaker.reset",
    "keys.reload",
    "config.start",
    "auth.failures",
];

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, by whom, to what: an audit row before it has a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `master`, a user id, or `system` for the gateway itself.
    pub actor: String,
    /// `key.create`, `key.update`, `key.revoke`, `cache.purge`, `breaker.reset`, `keys.reload`,
    /// `config.start`, `auth.failures`.
    pub action: &'static str,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub client_address: Option<String>,
    /// A JSON object, built by the gateway (never caller text copied in whole).
    pub details: serde_json::Value,
    /// When it happened (epoch ms); rows queued while the database was down keep their time.
    pub time: i64,
}

impl Entry {
    pub fn new(actor: impl Into<String>, action: &'static str) -> Entry {
        Entry {
            actor: actor.into(),
            action,
            target: None,
            request_id: None,
            client_address: None,
            details: serde_json::json!({}),
            time: now_ms(),
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Entry {
        self.target = Some(target.into());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Entry {
        self.details = details;
        self
    }

    pub fn request(mut self, request_id: Option<String>, client: Option<String>) -> Entry {
        self.request_id = request_id;
        self.client_address = client;
        self
    }
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    pub id: i64,
    pub time: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub client_address: Option<String>,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The bytes a row's hash covers besides the previous hash: every field but the hashes, as JSON
/// in this fixed order.
fn canonical(row: &AuditRow) -> Vec<u8> {
    #[derive(Serialize)]
    struct Canonical<'a> {
        id: i64,
        time: i64,
        actor: &'a str,
        action: &'a str,
        target: Option<&'a str>,
        request_id: Option<&'a str>,
        client_address: Option<&'a str>,
        details: &'a str,
    }
    serde_json::to_vec(&Canonical {
        id: row.id,
        time: row.time,
        actor: &row.actor,
        action: &row.action,
        target: row.target.as_deref(),
        request_id: row.request_id.as_deref(),
        client_address: row.client_address.as_deref(),
        details: &row.details,
    })
    .unwrap_or_default()
}

/// `sha256(prev_hash ‖ canonical row)`, hex.
pub fn chain_hash(prev_hash: &str, row: &AuditRow) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical(row));
    hex(&h.finalize())
}

/// Appends `entry` inside the caller's transaction, so it commits with the change it records.
pub(crate) async fn append_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    entry: Entry,
) -> Result<AuditRow, StoreError> {
    // Taking the head first locks it for the rest of the transaction.
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let id: i64 = head.try_get("seq")?;
    let prev_hash: String = head.try_get("hash")?;
    let mut row = AuditRow {
        id,
        time: entry.time,
        actor: entry.actor,
        action: entry.action.to_owned(),
        target: entry.target,
        request_id: entry.request_id,
        client_address: entry.client_address,
        details: entry.details.to_string(),
        prev_hash,
        hash: String::new(),
    };
    row.hash = chain_hash(&row.prev_hash, &row);
    sqlx::query(
        "INSERT INTO audit_log (id, time, actor, action, target, request_id, client_address, \
         details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(row.id)
    .bind(row.time)
    .bind(row.actor.clone())
    .bind(row.action.clone())
    .bind(row.target.clone())
    .bind(row.request_id.clone())
    .bind(row.client_address.clone())
    .bind(row.details.clone())
    .bind(row.prev_hash.clone())
    .bind(row.hash.clone())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
        .bind(row.hash.clone())
        .execute(&mut **tx)
        .await?;
    Ok(row)
}

fn from_row(row: &AnyRow) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        id: row.try_get("id")?,
        time: row.try_get("time")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
        client_address: row.try_get("client_address")?,
        details: row.try_get("details")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

const COLUMNS: &str =
    "id, time, actor, action, target, request_id, client_address, details, prev_hash, hash";

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// The first row that does not verify (for a truncated tail, the first missing position).
    pub id: i64,
    pub why: &'static str,
}

impl Store {
    /// Appends one entry in a transaction of its own.
    pub async fn append_audit(&self, entry: Entry) -> Result<AuditRow, StoreError> {
        self.ready().await?;
        let mut tx = self.begin_write().await?;
        let row = append_in(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Rows newest first, before the `cursor` id, optionally of one action; and whether more
    /// follow.
    pub async fn list_audit(
        &self,
        limit: u32,
        cursor: Option<i64>,
        action: Option<&str>,
    ) -> Result<(Vec<AuditRow>, bool), StoreError> {
        self.ready().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE id < $1 AND ($2 = '' OR action = $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(cursor.unwrap_or(i64::MAX))
        .bind(action.unwrap_or("").to_owned())
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        let mut out = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let more = out.len() > limit as usize;
        out.truncate(limit as usize);
        Ok((out, more))
    }

    /// Walks the whole chain in order; `Ok(rows checked)` or the first break.
    ///
    /// Safe on a live gateway: the head is read before the walk, so rows appended while it runs
    /// extend the chain it checks instead of looking like a tail that went missing.
    pub async fn verify_audit(&self) -> Result<Result<u64, Break>, StoreError> {
        self.ready().await?;
        // A deleted tail leaves a chain that verifies by itself; the head remembers how long
        // the chain was and where it ended. The row it names must be on the chain walked.
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: String = head.try_get("hash")?;
        let mut at_head = (head_seq == 0).then(|| GENESIS.to_owned());
        let mut prev = GENESIS.to_owned();
        let mut expected_id = 1i64;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM audit_log WHERE id >= $1 ORDER BY id LIMIT 1000"
            ))
            .bind(expected_id)
            .fetch_all(self.pool())
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let row = from_row(row)?;
                if row.id != expected_id {
                    return Ok(Err(Break {
                        id: expected_id,
                        why: "a row is missing",
                    }));
                }
                if row.prev_hash != prev {
                    return Ok(Err(Break {
                        id: row.id,
                        why: "its previous hash is not the hash of the row before it",
                    }));
                }
                if chain_hash(&prev, &row) != row.hash {
                    return Ok(Err(Break {
                        id: row.id,
                        why: "its content does not match its hash",
                    }));
                }
                if row.id == head_seq {
                    at_head = Some(row.hash.clone());
                }
                prev = row.hash;
                expected_id += 1;
            }
        }
        match at_head {
            Some(hash) if hash == head_hash => {}
            Some(_) => {
                return Ok(Err(Break {
                    id: head_seq,
                    why: "the chain does not end where the head says it did",
                }));
            }
            None => {
                return Ok(Err(Break {
                    id: expected_id,
                    why: "rows at the end of the chain are missing",
                }));
            }
        }
        Ok(Ok(u64::try_from(expected_id - 1).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            id: 1,
            time: 5,
            actor: "master".into(),
            action: "key.create".into(),
            target: Some("k1".into()),
            request_id: None,
            client_address: Some("10.0.0.1".into()),
            details: "{}".into(),
            prev_hash: GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = chain_hash(GENESIS, &row());
        let mut changed = Vec::new();
        let mut r = row();
        r.time = 6;
        changed.push(r);
        let mut r = row();
        r.actor = "alice".into();
        changed.push(r);
        let mut r = row();
        r.target = None;
        changed.push(r);
        let mut r = row();
        r.details = "{\"a\":1}".into();
        changed.push(r);
        let mut r = row();
        r.id = 2;
        changed.push(r);
        for r in changed {
            assert_ne!(chain_hash(GENESIS, &r), base, "{r:?}");
        }
        assert_ne!(chain_hash(&"1".repeat(64), &row()), base);
        // The stored hashes themselves are not part of what is hashed.
        let mut r = row();
        r.hash = "x".into();
        assert_eq!(chain_hash(GENESIS, &r), base);
    }
}
