//! Issuing, changing and revoking managed keys: the admin API's rules, apart from HTTP.
//!
//! A request body is checked whole before anything is written (every problem named), the key is
//! minted here, and the database write carries its audit row. The replica that made the change
//! installs it at once; the others learn it from their poll.

use serde_json::{Map, Value};

use super::managed::{KEY_PREFIX, ManagedKeys, mint};
use crate::budget::{Amount, MAX_TOKEN_LIMIT};
use crate::ratelimit::Quota;
use crate::store::audit::Entry;
use crate::store::keys::{Budget, KeyPatch, KeyRecord, Period};
use crate::store::{Store, StoreError, now_ms, nusd, parse_rfc3339};

/// Why an admin key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{0}")]
    Invalid(String),
    #[error("no key has that id")]
    NotFound,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for IssueError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => IssueError::NotFound,
            other => IssueError::Store(other),
        }
    }
}

/// Who asked, for the audit row.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub name: String,
    pub request_id: Option<String>,
    pub client_address: Option<String>,
}

impl Actor {
    fn entry(&self, action: &'static str, target: &str) -> Entry {
        Entry::new(self.name.clone(), action)
            .target(target)
            .request(self.request_id.clone(), self.client_address.clone())
    }
}

/// The longest name, user id and model list accepted.
const MAX_NAME: usize = 100;
const MAX_MODELS: usize = 100;
/// The largest budget accepted, in USD.
const MAX_BUDGET_USD: f64 = 1e9;

fn user_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn parse_budget(v: &Value, problems: &mut Vec<String>) -> Option<Budget> {
    let Some(obj) = v.as_object() else {
        problems.push(
            "budget must be an object {\"limitUsd\", \"period\", \"limitTokens\"?} or null".into(),
        );
        return None;
    };
    if obj
        .keys()
        .any(|k| k != "limitUsd" && k != "period" && k != "limitTokens")
    {
        problems.push(
            "budget has an unknown field (its fields are limitUsd, period and limitTokens)".into(),
        );
    }
    let limit_tokens = match obj.get("limitTokens") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().filter(|n| (1..=MAX_TOKEN_LIMIT).contains(n)) {
            Some(n) => Some(n),
            None => {
                problems.push(format!(
                    "budget.limitTokens must be a whole number from 1 to {MAX_TOKEN_LIMIT}"
                ));
                return None;
            }
        },
    };
    let limit = obj.get("limitUsd").and_then(Value::as_f64);
    let period = obj
        .get("period")
        .and_then(Value::as_str)
        .and_then(Period::parse);
    match (limit, period) {
        (Some(l), Some(period)) if l.is_finite() && l > 0.0 && l <= MAX_BUDGET_USD => {
            Some(Budget {
                limit_nusd: nusd(l),
                limit_tokens,
                period,
            })
        }
        (Some(_), Some(_)) => {
            problems.push("budget.limitUsd must be a number above 0 and at most 1e9".into());
            None
        }
        _ => {
            problems.push(
                "budget needs limitUsd (a number) and period (\"day\", \"month\" or \"total\")"
                    .into(),
            );
            None
        }
    }
}

fn parse_models(v: &Value, known: &[String], problems: &mut Vec<String>) -> Option<Vec<String>> {
    let Some(list) = v.as_array() else {
        problems.push("models must be an array of model names or null".into());
        return None;
    };
    if list.is_empty() || list.len() > MAX_MODELS {
        problems.push(format!("models must hold 1 to {MAX_MODELS} names"));
        return None;
    }
    let mut out = Vec::with_capacity(list.len());
    for m in list {
        match m.as_str() {
            Some(m) if known.iter().any(|k| k == m) => out.push(m.to_owned()),
            // The caller's text is not repeated: it could be anything.
            _ => {
                problems.push(
                    "models names a model that is not served here (GET /v1/models lists them)"
                        .into(),
                );
                return None;
            }
        }
    }
    out.sort();
    out.dedup();
    Some(out)
}

fn parse_rate_limit(v: &Value, problems: &mut Vec<String>) -> Option<String> {
    match v.as_str().and_then(Quota::parse) {
        Some(q) => Some(q.to_string()),
        None => {
            problems.push(
                "rateLimit must be a quota such as \"100/min\" or \"100/min,burst=10\", or null"
                    .into(),
            );
            None
        }
    }
}

fn parse_expiry(v: &Value, problems: &mut Vec<String>) -> Option<i64> {
    match v.as_str().and_then(parse_rfc3339) {
        Some(t) if t > now_ms() => Some(t),
        Some(_) => {
            problems.push("expiresAt must be in the future".into());
            None
        }
        None => {
            problems.push(
                "expiresAt must be an RFC 3339 time such as 2027-01-31T00:00:00Z, or null".into(),
            );
            None
        }
    }
}

fn name_ok(v: &Value, problems: &mut Vec<String>) -> Option<String> {
    match v.as_str() {
        Some(n)
            if !n.trim().is_empty()
                && n.chars().count() <= MAX_NAME
                && !n.chars().any(char::is_control) =>
        {
            Some(n.trim().to_owned())
        }
        _ => {
            problems.push(format!(
                "name must be 1 to {MAX_NAME} characters with no control characters"
            ));
            None
        }
    }
}

const FIELDS: &[&str] = &[
    "userId",
    "name",
    "budget",
    "rateLimit",
    "models",
    "expiresAt",
];

fn unknown_fields(body: &Map<String, Value>, problems: &mut Vec<String>) {
    if body.keys().any(|k| !FIELDS.contains(&k.as_str())) {
        problems.push(format!(
            "unknown field (the fields are {})",
            FIELDS.join(", ")
        ));
    }
}

fn finish<T>(value: T, problems: Vec<String>) -> Result<T, IssueError> {
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(IssueError::Invalid(problems.join("; ")))
    }
}

/// Checks a `POST /api/admin/keys` body, mints the key and stores it with its audit row.
/// Returns the record and the key, which is never seen again.
pub async fn create(
    store: &Store,
    keys: &ManagedKeys,
    body: &Map<String, Value>,
    known_models: &[String],
    actor: &Actor,
) -> Result<(KeyRecord, String), IssueError> {
    let mut problems = Vec::new();
    unknown_fields(body, &mut problems);
    let user_id = match body.get("userId").and_then(Value::as_str) {
        Some(u) if user_id_ok(u) => u.to_owned(),
        _ => {
            problems.push("userId must be 1 to 64 letters, digits, '_' or '.'".into());
            String::new()
        }
    };
    let name = body
        .get("name")
        .map_or_else(|| Some("unnamed".to_owned()), |v| name_ok(v, &mut problems))
        .unwrap_or_default();
    let opt = |field: &str| body.get(field).filter(|v| !v.is_null());
    let budget = opt("budget").and_then(|v| parse_budget(v, &mut problems));
    let rate_limit = opt("rateLimit").and_then(|v| parse_rate_limit(v, &mut problems));
    let models = opt("models").and_then(|v| parse_models(v, known_models, &mut problems));
    let expires_at = opt("expiresAt").and_then(|v| parse_expiry(v, &mut problems));
    finish((), problems)?;
    let minted = mint();
    let now = now_ms();
    let record = KeyRecord {
        id: minted.id.clone(),
        digest: minted.digest,
        prefix: format!("{KEY_PREFIX}{}", minted.id),
        user_id,
        name,
        budget,
        rate_limit,
        models,
        expires_at,
        created_at: now,
        updated_at: now,
        revoked_at: None,
    };
    let audit = actor
        .entry("key.create", &record.id)
        .details(audit_details(&record));
    store.insert_key(&record, audit).await?;
    keys.apply([record.clone()]);
    Ok((record, minted.key))
}

/// Checks a `PATCH` body (absent: unchanged, `null`: cleared) and applies it.
pub async fn update(
    store: &Store,
    keys: &ManagedKeys,
    id: &str,
    body: &Map<String, Value>,
    known_models: &[String],
    actor: &Actor,
) -> Result<KeyRecord, IssueError> {
    let mut problems = Vec::new();
    unknown_fields(body, &mut problems);
    if body.contains_key("userId") {
        problems.push("userId cannot be changed; issue a new key".into());
    }
    let mut patch = KeyPatch::default();
    if let Some(v) = body.get("name") {
        patch.name = name_ok(v, &mut problems);
    }
    let field = |name: &str| body.get(name).map(|v| (!v.is_null()).then_some(v));
    if let Some(v) = field("budget") {
        patch.budget = Some(v.and_then(|v| parse_budget(v, &mut problems)));
    }
    if let Some(v) = field("rateLimit") {
        patch.rate_limit = Some(v.and_then(|v| parse_rate_limit(v, &mut problems)));
    }
    if let Some(v) = field("models") {
        patch.models = Some(v.and_then(|v| parse_models(v, known_models, &mut problems)));
    }
    if let Some(v) = field("expiresAt") {
        patch.expires_at = Some(v.and_then(|v| parse_expiry(v, &mut problems)));
    }
    finish((), problems)?;
    let changed: Vec<&str> = FIELDS
        .iter()
        .copied()
        .filter(|f| body.contains_key(*f))
        .collect();
    let mut audit = actor.entry("key.update", id);
    audit.details = serde_json::json!({ "fields": changed });
    if patch.budget.is_some() {
        // A budget change is its own kind of event for an auditor, with the new value.
        audit.details["budget"] = patch
            .budget
            .flatten()
            .map_or(Value::Null, |b| budget_json(&b));
    }
    let record = store.update_key(id, &patch, audit).await?;
    keys.apply([record.clone()]);
    Ok(record)
}

/// Revokes a key; this replica refuses it at once.
pub async fn revoke(
    store: &Store,
    keys: &ManagedKeys,
    id: &str,
    actor: &Actor,
) -> Result<(), IssueError> {
    store.revoke_key(id, actor.entry("key.revoke", id)).await?;
    keys.remove(id);
    Ok(())
}

pub fn budget_json(b: &Budget) -> Value {
    let mut v = serde_json::json!({
        "limitUsd": crate::store::usd(b.limit_nusd),
        "period": b.period.as_str(),
    });
    if let Some(t) = b.limit_tokens {
        v["limitTokens"] = t.into();
    }
    v
}

/// What the trail says about a new key: its settings, never its secret or digest.
fn audit_details(r: &KeyRecord) -> Value {
    serde_json::json!({
        "userId": r.user_id,
        "name": r.name,
        "budget": r.budget.as_ref().map(budget_json),
        "rateLimit": r.rate_limit,
        "models": r.models,
        "expiresAt": r.expires_at.map(crate::store::rfc3339),
    })
}

/// The key object of the admin API.
pub fn key_json(r: &KeyRecord, spent: Amount) -> Value {
    serde_json::json!({
        "id": r.id,
        "prefix": r.prefix,
        "userId": r.user_id,
        "name": r.name,
        "budget": r.budget.as_ref().map(budget_json),
        "rateLimit": r.rate_limit,
        "models": r.models,
        "expiresAt": r.expires_at.map(crate::store::rfc3339),
        "createdAt": crate::store::rfc3339(r.created_at),
        "revokedAt": r.revoked_at.map(crate::store::rfc3339),
        "spentUsd": crate::store::usd(spent.nusd),
        "spentTokens": spent.tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems_of(body: Value) -> Vec<String> {
        let mut problems = Vec::new();
        let body = body.as_object().unwrap().clone();
        unknown_fields(&body, &mut problems);
        if let Some(b) = body.get("budget") {
            parse_budget(b, &mut problems);
        }
        if let Some(r) = body.get("rateLimit") {
            parse_rate_limit(r, &mut problems);
        }
        if let Some(m) = body.get("models") {
            parse_models(m, &["gpt-4o".to_owned()], &mut problems);
        }
        if let Some(e) = body.get("expiresAt") {
            parse_expiry(e, &mut problems);
        }
        problems
    }

    #[test]
    fn good_fields_pass_and_bad_ones_are_each_named_without_echoing_input() {
        assert!(
            problems_of(json!({
                "budget": {"limitUsd": 0.05, "period": "day"},
                "rateLimit": "10/min,burst=2",
                "models": ["gpt-4o"],
                "expiresAt": "2099-01-01T00:00:00Z",
            }))
            .is_empty()
        );
        let p = problems_of(json!({
            "budget": {"limitUsd": -1, "period": "week"},
            "rateLimit": "lots",
            "models": ["<script>"],
            "expiresAt": "2001-01-01T00:00:00Z",
            "admin": true,
        }));
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(!p.join(" ").contains("<script>"));
    }

    #[test]
    fn user_ids_follow_the_key_file_rules() {
        assert!(user_id_ok("alice.b_2"));
        assert!(!user_id_ok(""));
        assert!(!user_id_ok("al ice"));
        assert!(!user_id_ok(&"a".repeat(65)));
    }

    #[test]
    fn the_key_object_holds_no_digest() {
        let r = KeyRecord {
            id: "abc".into(),
            digest: [9; 32],
            prefix: "sk-spark-abc".into(),
            user_id: "u".into(),
            name: "n".into(),
            budget: None,
            rate_limit: None,
            models: None,
            expires_at: None,
            created_at: 0,
            updated_at: 0,
            revoked_at: None,
        };
        let text = key_json(
            &r,
            Amount {
                nusd: 1_500_000_000,
                tokens: 0,
            },
        )
        .to_string();
        assert!(!text.contains("0909"));
        assert!(text.contains("\"spentUsd\":1.5"));
    }
}
