//! The operator console: static assets embedded in the binary and served at `/console`, and the
//! two admin endpoints only the console needs (the overview's live figures, the audit chain's
//! status). Everything else the console shows comes from the public admin API, with the same
//! key and the same rules as curl.
//!
//! The assets are plain HTML, CSS and JavaScript under `console/` (no build step, so what is
//! served is the source). They are public: they hold no data, and every figure they show is
//! fetched with the key the operator typed, sent as a header, never in a URL or a cookie. Their
//! Content-Security-Policy allows scripts, styles and requests from this origin only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use crate::state::AppState;
use crate::store::now_ms;

/// What the console's pages may load: their own scripts, styles and API, nothing else; no
/// inline script or style, no frames, no form posts, no `<base>`.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("../../console/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../console/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../console/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../console/icon.svg"),
    },
];

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    resp
}

/// `GET /console`: the single page.
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /console/{file}`: its scripts, styles and icon; 404 for anything else.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => page(a.content_type, a.body),
        None => ApiError::NotFound.into_response(),
    }
}

/// `GET /api/admin/summary`: requests per second, error rate, latency and cache hit rate over
/// the last minute, and spend today and this month (UTC) from the ledger. The live figures never
/// wait on the database: when it does not answer, `spend` is `null` and `spendError` says why.
pub async fn summary(State(state): State<AppState>) -> Json<Value> {
    let overview = state.overview();
    let (spend, spend_error) = match state.store() {
        None => (Value::Null, Some("database_off")),
        Some(store) => match store.spend_today_and_month(now_ms()).await {
            Ok(s) => (
                json!({
                    "todayUsd": crate::store::usd(s.today_nusd),
                    "todayRequests": s.today_requests,
                    "monthUsd": crate::store::usd(s.month_nusd),
                    "monthRequests": s.month_requests,
                }),
                None,
            ),
            Err(e) => {
                tracing::warn!(error = %e, "console summary: the ledger did not answer");
                (Value::Null, Some("database_unavailable"))
            }
        },
    };
    Json(json!({
        "live": overview,
        "spend": spend,
        "spendError": spend_error,
        "circuits": super::health::circuits(&state),
    }))
}

/// `GET /api/admin/audit/verify`: walks the audit trail's hash chain, as `spark-gateway audit
/// verify` does. 200 either way; `intact` says which.
pub async fn audit_verify(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store().ok_or(ApiError::DatabaseOff)?;
    let body = match store.verify_audit().await? {
        Ok(rows) => json!({"intact": true, "rows": rows}),
        Err(broken) => json!({"intact": false, "brokenAt": broken.id, "reason": broken.why}),
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}
