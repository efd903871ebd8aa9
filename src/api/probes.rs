//! Kubernetes probes. `/livez` says the process is up and serving HTTP; it checks nothing else,
//! so a slow provider can never get a healthy pod restarted.

use axum::Json;
use serde_json::{Value, json};

pub async fn livez() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
