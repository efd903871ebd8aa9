//! Issue 15: the black-box findings of the security review, one test each (findings 1, 3, 4
//! and 5 are in `tests/binary.rs` and `cache_integrity.rs`).

use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

/// Finding 2: a 3xx from a provider is not followed, so the provider key never reaches the
/// redirect target; the client gets 502.
#[tokio::test]
async fn a_provider_redirect_is_not_followed_and_is_an_upstream_error() {
    let thief = MockServer::start().await;
    Mock::given(path("/steal"))
        .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_answer(UNITY_ANSWER)))
        .expect(0)
        .mount(&thief)
        .await;
    let app = spawn_app_with(&[("SPARK_PROVIDER_ORDER", "anthropic")]).await;
    Mock::given(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", format!("{}/steal", thief.uri())),
        )
        .mount(&app.anthropic)
        .await;
    let resp = app
        .post_generate(&json!({"prompt": "a door", "provider": "anthropic"}))
        .await;
    assert_error(resp, 502, "upstream_error").await;
    assert!(thief.received_requests().await.unwrap().is_empty());
}

/// Finding 6: values a caller sends in invalid fields are never stored by the error tracker.
#[tokio::test]
async fn the_error_list_holds_no_caller_supplied_text() {
    let app = spawn_app().await;
    let marker = "CALLER-MARKER-7f3a";
    for body in [
        json!({"prompt": "a door", "engine": marker}),
        json!({"prompt": "a door", "model": marker}),
        json!({"prompt": "a door", "provider": marker}),
    ] {
        assert_eq!(app.post_generate(&body).await.status(), 400);
    }
    let resp = app
        .client
        .post(app.url("/api/admin/breakers/CALLER-MARKER-7f3a/reset"))
        .header("x-api-key", MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let errors = app
        .client
        .get(app.url("/api/admin/errors"))
        .header("x-api-key", MASTER_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(errors.contains("invalid_request"), "{errors}");
    assert!(!errors.contains(marker), "{errors}");
}

/// Finding 7: 31 bad keys in a minute from one address → 429 with `Retry-After`, even for the
/// right key, while another address is unaffected.
#[tokio::test]
async fn an_address_guessing_keys_is_braked_with_429() {
    let app = spawn_app_with(&[("SPARK_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let from = |ip: &'static str, key: &'static str| {
        app.client
            .post(app.url("/api/spark/generate"))
            .header("x-forwarded-for", ip)
            .header("x-api-key", key)
            .json(&json!({"prompt": "a door", "provider": "simulator"}))
            .send()
    };
    for _ in 0..30 {
        assert_eq!(
            from("198.51.100.9", "user-alice-wrongwrongwrong0")
                .await
                .unwrap()
                .status(),
            401
        );
    }
    let braked = from("198.51.100.9", ALICE_KEY).await.unwrap();
    assert!(braked.headers().get("retry-after").is_some());
    assert_error(braked, 429, "rate_limited").await;
    assert_eq!(
        from("198.51.100.10", ALICE_KEY).await.unwrap().status(),
        200
    );
    assert!(app.metrics().await.contains("spark_auth_failures_total 30"));
}

/// Finding 8: CORS preflights are answered before auth for allowed origins only.
#[tokio::test]
async fn cors_preflight_is_allowed_for_listed_origins_and_refused_for_others() {
    let app = spawn_app_with(&[("SPARK_CORS_ORIGINS", "https://editor.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/spark/generate"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-api-key,content-type")
            .send()
    };
    let ok = preflight("https://editor.example.com").await.unwrap();
    assert_eq!(ok.status(), 200);
    let h = ok.headers();
    assert_eq!(
        h["access-control-allow-origin"],
        "https://editor.example.com"
    );
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for name in ["x-api-key", "authorization", "content-type", "x-request-id"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(h.get("access-control-allow-credentials").is_none());
    assert!(
        h.get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().to_lowercase().contains("origin"))
    );
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // An actual request from an allowed origin carries the header; auth still applies.
    let resp = app
        .client
        .post(app.url("/api/spark/generate"))
        .header("origin", "https://editor.example.com")
        .header("x-api-key", ALICE_KEY)
        .json(&json!({"prompt": "a door", "provider": "simulator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://editor.example.com"
    );
    // The page may read the headers the contract gives it, the budget's included.
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for name in [
        "x-request-id",
        "x-cache",
        "x-provider",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-spark-warnings",
        "x-spark-token-count",
        "x-spark-budget-remaining",
        "x-spark-budget-remaining-tokens",
        "retry-after",
        "content-disposition",
    ] {
        assert!(
            exposed.split(',').any(|n| n.trim() == name),
            "{name} not in {exposed}"
        );
    }
}

/// Finding 9: the contract's small print.
#[tokio::test]
async fn contract_gaps_are_closed() {
    let app = spawn_app().await;
    // 401 names the scheme.
    let resp = app
        .client
        .post(app.url("/api/spark/generate"))
        .json(&json!({"prompt": "a door"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"spark\"");
    assert_error(resp, 401, "unauthorized").await;
    // SSE is never stored.
    let sse = app
        .post_generate(&json!({"prompt": "a door", "provider": "simulator", "stream": true}))
        .await;
    assert_eq!(sse.headers()["cache-control"], "no-store");
    // Master-exempt responses carry no rate-limit headers (API.md says so).
    let master = app
        .post_generate_as(
            MASTER_KEY,
            &json!({"prompt": "a door", "provider": "simulator"}),
        )
        .await;
    assert_eq!(master.status(), 200);
    assert!(master.headers().get("x-ratelimit-limit").is_none());
    // Unknown /v1 paths answer in OpenAI's error shape.
    let resp = app
        .client
        .get(app.url("/v1/embeddings"))
        .bearer_auth(ALICE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"].get("requestId").is_none(), "{body}");
}

/// Issue 16, finding 2: made-up methods, random paths, many headers and odd bodies cannot mint
/// metric series: labels come from route templates and a fixed set of methods.
#[tokio::test]
async fn hostile_requests_do_not_grow_the_metric_series() {
    let app = spawn_app().await;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    // Warm the series a 404 adds for a standard and a made-up method (a histogram is 17 lines),
    // so that only a new label value could add lines below.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let _ = app.client.get(app.url("/nothing")).send().await.unwrap();
    let _ = app
        .client
        .request(brew, app.url("/nothing"))
        .send()
        .await
        .unwrap();
    let _ = app.metrics().await;
    let before = series(&app.metrics().await);
    let long_method = "M".repeat(8_000);
    for i in 0..100 {
        let method = if i % 10 == 0 {
            long_method.clone()
        } else {
            format!("BREW{i}")
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let _ = app
            .client
            .request(method, app.url(&format!("/api/spark/generate/{i}?q={i}")))
            .header(format!("x-hostile-{i}"), "v".repeat(i))
            .body(vec![b'x'; i * 100])
            .send()
            .await
            .unwrap();
        let _ = app
            .client
            .get(app.url(&format!("/random/{i}/path")))
            .send()
            .await
            .unwrap();
    }
    let after = series(&app.metrics().await);
    assert!(
        after == before,
        "{before} series before, {after} after 200 hostile requests"
    );
    assert!(app.metrics().await.contains("method=\"other\""));
}

/// Routes under `/v1` keep their templates as metric labels; unknown ones share one label.
#[tokio::test]
async fn v1_routes_are_labelled_by_template() {
    let app = spawn_app().await;
    for path in ["/v1/models", "/v1/unknown/1", "/v1/unknown/2"] {
        let _ = app
            .client
            .get(app.url(path))
            .bearer_auth(ALICE_KEY)
            .send()
            .await
            .unwrap();
    }
    let m = app.metrics().await;
    let routes: std::collections::BTreeSet<&str> = m
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    assert!(routes.contains("/v1/models"), "{routes:?}");
    assert!(!routes.iter().any(|r| r.contains("unknown")), "{routes:?}");
}
