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

#[tokio::test]
async fn a_rotated_key_file_takes_effect_within_a_second_without_failing_other_keys() {
    let dir = std::env::temp_dir().join(format!("spark-keys-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    const OLD: &str = "user-alice-oldsecret0123456789ab";
    const NEW: &str = "user-alice-newsecret0123456789ab";
    std::fs::write(&file, format!("# rotated by the test\n{OLD}\n{BOB_KEY}\n")).unwrap();
    let path = file.to_str().unwrap().to_owned();
    let app = spawn_app_with(&[
        ("SPARK_API_KEYS", ""),
        ("SPARK_API_KEYS_FILE", path.as_str()),
    ])
    .await;
    assert_eq!(
        generate_with(&app, &[("x-api-key", OLD)]).await.status(),
        200
    );
    assert_eq!(
        generate_with(&app, &[("x-api-key", NEW)]).await.status(),
        401
    );

    // Bob keeps calling throughout the rotation.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = std::sync::Arc::clone(&stop);
        let client = app.client.clone();
        let url = app.url("/api/spark/generate");
        spark_gateway::telemetry::spawn_named("test-request", async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = client
                    .post(&url)
                    .header("x-api-key", BOB_KEY)
                    .json(&json!({"prompt": "a door", "provider": "simulator"}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                if status == 200 {
                    ok += 1
                } else {
                    failed += 1
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Write the new file beside the old one and rename it into place, as a secret update does.
    let staged = dir.join("keys.new");
    std::fs::write(&staged, format!("{NEW}\n{BOB_KEY}\n")).unwrap();
    std::fs::rename(&staged, &file).unwrap();
    let rotated = std::time::Instant::now();
    let mut switched = None;
    while rotated.elapsed() < std::time::Duration::from_secs(1) {
        let old = generate_with(&app, &[("x-api-key", OLD)]).await.status();
        let new = generate_with(&app, &[("x-api-key", NEW)]).await.status();
        if old == 401 && new == 200 {
            switched = Some(rotated.elapsed());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.await.unwrap();
    assert!(
        switched.is_some(),
        "the rotation did not take effect within a second"
    );
    assert_eq!(failed, 0, "no request of another key failed");
    assert!(ok > 10, "bob's traffic ran: {ok}");

    // A malformed file is refused and the keys in force stay.
    std::fs::write(&file, "not-a-key\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        generate_with(&app, &[("x-api-key", NEW)]).await.status(),
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
