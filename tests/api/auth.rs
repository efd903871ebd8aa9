//! API keys: who gets in, and that refusals reveal nothing.

use serde_json::json;

use crate::helpers::*;

async fn generate_with(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/api/spark/generate"))
        .json(&json!({"prompt": "a door", "provider": "simulator"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn missing_and_wrong_keys_get_identical_401_bodies() {
    let app = spawn_app().await;
    let id = [("x-request-id", "same-id-for-both")];
    let missing = generate_with(&app, &id).await;
    let wrong = generate_with(
        &app,
        &[
            ("x-request-id", "same-id-for-both"),
            ("x-api-key", "user-alice-notthesecret000000"),
        ],
    )
    .await;
    let unknown_bearer = generate_with(
        &app,
        &[
            ("x-request-id", "same-id-for-both"),
            ("authorization", "Bearer sk-whatever"),
        ],
    )
    .await;
    assert_eq!(missing.status(), 401);
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown_bearer.status(), 401);
    let a = missing.bytes().await.unwrap();
    let b = wrong.bytes().await.unwrap();
    let c = unknown_bearer.bytes().await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn user_key_bearer_form_and_master_key_pass() {
    let app = spawn_app().await;
    for headers in [
        vec![("x-api-key", ALICE_KEY)],
        vec![("authorization", &*format!("Bearer {BOB_KEY}"))],
        vec![("x-api-key", MASTER_KEY)],
    ] {
        let resp = generate_with(&app, &headers).await;
        assert_eq!(resp.status(), 200, "{headers:?}");
    }
}

#[tokio::test]
async fn with_no_keys_configured_auth_is_off() {
    let app = spawn_app_with(&[("SPARK_MASTER_API_KEY", ""), ("SPARK_API_KEYS", "")]).await;
    let resp = generate_with(&app, &[]).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn probes_need_no_key() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/livez")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
