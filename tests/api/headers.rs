//! Security headers and `X-Request-Id` on every kind of response.

use serde_json::json;
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

fn assert_common_headers(resp: &reqwest::Response, what: &str) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            resp.headers().get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{what}: {name}"
        );
    }
    let id = resp.headers().get("x-request-id").expect("x-request-id");
    assert!(!id.is_empty(), "{what}");
}

#[tokio::test]
async fn a_200_a_4xx_and_a_5xx_all_carry_security_headers_and_a_request_id() {
    let app = spawn_app().await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.anthropic)
        .await;

    let ok = app
        .post_generate(&json!({"prompt": "a door", "provider": "simulator"}))
        .await;
    assert_eq!(ok.status(), 200);
    assert_common_headers(&ok, "200");
    // Plain HTTP: no HSTS, unless a proxy in front says the client used HTTPS.
    assert!(ok.headers().get("strict-transport-security").is_none());
    let proxied = app
        .client
        .get(app.url("/livez"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(
        proxied.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );

    let unauthorized = app
        .client
        .post(app.url("/api/spark/generate"))
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_common_headers(&unauthorized, "401");

    let bad = app.post_generate(&json!({"prompt": ""})).await;
    assert_eq!(bad.status(), 400);
    assert_common_headers(&bad, "400");

    let upstream = app
        .post_generate(&json!({"prompt": "a door", "provider": "anthropic"}))
        .await;
    assert_eq!(upstream.status(), 502);
    assert_common_headers(&upstream, "502");
}

#[tokio::test]
async fn a_valid_incoming_request_id_is_echoed_and_an_unsafe_one_replaced() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/livez"))
        .header("x-request-id", "client-id-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-id-123");

    let resp = app
        .client
        .get(app.url("/livez"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 36); // a UUID
}
