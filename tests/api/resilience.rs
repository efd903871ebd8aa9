//! Breakers, retries, fallback, the deadline and the response cache, black-box against wiremock
//! upstreams. Cool-downs, probes and deadline arithmetic are tested on tokio's paused clock with
//! fake providers in `src/resilience/tests.rs` and `breaker.rs`; what stays here is what a client
//! sees through HTTP.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

/// Breakers that trip after 3 failures and cool down for 300 ms; one attempt per provider; no
/// cache, so every request reaches the router.
const FAST_BREAKER: &[(&str, &str)] = &[
    ("SPARK_BREAKER_CONSECUTIVE_FAILURES", "3"),
    ("SPARK_BREAKER_OPEN", "300ms"),
    ("SPARK_BREAKER_OPEN_MAX", "5s"),
    ("SPARK_RETRY_ATTEMPTS", "1"),
    ("SPARK_CACHE_TTL", "0"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = FAST_BREAKER.to_vec();
    v.extend_from_slice(extra);
    v
}

async fn mount_ok(server: &wiremock::MockServer, route: &str, body: Value) {
    Mock::given(path(route))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

async fn anthropic_calls(app: &TestApp) -> usize {
    app.anthropic.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn an_open_breaker_sends_traffic_to_the_fallback_and_spares_the_primary() {
    let app = spawn_app_with(&with(&[])).await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.anthropic)
        .await;
    mount_ok(
        &app.openai,
        "/v1/chat/completions",
        openai_answer(UNITY_ANSWER),
    )
    .await;

    for i in 0..8 {
        let resp = app
            .post_generate(&json!({"prompt": format!("door {i}")}))
            .await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.headers()["x-provider"], "openai");
    }
    assert_eq!(
        anthropic_calls(&app).await,
        3,
        "the primary saw only the calls that tripped it"
    );
    let (status, h) = app.health().await;
    assert_eq!(status, 200);
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["checks"]["providers"]["anthropic"]["circuit"], "open");
    assert_eq!(h["checks"]["providers"]["openai"]["circuit"], "closed");
}

#[tokio::test]
async fn a_hanging_primary_is_cut_at_the_attempt_timeout_and_the_fallback_answers_in_time() {
    let app = spawn_app_with(&with(&[
        ("SPARK_UPSTREAM_TIMEOUT", "300ms"),
        ("SPARK_REQUEST_DEADLINE", "3s"),
    ]))
    .await;
    Mock::given(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(anthropic_answer(UNITY_ANSWER))
                .set_delay(Duration::from_secs(10)),
        )
        .mount(&app.anthropic)
        .await;
    mount_ok(
        &app.openai,
        "/v1/chat/completions",
        openai_answer(UNITY_ANSWER),
    )
    .await;
    let started = Instant::now();
    let resp = app.post_generate(&json!({"prompt": "door"})).await;
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-provider"], "openai");
    assert!(
        took < Duration::from_secs(3),
        "within the deadline: {took:?}"
    );
    assert!(
        took >= Duration::from_millis(300),
        "after the attempt timeout: {took:?}"
    );
}

#[tokio::test]
async fn the_deadline_bounds_a_request_whose_only_provider_hangs() {
    let app = spawn_app_with(&with(&[
        ("SPARK_UPSTREAM_TIMEOUT", "500ms"),
        ("SPARK_REQUEST_DEADLINE", "500ms"),
    ]))
    .await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&app.anthropic)
        .await;
    let started = Instant::now();
    let resp = app
        .post_generate(&json!({"prompt": "door", "provider": "anthropic"}))
        .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_error(resp, 504, "upstream_timeout").await;
}

#[tokio::test]
async fn a_429_retry_waits_at_least_its_retry_after() {
    let app = spawn_app_with(&with(&[("SPARK_RETRY_ATTEMPTS", "2")])).await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&app.anthropic)
        .await;
    mount_ok(
        &app.anthropic,
        "/v1/messages",
        anthropic_answer(UNITY_ANSWER),
    )
    .await;
    let started = Instant::now();
    let resp = app
        .post_generate(&json!({"prompt": "door", "provider": "anthropic"}))
        .await;
    let took = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(anthropic_calls(&app).await, 2);
    assert!(took >= Duration::from_secs(1), "retried after {took:?}");
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_fails_at_once_instead_of_retrying() {
    let app = spawn_app_with(&with(&[
        ("SPARK_RETRY_ATTEMPTS", "3"),
        ("SPARK_UPSTREAM_TIMEOUT", "500ms"),
        ("SPARK_REQUEST_DEADLINE", "800ms"),
    ]))
    .await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .mount(&app.anthropic)
        .await;
    let started = Instant::now();
    let resp = app
        .post_generate(&json!({"prompt": "door", "provider": "anthropic"}))
        .await;
    let took = started.elapsed();
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_error(resp, 502, "upstream_error").await;
    assert_eq!(anthropic_calls(&app).await, 1, "no retry");
    assert!(
        took < Duration::from_millis(800),
        "answered promptly: {took:?}"
    );
}

#[tokio::test]
async fn with_every_circuit_open_the_answer_is_503_with_the_time_to_the_first_probe() {
    let app = spawn_app_with(&with(&[("SPARK_BREAKER_OPEN", "2s")])).await;
    for server in [&app.anthropic, &app.openai] {
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(500))
            .mount(server)
            .await;
    }
    for i in 0..3 {
        let resp = app
            .post_generate(&json!({"prompt": format!("door {i}")}))
            .await;
        assert_error(resp, 502, "upstream_error").await;
    }
    let resp = app.post_generate(&json!({"prompt": "door 4"})).await;
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = assert_error(resp, 503, "providers_unavailable").await;
    let ms = body["error"]["details"]["retryAfterMs"].as_u64().unwrap();
    assert!((1..=2000).contains(&ms), "{ms}");
    assert_eq!(
        retry_after,
        ms.div_ceil(1000),
        "Retry-After is the wait rounded up"
    );

    let (status, h) = app.health().await;
    assert_eq!((status, h["status"].as_str()), (503, Some("unhealthy")));
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn a_hundred_identical_concurrent_requests_make_one_upstream_call() {
    let app = spawn_app_with(&[("SPARK_CACHE_TTL", "1h")]).await;
    Mock::given(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(anthropic_answer(UNITY_ANSWER))
                .set_delay(Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&app.anthropic)
        .await;
    let body = json!({"prompt": "an automatic door", "engine": "unity"});
    let responses = join_all((0..100).map(|_| app.post_generate(&body))).await;
    let mut caches = Vec::new();
    let mut answers = Vec::new();
    for r in responses {
        assert_eq!(r.status(), 200);
        caches.push(r.headers()["x-cache"].to_str().unwrap().to_owned());
        let v: Value = r.json().await.unwrap();
        answers.push((v["id"].clone(), v["code"].clone(), v["scriptName"].clone()));
    }
    assert_eq!(anthropic_calls(&app).await, 1);
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "identical answers"
    );
    assert_eq!(caches.iter().filter(|c| *c == "MISS").count(), 1);
    assert_eq!(caches.iter().filter(|c| *c == "HIT").count(), 99);
}

#[tokio::test]
async fn an_upstream_400_does_not_move_the_breaker() {
    let app = spawn_app_with(&with(&[])).await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}),
        ))
        .mount(&app.anthropic)
        .await;
    for i in 0..6 {
        let resp = app
            .post_generate(&json!({"prompt": format!("door {i}"), "provider": "anthropic"}))
            .await;
        assert_error(resp, 502, "upstream_error").await;
    }
    assert_eq!(anthropic_calls(&app).await, 6, "never short-circuited");
    let (_, h) = app.health().await;
    let a = &h["checks"]["providers"]["anthropic"];
    assert_eq!(a["circuit"], "closed");
    assert_eq!(a["consecutiveFailures"], 0);
}

#[tokio::test]
async fn a_cached_answer_is_a_hit_without_upstream_and_no_cache_bypasses() {
    let app = spawn_app_with(&[("SPARK_CACHE_TTL", "1h")]).await;
    mount_ok(
        &app.anthropic,
        "/v1/messages",
        anthropic_answer(UNITY_ANSWER),
    )
    .await;
    let body = json!({"prompt": "an automatic door"});

    let first = app.post_generate(&body).await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["cached"], false);

    let second = app.post_generate(&body).await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["cached"], true);
    assert_eq!(second["code"], first["code"]);
    assert_eq!(
        anthropic_calls(&app).await,
        1,
        "the hit touched no upstream"
    );

    let bypass = app
        .client
        .post(app.url("/api/spark/generate"))
        .header("x-api-key", ALICE_KEY)
        .header("cache-control", "no-cache")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(bypass.headers()["x-cache"], "BYPASS");
    assert_eq!(anthropic_calls(&app).await, 2);

    let m = app.metrics().await;
    for (result, n) in [("hit", 1), ("miss", 1), ("bypass", 1)] {
        let line = format!("spark_cache_requests_total{{result=\"{result}\"}} {n}");
        assert!(m.contains(&line), "{line}");
    }
}

#[tokio::test]
async fn admin_endpoints_reset_a_breaker_and_purge_the_cache_with_the_master_key_only() {
    let app = spawn_app_with(&with(&[("SPARK_CACHE_TTL", "1h")])).await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.anthropic)
        .await;
    mount_ok(
        &app.openai,
        "/v1/chat/completions",
        openai_answer(UNITY_ANSWER),
    )
    .await;
    for i in 0..3 {
        app.post_generate(&json!({"prompt": format!("door {i}")}))
            .await;
    }
    assert_eq!(
        app.health().await.1["checks"]["providers"]["anthropic"]["circuit"],
        "open"
    );

    let as_user = app
        .client
        .post(app.url("/api/admin/breakers/anthropic/reset"))
        .header("x-api-key", ALICE_KEY)
        .send()
        .await
        .unwrap();
    assert_error(as_user, 403, "forbidden").await;

    let reset = app
        .client
        .post(app.url("/api/admin/breakers/anthropic/reset"))
        .header("x-api-key", MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(
        app.health().await.1["checks"]["providers"]["anthropic"]["circuit"],
        "closed"
    );

    let purge = app
        .client
        .post(app.url("/api/admin/cache/purge"))
        .header("x-api-key", MASTER_KEY)
        .send()
        .await
        .unwrap();
    let purged: Value = purge.json().await.unwrap();
    assert_eq!(purged["purged"], 3);
    assert_eq!(app.health().await.1["checks"]["cache"]["entries"], 0);

    let unknown = app
        .client
        .post(app.url("/api/admin/breakers/mistral/reset"))
        .header("x-api-key", MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_error(unknown, 400, "invalid_request").await;
}

/// Issue 16, finding 4: with Anthropic answering 401 on every call and OpenAI healthy, every
/// `auto` request is answered by OpenAI, and health shows Anthropic misconfigured.
#[tokio::test]
async fn a_revoked_provider_key_falls_back_on_every_request_and_health_says_so() {
    let app = spawn_app_with(&with(&[])).await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"}
        })))
        .mount(&app.anthropic)
        .await;
    mount_ok(
        &app.openai,
        "/v1/chat/completions",
        openai_answer(UNITY_ANSWER),
    )
    .await;
    for i in 0..7 {
        let resp = app
            .post_generate(&json!({"prompt": format!("door {i}")}))
            .await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.headers()["x-provider"], "openai");
    }
    let (status, h) = app.health().await;
    assert_eq!(status, 200);
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["checks"]["providers"]["anthropic"]["misconfigured"], true);
    assert!(
        app.metrics()
            .await
            .contains("spark_provider_misconfigured{provider=\"anthropic\"} 1")
    );
}
