//! Health and readiness: what the operator and Kubernetes read.
//!
//! `/api/spark/health` reports every provider's circuit, the cache, the database and the
//! process; it is 503
//! only when no provider in `SPARK_PROVIDER_ORDER` can serve (all circuits open). `/readyz`
//! follows the same rule, so a replica whose providers are all down leaves the Service while the
//! others keep serving.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::resilience::CircuitState;
use crate::state::AppState;

/// Resident set size from `/proc/self/status` (Linux); `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Whether at least one provider of the fallback order can take a call now.
fn can_serve(state: &AppState) -> bool {
    let router = state.generator().router();
    state
        .config()
        .provider_order
        .iter()
        .filter_map(|id| router.breaker(*id))
        .any(|b| b.snapshot().state != CircuitState::Open)
}

/// Each provider's circuit: its state, whether the provider refused our key, failures and when
/// it is probed again (health, and the console's providers page).
pub fn circuits(state: &AppState) -> Map<String, Value> {
    circuits_and_any_open(state).0
}

fn circuits_and_any_open(state: &AppState) -> (Map<String, Value>, bool) {
    let router = state.generator().router();
    let mut providers = Map::new();
    let mut any_open = false;
    for id in router.ids() {
        let Some(b) = router.breaker(id) else {
            continue;
        };
        let s = b.snapshot();
        let misconfigured = router.misconfigured(id);
        any_open |= s.state == CircuitState::Open || misconfigured;
        providers.insert(
            id.as_str().to_owned(),
            json!({
                "circuit": s.state.as_str(),
                "misconfigured": misconfigured,
                "consecutiveFailures": s.consecutive_failures,
                "failureRate": s.failure_rate,
                "openUntil": s.open_for.map(|d| (std::time::SystemTime::now() + d)
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|t| t.as_millis() as u64)
                    .unwrap_or(0)),
            }),
        );
    }
    (providers, any_open)
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let router = state.generator().router();
    let (providers, any_open) = circuits_and_any_open(&state);
    let serving = can_serve(&state);
    let limiter = state.limiter();
    // Redis down is degraded, never unhealthy: the gateway keeps serving on local state.
    let redis_ok = state.redis().is_none_or(|r| r.healthy());
    // The database down is degraded too: requests are served, ledger rows wait in the queue.
    let ledger = state.ledger().status();
    let database_ok = !state.ledger().degraded();
    // Issuers whose signing keys are in hand: one without keys refuses its users (503
    // auth_unavailable) while API keys work, so it is degraded, never unhealthy.
    let (issuers_ready, issuers) = state.jwt().map_or((0, 0), |v| v.ready());
    let status = if !serving {
        "unhealthy"
    } else if any_open || !redis_ok || !database_ok || issuers_ready < issuers {
        "degraded"
    } else {
        "healthy"
    };
    let cache = state.generator().cache().stats();
    let totals = state.errors().totals();
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": state.uptime().as_secs(),
        "checks": {
            "providers": providers,
            "cache": {
                "entries": cache.entries,
                "weightedBytes": cache.weighted_bytes,
                "hitRate": cache.hit_rate,
            },
            "rateLimiter": {"backend": limiter.backend(), "ok": limiter.ok()},
            // Managed keys, the usage ledger and the audit trail.
            "database": {
                "backend": ledger.backend,
                "ok": database_ok,
                "usageQueueDepth": ledger.queue_depth,
                "usageDropped": ledger.dropped,
                "managedKeys": state.managed_keys().len(),
            },
            "identityProviders": {"issuers": issuers, "withKeys": issuers_ready},
            // Outbound shaping lanes (SPARK_PROVIDER_LIMITS): in flight, waiting, capacity left.
            "shaping": router.shaper().snapshot(),
            "errorTracking": {
                "total": totals.iter().map(|(_, n)| n).sum::<u64>(),
                "bySeverity": totals
                    .iter()
                    .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
                    .collect::<Map<String, Value>>(),
            },
            "metrics": {"available": true},
            "memory": {"rssBytes": rss_bytes()},
        }
    });
    let code = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": "draining" })),
        );
    }
    if can_serve(&state) {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reason": "no provider can serve" })),
        )
    }
}

/// Refreshes breaker gauges before a scrape: an open circuit whose cool-down has passed is
/// half-open even if no call has arrived to notice.
pub fn refresh_breakers(state: &AppState) {
    let router = state.generator().router();
    // Shaping budgets refill with time, not events: their gauges are set at scrape time too.
    router.shaper().publish();
    for id in router.ids() {
        if let Some(b) = router.breaker(id) {
            let _ = b.snapshot();
        }
    }
}
