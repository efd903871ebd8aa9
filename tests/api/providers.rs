//! The provider clients against wiremock upstreams speaking the real wire formats.

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn anthropic_request_is_sent_field_by_field_and_the_answer_parsed() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", ANTHROPIC_KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_answer(UNITY_ANSWER)))
        .expect(1)
        .mount(&app.anthropic)
        .await;

    let resp = app
        .post_generate(&json!({
            "prompt": "Create an automatic door",
            "engine": "unity",
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
            "maxTokens": 1500,
            "temperature": 0.3
        }))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-provider"], "anthropic");
    let body: Value = resp.json().await.unwrap();

    let requests = app.anthropic.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(requests[0].headers["content-type"], "application/json");
    assert_eq!(sent["model"], "claude-haiku-4-5");
    assert_eq!(sent["max_tokens"], 1500);
    assert!((sent["temperature"].as_f64().unwrap() - 0.3).abs() < 1e-6);
    assert_eq!(sent["stream"], false);
    assert!(sent["system"].as_str().unwrap().contains("Unity"));
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Create an automatic door"}])
    );

    assert_eq!(body["provider"], "anthropic");
    assert_eq!(body["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(body["engine"], "unity");
    assert_eq!(body["language"], "csharp");
    assert_eq!(
        body["code"],
        "using UnityEngine;\n\npublic class AutoDoor : MonoBehaviour\n{\n    [SerializeField] private float openAngle = 90f;\n}"
    );
    assert_eq!(body["scriptName"], "AutoDoor");
    assert_eq!(body["fileName"], "AutoDoor.cs");
    assert_eq!(
        body["usage"],
        json!({"inputTokens": 321, "outputTokens": 654})
    );
    assert_eq!(body["cached"], false);
}

#[tokio::test]
async fn openai_request_is_sent_field_by_field_and_the_answer_parsed() {
    let app = spawn_app().await;
    let answer =
        "```gdscript\nextends Node2D\nclass_name Spawner\n\n@export var rate: float = 1.0\n```";
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header(
            "authorization",
            format!("Bearer {OPENAI_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer(answer)))
        .expect(1)
        .mount(&app.openai)
        .await;

    let resp = app
        .post_generate(&json!({
            "prompt": "An enemy spawner",
            "engine": "godot",
            "provider": "openai",
            "maxTokens": 900,
            "temperature": 0.0
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();

    let requests = app.openai.received_requests().await.unwrap();
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(sent["model"], "gpt-4.1"); // the first model of the allow-list is the default
    assert_eq!(sent["max_tokens"], 900);
    assert_eq!(sent["temperature"], 0.0);
    assert_eq!(sent["stream"], false);
    assert_eq!(sent["messages"][0]["role"], "system");
    assert!(
        sent["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("Godot")
    );
    assert_eq!(
        sent["messages"][1],
        json!({"role": "user", "content": "An enemy spawner"})
    );

    assert_eq!(body["provider"], "openai");
    assert_eq!(
        body["code"],
        "extends Node2D\nclass_name Spawner\n\n@export var rate: float = 1.0"
    );
    assert_eq!(body["scriptName"], "Spawner");
    assert_eq!(body["fileName"], "spawner.gd");
    assert_eq!(
        body["usage"],
        json!({"inputTokens": 111, "outputTokens": 222})
    );
}

#[tokio::test]
async fn auto_falls_back_to_the_next_provider_on_a_retryable_failure() {
    let app = spawn_app().await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(529).set_body_json(
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ))
        .expect(1)
        .mount(&app.anthropic)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer(UNITY_ANSWER)))
        .expect(1)
        .mount(&app.openai)
        .await;
    let resp = app.post_generate(&json!({"prompt": "a door"})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-provider"], "openai");
}

/// Each failure, with provider pinned so no fallback hides it: status, kind, and that nothing of
/// the upstream body or our keys reaches the client.
#[tokio::test]
async fn every_upstream_failure_maps_to_a_defined_error_without_leaking() {
    const LEAK: &str = "UPSTREAM-SECRET-DETAIL";
    let cases: Vec<(ResponseTemplate, Option<u16>, &str, Option<&str>)> = vec![
        (
            ResponseTemplate::new(400).set_body_json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": LEAK}})),
            Some(400), "bad_request", None,
        ),
        (
            ResponseTemplate::new(401).set_body_json(json!({"type": "error", "error": {"type": "authentication_error", "message": LEAK}})),
            Some(401), "auth", None,
        ),
        (
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(json!({"type": "error", "error": {"type": "rate_limit_error", "message": LEAK}})),
            Some(429), "rate_limited", Some("7"),
        ),
        (ResponseTemplate::new(500).set_body_string(LEAK), Some(500), "server_error", None),
        (
            ResponseTemplate::new(529).set_body_json(json!({"type": "error", "error": {"type": "overloaded_error", "message": LEAK}})),
            Some(529), "overloaded", None,
        ),
        (
            ResponseTemplate::new(200).set_body_raw(format!("{{\"content\": \"{LEAK}"), "application/json"),
            None, "malformed", None,
        ),
    ];
    for (template, upstream_status, kind, retry_after) in cases {
        let app = spawn_app().await;
        Mock::given(path("/v1/messages"))
            .respond_with(template)
            .mount(&app.anthropic)
            .await;
        let resp = app
            .post_generate(&json!({"prompt": "a door", "provider": "anthropic"}))
            .await;
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after,
            "{kind}"
        );
        let body = assert_error(resp, 502, "upstream_error").await;
        assert_eq!(body["error"]["details"]["provider"], "anthropic");
        assert_eq!(body["error"]["details"]["kind"], kind);
        assert_eq!(
            body["error"]["details"]["upstreamStatus"].as_u64(),
            upstream_status.map(u64::from),
            "{kind}"
        );
        let text = body.to_string();
        assert!(!text.contains(LEAK), "{kind}: {text}");
        assert!(!text.contains(ANTHROPIC_KEY), "{kind}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let app = spawn_app_with(&[("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")]).await;
    let resp = app
        .post_generate(&json!({"prompt": "a door", "provider": "anthropic"}))
        .await;
    let body = assert_error(resp, 502, "upstream_error").await;
    assert_eq!(body["error"]["details"]["kind"], "connect");
    assert!(body["error"]["details"]["upstreamStatus"].is_null());
}

#[tokio::test]
async fn a_caller_error_upstream_does_not_fall_back() {
    let app = spawn_app().await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}),
        ))
        .expect(1)
        .mount(&app.anthropic)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer(UNITY_ANSWER)))
        .expect(0)
        .mount(&app.openai)
        .await;
    let resp = app.post_generate(&json!({"prompt": "a door"})).await;
    assert_error(resp, 502, "upstream_error").await;
}

#[tokio::test]
async fn a_model_routes_auto_requests_to_the_provider_that_allows_it() {
    let app = spawn_app().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer(UNITY_ANSWER)))
        .expect(1)
        .mount(&app.openai)
        .await;
    let resp = app
        .post_generate(&json!({"prompt": "a door", "model": "gpt-4o-mini"}))
        .await;
    assert_eq!(resp.status(), 200);
    let sent: Value =
        serde_json::from_slice(&app.openai.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn the_simulator_serves_with_no_provider_keys() {
    let app = spawn_app_with(&[
        ("ANTHROPIC_API_KEY", ""),
        ("OPENAI_API_KEY", ""),
        ("SPARK_PROVIDER_ORDER", ""),
    ])
    .await;
    let resp = app
        .post_generate(&json!({"prompt": "Create a Unity player controller", "engine": "unity"}))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["provider"], "simulator");
    assert_eq!(body["scriptName"], "PlayerController");
    assert_eq!(body["fileName"], "PlayerController.cs");
    assert!(
        body["code"]
            .as_str()
            .unwrap()
            .contains("class PlayerController : MonoBehaviour")
    );
}
