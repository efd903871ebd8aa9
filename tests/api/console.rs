//! The operator console's server side: its embedded assets and their Content-Security-Policy,
//! and the two admin endpoints it reads (the overview summary, the audit chain's status). The
//! pages themselves are driven in a real browser by `console/test/console.test.mjs` (.ci/run).

use serde_json::{Value, json};

use crate::helpers::*;

const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

#[tokio::test]
async fn the_assets_are_served_with_a_policy_that_allows_only_this_origin() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/icon.svg", "image/svg+xml"),
    ] {
        // No key: the assets hold no data.
        let resp = app.get_as(path, None).await;
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        assert_eq!(h["content-security-policy"], CONSOLE_CSP, "{path}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    // Anything else under /console is a 404 in the API's shape, with the API's strict policy.
    for path in [
        "/console/secrets.json",
        "/console/..%2Fsrc%2Fmain.rs",
        "/console/a/b",
    ] {
        let resp = app.get_as(path, None).await;
        assert_eq!(
            resp.headers()["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'"
        );
        assert_error(resp, 404, "not_found").await;
    }
    // The page passes its own policy: no inline script, style or event handler.
    let html = app.get_as("/console", None).await.text().await.unwrap();
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(tag.contains(" src="), "an inline script: {tag}");
    }
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "inline style"
    );
    assert!(
        !html.contains(" onclick=") && !html.contains(" onload="),
        "inline handler"
    );
}

#[tokio::test]
async fn the_summary_is_for_admins_and_counts_api_traffic_and_spend() {
    let app = spawn_app().await;
    both_providers_answer(&app).await;
    assert_error(
        app.get_as("/api/admin/summary", None).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        app.get_as("/api/admin/summary", Some(ALICE_KEY)).await,
        403,
        "forbidden",
    )
    .await;

    for i in 0..5 {
        let resp = app
            .post_generate(&json!({"prompt": format!("a door number {i}"), "engine": "unity"}))
            .await;
        assert_eq!(resp.status(), 200);
    }
    // Probes, scrapes and the summary itself are not API traffic.
    for path in ["/livez", "/metrics", "/api/spark/health"] {
        app.get_as(path, None).await;
    }
    let s: Value = app.get_json("/api/admin/summary", MASTER_KEY).await;
    let live = &s["live"];
    assert_eq!(live["requests"], 5, "{s}");
    assert_eq!(live["errorRate"], 0.0);
    assert!(live["p50Ms"].as_f64().unwrap() > 0.0, "{s}");
    assert!(live["p99Ms"].as_f64().unwrap() >= live["p50Ms"].as_f64().unwrap());
    assert_eq!(
        live["cacheHitRate"], 0.0,
        "five different prompts: five misses"
    );
    assert!(live["windowSeconds"].as_f64().unwrap() <= 60.0);
    assert!(s["circuits"]["anthropic"]["circuit"] == "closed", "{s}");
    // Spend comes from the ledger, written in batches: the rows arrive within a few seconds.
    let mut spend = Value::Null;
    for _ in 0..50 {
        let s: Value = app.get_json("/api/admin/summary", MASTER_KEY).await;
        spend = s["spend"].clone();
        if spend["monthRequests"] == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(spend["monthRequests"], 5, "{spend}");
    assert_eq!(spend["todayRequests"], 5);
    assert!(spend["monthUsd"].as_f64().unwrap() > 0.0, "{spend}");
    assert_eq!(spend["todayUsd"], spend["monthUsd"]);
}

#[tokio::test]
async fn without_a_database_the_live_figures_stay_and_spend_says_why() {
    let app = spawn_app_with(&[("SPARK_DATABASE_URL", "none")]).await;
    let s: Value = app.get_json("/api/admin/summary", MASTER_KEY).await;
    assert_eq!(s["spend"], Value::Null);
    assert_eq!(s["spendError"], "database_off");
    assert_eq!(s["live"]["requests"], 0);
    assert_error(
        app.get_as("/api/admin/audit/verify", Some(MASTER_KEY))
            .await,
        501,
        "database_off",
    )
    .await;
}

#[tokio::test]
async fn the_audit_chain_status_is_intact_and_not_flooded_by_the_upkeep_loop() {
    let app = spawn_app().await;
    assert_error(
        app.get_as("/api/admin/audit/verify", Some(ALICE_KEY)).await,
        403,
        "forbidden",
    )
    .await;
    // A second and a half of upkeep (the key ring is asked four times a second): no entry.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let reloads: Value = app
        .get_json("/api/admin/audit?action=keys.reload", MASTER_KEY)
        .await;
    assert_eq!(reloads["entries"], json!([]), "{reloads}");
    let v: Value = app.get_json("/api/admin/audit/verify", MASTER_KEY).await;
    assert_eq!(v["intact"], true, "{v}");
    assert!(
        v["rows"].as_u64().unwrap() >= 1,
        "config.start at least: {v}"
    );
}
