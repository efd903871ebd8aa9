//! Managed keys, the usage ledger, budgets and the audit trail through the HTTP API, each body
//! run against a fresh SQLite file and a fresh PostgreSQL schema.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;
use spark_gateway::store::Store;
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    MASTER_KEY, TestApp, UNITY_ANSWER, anthropic_answer, assert_error, db, spawn_app_with,
};

async fn create_key(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/admin/keys"))
        .header("x-api-key", MASTER_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Creates a key and returns (id, key).
async fn issue(app: &TestApp, body: &Value) -> (String, String) {
    let resp = create_key(app, body).await;
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// GETs `path` with `key` and returns its JSON body, whatever the status.
async fn get_json(app: &TestApp, key: &str, path: &str) -> Value {
    app.client
        .get(app.url(path))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn usage(app: &TestApp, key: &str, query: &str) -> Value {
    let resp = app
        .client
        .get(app.url(&format!("/api/usage?{query}")))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Waits (bounded) until the ledger holds `n` requests for `key`'s view: rows are written by
/// the batch writer within about a second.
async fn usage_reaching(app: &TestApp, key: &str, query: &str, n: i64) -> Value {
    for _ in 0..100 {
        let u = usage(app, key, query).await;
        if u["totals"]["requests"].as_i64() == Some(n) {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the ledger never reached {n} requests");
}

/// Anthropic answers every call with these token counts.
async fn anthropic_uses(app: &TestApp, input: u64, output: u64) {
    let mut answer = anthropic_answer(UNITY_ANSWER);
    answer["usage"] = json!({"input_tokens": input, "output_tokens": output});
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&app.anthropic)
        .await;
}

#[tokio::test]
async fn a_managed_key_generates_and_its_usage_is_priced_in_the_ledger() {
    for (backend, url) in db::both().await {
        let app = spawn_app_with(&[("SPARK_DATABASE_URL", &url)]).await;
        anthropic_uses(&app, 321, 654).await;
        let resp = create_key(
            &app,
            &json!({"userId": "carol", "name": "laptop", "budget": {"limitUsd": 1.0, "period": "month"}}),
        )
        .await;
        assert_eq!(resp.status(), 201, "{backend}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let created: Value = resp.json().await.unwrap();
        let key = created["key"].as_str().unwrap().to_owned();
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(key.starts_with(&format!("sk-spark-{id}-")));
        assert_eq!(created["prefix"], format!("sk-spark-{id}"));
        assert_eq!(created["budget"]["limitUsd"], 1.0);

        let prompt = "Create a door that opens when the player walks near it";
        let resp = app
            .post_generate_as(&key, &json!({"prompt": prompt, "engine": "unity"}))
            .await;
        assert_eq!(resp.status(), 200, "{backend}");
        let left: f64 = resp.headers()["x-spark-budget-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(left <= 1.0);

        // 321 in at $3/M and 654 out at $15/M (claude-sonnet-4-5).
        let cost = 0.010_773;
        let mine = usage_reaching(&app, &key, "groupBy=model", 1).await;
        assert_eq!(mine["rows"][0]["group"], "claude-sonnet-4-5-20250929");
        assert_eq!(mine["totals"]["inputTokens"], 321);
        assert_eq!(mine["totals"]["outputTokens"], 654);
        assert!((mine["totals"]["costUsd"].as_f64().unwrap() - cost).abs() < 1e-9);
        // The master key sees the same total for that user, and may ask as CSV.
        let all = usage(&app, MASTER_KEY, "groupBy=user&userId=carol").await;
        assert_eq!(all["rows"][0]["group"], "carol");
        assert_eq!(all["totals"], mine["totals"]);
        let csv = app
            .client
            .get(app.url("/api/usage?groupBy=provider&format=csv"))
            .header("x-api-key", MASTER_KEY)
            .send()
            .await
            .unwrap();
        assert!(
            csv.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let text = csv.text().await.unwrap();
        assert!(text.contains("anthropic,1,321,654,0.010773"), "{text}");
        // A user asking for someone else's usage is refused.
        let other = app
            .client
            .get(app.url("/api/usage?userId=alice"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_error(other, 403, "forbidden").await;

        // The key list shows what it spent, never a secret.
        let listed: Value = get_json(&app, MASTER_KEY, "/api/admin/keys").await;
        let text = listed.to_string();
        assert!(!text.contains(&key[key.len() - 20..]), "{backend}");
        assert!((listed["keys"][0]["spentUsd"].as_f64().unwrap() - cost).abs() < 1e-9);

        // Revoked: refused at once on this replica.
        let del = app
            .client
            .delete(app.url(&format!("/api/admin/keys/{id}")))
            .header("x-api-key", MASTER_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(del.status(), 204);
        let refused = app
            .post_generate_as(&key, &json!({"prompt": prompt, "engine": "unity"}))
            .await;
        assert_error(refused, 401, "unauthorized").await;

        // The database holds no secret and no prompt text; the trail is whole.
        let store = Store::open(&url).unwrap();
        let secret = &key[key.len() - 40..];
        let raw = sqlx::AnyPool::connect(&url).await.unwrap();
        // Every text column of the key's row, and its digest is SHA-256 of the key.
        let stored: String = sqlx::query_scalar(
            "SELECT id || digest || prefix || user_id || name || COALESCE(budget_period, '') \
             FROM api_keys",
        )
        .fetch_one(&raw)
        .await
        .unwrap();
        assert!(!stored.contains(secret), "{backend}");
        let digest: String = sqlx::query_scalar("SELECT digest FROM api_keys")
            .fetch_one(&raw)
            .await
            .unwrap();
        let want: String = sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest, want, "{backend}");
        let texts: Vec<String> = sqlx::query_scalar(
            "SELECT request_id || user_id || route || provider || model || engine || status FROM usage_records",
        )
        .fetch_all(&raw)
        .await
        .unwrap();
        assert!(
            texts
                .iter()
                .all(|t| !t.contains("door") && !t.contains(secret))
        );
        let details: Vec<String> = sqlx::query_scalar("SELECT details FROM audit_log")
            .fetch_all(&raw)
            .await
            .unwrap();
        assert!(details.iter().all(|d| !d.contains(secret)));
        assert!(store.verify_audit().await.unwrap().is_ok(), "{backend}");
        let audit: Value = get_json(&app, MASTER_KEY, "/api/admin/audit?action=key.revoke").await;
        assert_eq!(audit["entries"][0]["target"], id.as_str());
        assert_eq!(audit["entries"][0]["actor"], "master");
        assert!(audit["entries"][0]["clientAddress"].is_string());
    }
}

#[tokio::test]
async fn a_spent_budget_refuses_and_concurrency_overshoots_by_less_than_one_request() {
    for (backend, url) in db::both().await {
        let app = spawn_app_with(&[("SPARK_DATABASE_URL", &url)]).await;
        // Each call: 50 in at $3/M + 100 out at $15/M = $0.00165.
        anthropic_uses(&app, 50, 100).await;
        let per_call = 0.001_65;
        let (_, key) = issue(
            &app,
            &json!({"userId": "dave", "budget": {"limitUsd": 10.0 * per_call, "period": "day"}}),
        )
        .await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let client = app.client.clone();
            let url = app.url("/api/spark/generate");
            let key = key.clone();
            tasks.push(spark_gateway::telemetry::spawn_named(
                "budget-client",
                async move {
                    client
                        .post(url)
                        .header("x-api-key", key)
                        .json(&json!({"prompt": format!("door number {i}"), "maxTokens": 100}))
                        .send()
                        .await
                        .unwrap()
                },
            ));
        }
        let mut ok = 0;
        for t in tasks {
            let resp = t.await.unwrap();
            match resp.status().as_u16() {
                200 => ok += 1,
                429 => {
                    let body = assert_error(resp, 429, "budget_exceeded").await;
                    assert!(body["error"]["details"]["limitUsd"].is_number());
                }
                other => panic!("{backend}: unexpected {other}"),
            }
        }
        // Admission needs spent + reserved < limit, so what is spent stays under the limit
        // plus one request: ten calls at most.
        assert!((1..=10).contains(&ok), "{backend}: {ok} succeeded");
        let spent = usage_reaching(&app, MASTER_KEY, "userId=dave", ok).await["totals"]["costUsd"]
            .as_f64()
            .unwrap();
        assert!(spent < 11.0 * per_call, "{backend}: {spent}");

        // Spend it all, then the next call is refused with the details and Retry-After.
        for i in 0..20 {
            let r = app
                .post_generate_as(
                    &key,
                    &json!({"prompt": format!("crate {i}"), "maxTokens": 100}),
                )
                .await;
            if r.status() == 429 {
                break;
            }
        }
        let resp = app
            .post_generate_as(&key, &json!({"prompt": "one more", "maxTokens": 100}))
            .await;
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&retry));
        assert_eq!(resp.headers()["x-spark-budget-remaining"], "0.000000");
        let body = assert_error(resp, 429, "budget_exceeded").await;
        let d = &body["error"]["details"];
        assert!((d["limitUsd"].as_f64().unwrap() - 10.0 * per_call).abs() < 1e-9);
        assert!(d["spentUsd"].as_f64().unwrap() >= 10.0 * per_call - 1e-9);
        assert!(d["resetsAt"].as_str().unwrap().ends_with("T00:00:00Z"));
        // The OpenAI-compatible API says it the way OpenAI does, so the SDK raises
        // RateLimitError with the quota type.
        let chat = app
            .chat(
                &key,
                &json!({"model": "spark-auto", "messages": [{"role": "user", "content": "a door"}]}),
            )
            .await;
        assert_eq!(chat.status(), 429);
        let body: Value = chat.json().await.unwrap();
        assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
        assert!(
            app.metrics()
                .await
                .contains("spark_budget_rejections_total{scope=\"key\"}")
        );
    }
}

#[tokio::test]
async fn a_token_limit_refuses_by_tokens_and_is_restored_after_a_restart() {
    for (backend, url) in db::both().await {
        let app = spawn_app_with(&[("SPARK_DATABASE_URL", &url)]).await;
        // Each call uses 50 + 100 = 150 tokens and costs far less than the $100 limit.
        anthropic_uses(&app, 50, 100).await;
        let (id, key) = issue(
            &app,
            &json!({"userId": "erin", "budget": {"limitUsd": 100.0, "period": "total", "limitTokens": 1000}}),
        )
        .await;
        let mut ok = 0;
        for i in 0..12 {
            let r = app
                .post_generate_as(
                    &key,
                    &json!({"prompt": format!("lamp {i}"), "maxTokens": 100}),
                )
                .await;
            if r.status() != 200 {
                let body = assert_error(r, 429, "budget_exceeded").await;
                let d = &body["error"]["details"];
                assert_eq!(d["limitTokens"], 1000, "{backend}: {body}");
                assert_eq!(d["spentTokens"], 1050, "{backend}: {body}");
                assert!(d["resetsAt"].is_null());
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("1000 tokens"), "{message}");
                break;
            }
            ok += 1;
            let left: i64 = r.headers()["x-spark-budget-remaining-tokens"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(left, (1000 - 150 * ok).max(0), "{backend}");
        }
        // Sequential calls: admitted while fewer than 1,000 tokens are spent, so seven.
        assert_eq!(ok, 7, "{backend}");
        // The key object reads the ledger: wait for the writer's batch.
        usage_reaching(&app, MASTER_KEY, "userId=erin", 7).await;
        let k = get_json(&app, MASTER_KEY, "/api/admin/keys").await;
        let k = k["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(k["budget"]["limitTokens"], 1000, "{k}");
        assert_eq!(k["spentTokens"], 1050, "{backend}: {k}");

        // A new gateway on the same database restores the tokens from the ledger: still refused.
        let again = spawn_app_with(&[("SPARK_DATABASE_URL", &url)]).await;
        anthropic_uses(&again, 50, 100).await;
        let mut refused = false;
        for _ in 0..50 {
            let r = again
                .post_generate_as(&key, &json!({"prompt": "lamp", "maxTokens": 100}))
                .await;
            match r.status().as_u16() {
                429 => {
                    let body = assert_error(r, 429, "budget_exceeded").await;
                    assert_eq!(body["error"]["details"]["spentTokens"], 1050, "{body}");
                    refused = true;
                    break;
                }
                // Not yet polled into the new gateway's memory: a managed key is unknown for
                // up to a poll period at start-up.
                401 => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!("{backend}: {other}"),
            }
        }
        assert!(
            refused,
            "{backend}: the restored token spend did not refuse"
        );

        // Raising the limit lets the key spend again.
        let resp = app
            .client
            .patch(app.url(&format!("/api/admin/keys/{id}")))
            .header("x-api-key", MASTER_KEY)
            .json(&json!({"budget": {"limitUsd": 100.0, "period": "total", "limitTokens": 5000}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let r = app
            .post_generate_as(&key, &json!({"prompt": "lamp 99", "maxTokens": 100}))
            .await;
        assert_eq!(r.status(), 200, "{backend}");
        assert_eq!(r.headers()["x-spark-budget-remaining-tokens"], "3800");
    }
}

#[tokio::test]
async fn key_requests_are_checked_whole_and_model_lists_are_enforced() {
    let app = spawn_app_with(&[]).await;
    anthropic_uses(&app, 10, 10).await;
    // Every problem at once, none of the caller's text repeated.
    let bad = create_key(
        &app,
        &json!({"userId": "a b", "budget": {"limitUsd": -1, "period": "week"},
                "rateLimit": "fast", "models": ["<b>gpt</b>"], "expiresAt": "soon", "role": "admin"}),
    )
    .await;
    let body = assert_error(bad, 400, "invalid_request").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(message.matches("; ").count(), 5, "{message}");
    assert!(!message.contains("<b>"));
    // A user key cannot reach the admin API.
    let forbidden = app
        .client
        .post(app.url("/api/admin/keys"))
        .header("x-api-key", crate::helpers::ALICE_KEY)
        .json(&json!({"userId": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(forbidden, 403, "forbidden").await;

    let (id, key) = issue(
        &app,
        &json!({"userId": "erin", "models": ["claude-haiku-4-5"]}),
    )
    .await;
    // Naming another model is refused; naming none picks the allowed one.
    let other = app
        .post_generate_as(
            &key,
            &json!({"prompt": "a door", "model": "claude-opus-4-1", "provider": "anthropic"}),
        )
        .await;
    assert_error(other, 403, "model_not_allowed").await;
    let ok = app
        .post_generate_as(&key, &json!({"prompt": "a door", "provider": "anthropic"}))
        .await;
    assert_eq!(ok.status(), 200);
    let sent = app.anthropic.received_requests().await.unwrap();
    let last: Value = serde_json::from_slice(&sent.last().unwrap().body).unwrap();
    assert_eq!(last["model"], "claude-haiku-4-5");

    // PATCH: null clears, absent keeps; an unknown id is 404.
    let patched: Value = app
        .client
        .patch(app.url(&format!("/api/admin/keys/{id}")))
        .header("x-api-key", MASTER_KEY)
        .json(&json!({"models": null, "name": "renamed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["models"], Value::Null, "{patched}");
    assert_eq!(patched["name"], "renamed");
    assert_eq!(patched["userId"], "erin");
    let missing = app
        .client
        .patch(app.url("/api/admin/keys/nosuchkey000"))
        .header("x-api-key", MASTER_KEY)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(missing, 404, "not_found").await;

    // A key's own quota replaces the route's for that key alone.
    let (_, slow) = issue(&app, &json!({"userId": "erin", "rateLimit": "2/min"})).await;
    for i in 0..2 {
        let r = app
            .post_generate_as(&slow, &json!({"prompt": format!("lamp {i}")}))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "2");
    }
    let limited = app
        .post_generate_as(&slow, &json!({"prompt": "lamp 3"}))
        .await;
    assert_error(limited, 429, "rate_limited").await;
    // The same user's other key is not slowed by it.
    let fast = app
        .post_generate_as(&key, &json!({"prompt": "lamp 4"}))
        .await;
    assert_eq!(fast.status(), 200);
    assert_eq!(fast.headers()["x-ratelimit-limit"], "100000");
}
