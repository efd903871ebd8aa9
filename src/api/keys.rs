//! The database-backed admin and usage endpoints: managed keys (`/api/admin/keys`), the audit
//! trail (`/api/admin/audit`) and usage (`/api/usage`).
//!
//! Thin: parameters are read here, the rules live in `auth::issue` and `store`. A database that
//! does not answer is 503 `database_unavailable` with `Retry-After`; one switched off is 501
//! `database_off`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::json::AppJson;
use super::middleware::RequestId;
use crate::auth::Caller;
use crate::auth::issue::{self, Actor};
use crate::budget::Amount;
use crate::state::AppState;
use crate::store::keys::{KeyRecord, Period};
use crate::store::usage::GroupBy;
use crate::store::{Store, now_ms, parse_rfc3339, rfc3339, usd};

/// Who is asking, for the audit trail: caller label, request id, client address.
pub struct AuditCtx(pub Actor);

impl FromRequestParts<AppState> for AuditCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let name = parts
            .extensions
            .get::<Caller>()
            .map_or("anonymous", Caller::label)
            .to_owned();
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        let ip = super::ratelimit::client_ip_of(state, &parts.extensions, &parts.headers);
        Ok(AuditCtx(Actor {
            name,
            request_id,
            client_address: Some(ip.to_string()),
        }))
    }
}

fn store(state: &AppState) -> Result<&Store, ApiError> {
    state.store().ok_or(ApiError::DatabaseOff)
}

/// A query string; a malformed one is 400 in our error shape.
type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn params(p: Params) -> Result<HashMap<String, String>, ApiError> {
    p.map(|Query(q)| q)
        .map_err(|_| ApiError::InvalidRequest("the query string is malformed".into()))
}

fn object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::InvalidRequest(
            "the body must be a JSON object".into(),
        )),
    }
}

/// `limit` in 1..=500 (default 100).
fn limit(q: &HashMap<String, String>) -> Result<u32, ApiError> {
    match q.get("limit") {
        None => Ok(100),
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| ApiError::InvalidRequest("limit must be 1 to 500".into())),
    }
}

fn known_models(state: &AppState) -> Vec<String> {
    state
        .generator()
        .models()
        .into_iter()
        .map(|(m, _)| m)
        .collect()
}

/// What each key has spent in its budget's window (or in total when it has no budget), in one
/// query for all of them.
async fn spent(store: &Store, keys: &[KeyRecord]) -> Result<Vec<Amount>, ApiError> {
    let now = now_ms();
    let (day, month) = (Period::Day.window(now).0, Period::Month.window(now).0);
    let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    let sums = store.spent_by_keys(&ids, day, month).await?;
    Ok(keys
        .iter()
        .map(|k| {
            let window = match k.budget.map(|b| b.period) {
                Some(Period::Day) => 0,
                Some(Period::Month) => 1,
                Some(Period::Total) | None => 2,
            };
            sums.get(&k.id).map_or(Amount::default(), |s| s[window])
        })
        .collect())
}

/// `POST /api/admin/keys`: 201 with the key object and, this once, the key.
pub async fn create(
    State(state): State<AppState>,
    AuditCtx(actor): AuditCtx,
    AppJson(body): AppJson<Value>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let body = object(body)?;
    let (record, key) = issue::create(
        store,
        state.managed_keys(),
        &body,
        &known_models(&state),
        &actor,
    )
    .await?;
    tracing::info!(key_id = %record.id, user = %record.user_id, "managed key created");
    let mut out = issue::key_json(&record, Amount::default());
    out["key"] = Value::String(key);
    let mut resp = (StatusCode::CREATED, Json(out)).into_response();
    // The secret is in this body: no intermediary may keep a copy.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /api/admin/keys?limit=&cursor=`: never a secret or a digest.
pub async fn list(State(state): State<AppState>, q: Params) -> Result<Json<Value>, ApiError> {
    let store = store(&state)?;
    let q = params(q)?;
    let limit = limit(&q)?;
    let (keys, more) = store
        .list_keys(limit, q.get("cursor").map(String::as_str))
        .await?;
    let out: Vec<Value> = keys
        .iter()
        .zip(spent(store, &keys).await?)
        .map(|(k, amount)| issue::key_json(k, amount))
        .collect();
    let next = more.then(|| keys.last().map(|k| k.id.clone())).flatten();
    Ok(Json(json!({ "keys": out, "nextCursor": next })))
}

/// `PATCH /api/admin/keys/{id}`: absent fields stay, `null` clears.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditCtx(actor): AuditCtx,
    AppJson(body): AppJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let store = store(&state)?;
    let body = object(body)?;
    let record = issue::update(
        store,
        state.managed_keys(),
        &id,
        &body,
        &known_models(&state),
        &actor,
    )
    .await?;
    tracing::info!(key_id = %record.id, "managed key updated");
    let amount = spent(store, std::slice::from_ref(&record))
        .await?
        .pop()
        .unwrap_or_default();
    Ok(Json(issue::key_json(&record, amount)))
}

/// `DELETE /api/admin/keys/{id}`: revokes; 204.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    AuditCtx(actor): AuditCtx,
) -> Result<StatusCode, ApiError> {
    let store = store(&state)?;
    issue::revoke(store, state.managed_keys(), &id, &actor).await?;
    tracing::info!(key_id = %id, "managed key revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/admin/audit?limit=&cursor=&action=`: newest first.
pub async fn audit(State(state): State<AppState>, q: Params) -> Result<Json<Value>, ApiError> {
    let store = store(&state)?;
    let q = params(q)?;
    let limit = limit(&q)?;
    let cursor = match q.get("cursor") {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::InvalidRequest("cursor must be a nextCursor from a previous page".into())
        })?),
    };
    let action = q.get("action").map(String::as_str);
    if action.is_some_and(|a| !crate::store::audit::ACTIONS.contains(&a)) {
        return Err(ApiError::InvalidRequest(format!(
            "action must be one of {}",
            crate::store::audit::ACTIONS.join(", ")
        )));
    }
    let (rows, more) = store.list_audit(limit, cursor, action).await?;
    let next = more
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "time": rfc3339(r.time),
                "actor": r.actor,
                "action": r.action,
                "target": r.target,
                "requestId": r.request_id,
                "clientAddress": r.client_address,
                "details": serde_json::from_str::<Value>(&r.details).unwrap_or(Value::Null),
                "hash": r.hash,
                "prevHash": r.prev_hash,
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries, "nextCursor": next })))
}

/// `GET /api/usage?from=&to=&groupBy=&userId=&format=`: a user key sees its own usage; the
/// master key (and, with auth off, anyone on loopback) sees everyone's and may filter by user.
pub async fn usage(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    q: Params,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let q = params(q)?;
    let now = now_ms();
    let time = |name: &str, default: i64| -> Result<i64, ApiError> {
        match q.get(name) {
            None => Ok(default),
            Some(t) => parse_rfc3339(t).ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "{name} must be an RFC 3339 time such as 2026-12-01T00:00:00Z"
                ))
            }),
        }
    };
    let from = time("from", crate::store::keys::Period::Month.window(now).0)?;
    let to = time("to", now + 1)?;
    if from >= to {
        return Err(ApiError::InvalidRequest("from must be before to".into()));
    }
    let group_by = match q.get("groupBy") {
        None => GroupBy::Day,
        Some(g) => GroupBy::parse(g).ok_or_else(|| {
            ApiError::InvalidRequest("groupBy must be day, model, provider or user".into())
        })?,
    };
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "format must be json or csv".into(),
            ));
        }
    };
    let asked = q.get("userId").map(String::as_str);
    let user = match caller.map(|axum::Extension(c)| c) {
        Some(Caller::User(me)) => {
            if asked.is_some_and(|u| u != me) {
                return Err(ApiError::Forbidden);
            }
            Some(me)
        }
        Some(Caller::Master | Caller::Admin(_) | Caller::Anonymous) | None => {
            asked.map(str::to_owned)
        }
    };
    let sums = store
        .usage_sums(from, to, group_by, user.as_deref())
        .await?;
    let label = |g: &str| -> String {
        match group_by {
            // Whole days since the epoch as a UTC date; anything else as it is.
            GroupBy::Day => g
                .parse::<i64>()
                .ok()
                .and_then(|d| d.checked_mul(86_400_000))
                .and_then(|ms| rfc3339(ms).get(..10).map(str::to_owned))
                .unwrap_or_else(|| g.to_owned()),
            _ => g.to_owned(),
        }
    };
    let (mut requests, mut input, mut output, mut cost) = (0i64, 0i64, 0i64, 0i64);
    for s in &sums {
        requests += s.requests;
        input += s.input_tokens;
        output += s.output_tokens;
        cost += s.cost_nusd;
    }
    if csv {
        let mut text = String::from("group,requests,inputTokens,outputTokens,costUsd\n");
        for s in &sums {
            text.push_str(&format!(
                "{},{},{},{},{}\n",
                csv_field(&label(&s.group)),
                s.requests,
                s.input_tokens,
                s.output_tokens,
                usd(s.cost_nusd)
            ));
        }
        let mut resp = text.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(resp);
    }
    let rows: Vec<Value> = sums
        .iter()
        .map(|s| {
            json!({
                "group": label(&s.group),
                "requests": s.requests,
                "inputTokens": s.input_tokens,
                "outputTokens": s.output_tokens,
                "costUsd": usd(s.cost_nusd),
            })
        })
        .collect();
    Ok(Json(json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "groupBy": group_by.as_str(),
        "rows": rows,
        "totals": {
            "requests": requests,
            "inputTokens": input,
            "outputTokens": output,
            "costUsd": usd(cost),
        },
    }))
    .into_response())
}

/// A CSV field, quoted when it holds a comma, quote or line break; a leading `=`, `+`, `-` or
/// `@` is prefixed with `'` so a spreadsheet does not run it as a formula.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("gpt-4o"), "gpt-4o");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }
}
