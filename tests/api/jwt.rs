//! Bearer JWTs from identity providers (issue 18): a local OpenID provider (discovery document
//! and JWKS served by the test on 127.0.0.1, keys generated here) in front of the real router.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::helpers::{
    ALICE_KEY, MASTER_KEY, TestApp, anthropic_answer, assert_error, spawn_app_with,
};

const AUDIENCE: &str = "spark-editor";
const LMS_SECRET: &str = "lms-shared-secret-0123456789-abcdefghij";

/// A signing key with its public JWK.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    enc: EncodingKey,
    jwk: Value,
    public_pem: String,
}

impl SigningKey {
    fn rsa(kid: &str) -> SigningKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        Self::from_pair(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
            &kp,
        )
    }

    fn ec(kid: &str) -> SigningKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Self::from_pair(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(&kp.serialize_der()),
            &kp,
        )
    }

    fn from_pair(kid: &str, alg: Algorithm, enc: EncodingKey, kp: &rcgen::KeyPair) -> SigningKey {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap();
        jwk["kid"] = kid.into();
        jwk["use"] = "sig".into();
        SigningKey {
            kid: kid.to_owned(),
            alg,
            enc,
            jwk,
            public_pem: kp.public_key_pem(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, claims, &self.enc).unwrap()
    }
}

/// The test's identity provider.
#[derive(Clone)]
struct Idp {
    issuer: String,
    keys: Arc<Mutex<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    server: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

async fn discovery(State(idp): State<Idp>) -> Response {
    if idp.down.load(Ordering::SeqCst) {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(json!({
        "issuer": idp.issuer,
        "jwks_uri": format!("{}/keys", idp.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
    .into_response()
}

async fn jwks(State(idp): State<Idp>) -> Response {
    idp.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    if idp.down.load(Ordering::SeqCst) {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys = idp.keys.lock().unwrap().clone();
    (
        [("cache-control", "public, max-age=3600")],
        axum::Json(json!({ "keys": keys })),
    )
        .into_response()
}

impl Idp {
    async fn start(keys: &[&SigningKey]) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let idp = Idp {
            issuer,
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
            jwks_fetches: Arc::new(AtomicUsize::new(0)),
            down: Arc::new(AtomicBool::new(false)),
            server: Arc::new(Mutex::new(None)),
        };
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(discovery),
            )
            .route("/keys", axum::routing::get(jwks))
            .with_state(idp.clone());
        let handle = spark_gateway::telemetry::spawn_named("test-idp", async move {
            let _ = axum::serve(listener, app).await;
        });
        *idp.server.lock().unwrap() = Some(handle);
        idp
    }

    /// An issuer at an address where nothing listens.
    async fn nowhere() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Stops the provider: no new connection is accepted and open ones get 503.
    fn stop(&self) {
        self.down.store(true, Ordering::SeqCst);
        if let Some(h) = self.server.lock().unwrap().take() {
            h.abort();
        }
    }

    fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }
}

fn issuers_file(text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("spark-jwt-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("issuers.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn oidc_issuer(issuer: &str) -> String {
    format!(
        r#"
[[issuer]]
issuer = "{issuer}"
audiences = ["{AUDIENCE}"]
user_claim = "email"
groups_claim = "groups"
admin_groups = ["spark-admins"]
"#
    )
}

fn lms_issuer() -> String {
    r#"
[[issuer]]
issuer = "https://lms.example.edu"
audiences = ["spark"]
hs256_secret_env = "LMS_SSO_SECRET"
groups_claim = "roles"
[issuer.tiers.students]
rate_limit = "2/min"
budget = { limit_usd = 5.0, period = "month" }
[issuer.tiers.teachers]
rate_limit = "1000/min"
"#
    .to_owned()
}

async fn gateway(issuers: &str, extra: &[(&str, &str)]) -> TestApp {
    let file = issuers_file(issuers);
    let mut overrides = vec![
        ("SPARK_AUTH_ISSUERS_FILE", file.as_str()),
        ("LMS_SSO_SECRET", LMS_SECRET),
    ];
    overrides.extend_from_slice(extra);
    let app = spawn_app_with(&overrides).await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(anthropic_answer("ok")))
        .mount(&app.anthropic)
        .await;
    app
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims(issuer: &str, user: &str) -> Value {
    json!({"iss": issuer, "aud": AUDIENCE, "email": user, "sub": "s-1",
           "groups": ["artists"], "iat": now(), "exp": now() + 600})
}

async fn generate(app: &TestApp, bearer: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/spark/generate"))
        .bearer_auth(bearer)
        .json(&json!({"prompt": "a door that opens", "engine": "unity"}))
        .send()
        .await
        .unwrap()
}

/// Waits until the gateway's start-up fetch of the provider's keys has happened.
async fn until_fetched(idp: &Idp, n: usize) {
    for _ in 0..200 {
        if idp.fetches() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway never fetched the JWKS");
}

#[tokio::test]
async fn rs256_and_es256_tokens_pass_and_every_bad_token_is_401() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let idp = Idp::start(&[&rsa, &ec]).await;
    let app = gateway(
        &oidc_issuer(&idp.issuer),
        &[("SPARK_AUTH_FAILURES_PER_MIN", "0")],
    )
    .await;

    let ok = claims(&idp.issuer, "ana@studio.test");
    for token in [rsa.sign(&ok), ec.sign(&ok)] {
        let resp = generate(&app, &token).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    // The /v1 key slot takes a token too.
    let resp = app
        .chat(
            &ec.sign(&ok),
            &json!({"model": "spark-auto", "messages": [{"role": "user", "content": "a door"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&idp.issuer, "ana@studio.test");
        f(&mut c);
        c
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let good = rsa.sign(&ok);
    let parts: Vec<&str> = good.split('.').collect();
    let admin_body = b64.encode(with(&|c| c["groups"] = json!(["spark-admins"])).to_string());
    let none_header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let hs_header = Header {
        kid: Some("rsa-1".into()),
        ..Header::new(Algorithm::HS256)
    };
    let bad: Vec<(&str, String)> = vec![
        (
            "wrong audience",
            rsa.sign(&with(&|c| c["aud"] = "another-app".into())),
        ),
        (
            "wrong issuer",
            rsa.sign(&with(&|c| c["iss"] = "https://evil.example".into())),
        ),
        (
            "expired",
            rsa.sign(&with(&|c| c["exp"] = (now() - 120).into())),
        ),
        (
            "not yet valid",
            ec.sign(&with(&|c| c["nbf"] = (now() + 300).into())),
        ),
        (
            "tampered",
            format!("{}.{admin_body}.{}", parts[0], parts[2]),
        ),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        (
            "HS256 keyed with the public key",
            jsonwebtoken::encode(
                &hs_header,
                &ok,
                &EncodingKey::from_secret(rsa.public_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        ),
        (
            "over 8 KiB",
            rsa.sign(&with(&|c| c["pad"] = "x".repeat(9_000).into())),
        ),
    ];
    for (what, token) in bad {
        let resp = generate(&app, &token).await;
        assert_eq!(resp.status(), 401, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        assert_eq!(
            body["error"]["message"], "Missing or invalid API key.",
            "{what}: no reason leaks"
        );
    }
    // API keys work as before beside tokens.
    let resp = app
        .client
        .post(app.url("/api/spark/generate"))
        .header("x-api-key", ALICE_KEY)
        .json(&json!({"prompt": "a door that opens", "engine": "unity"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let m = app.metrics().await;
    let line = format!(
        "spark_jwks_refresh_total{{issuer=\"{}\",result=\"ok\"}} 1",
        idp.issuer
    );
    assert!(m.contains(&line), "{line} missing");
}

#[tokio::test]
async fn rotation_is_picked_up_and_forged_kids_cause_at_most_one_fetch_per_30s() {
    let old = SigningKey::ec("2026-11");
    let idp = Idp::start(&[&old]).await;
    let app = gateway(
        &oidc_issuer(&idp.issuer),
        &[("SPARK_AUTH_FAILURES_PER_MIN", "0")],
    )
    .await;
    until_fetched(&idp, 1).await;
    let warmed = std::time::Instant::now();
    assert_eq!(
        generate(&app, &old.sign(&claims(&idp.issuer, "ana@x.test")))
            .await
            .status(),
        200
    );
    let forge = |n: usize| {
        (0..n)
            .map(|i| {
                old.sign_as(
                    &format!("forged-{i}-{}", uuid::Uuid::new_v4()),
                    &claims(&idp.issuer, "eve@x.test"),
                )
            })
            .collect::<Vec<_>>()
    };
    for token in forge(1_000) {
        assert_eq!(generate(&app, &token).await.status(), 401);
    }
    assert_eq!(
        idp.fetches(),
        1,
        "no fetch inside the 30 s after the last one"
    );

    // The provider rotates: the new key is published and new tokens are signed with it.
    let new = SigningKey::rsa("2026-12");
    idp.publish(&[&old, &new]);
    let wait = Duration::from_secs(31).saturating_sub(warmed.elapsed());
    tokio::time::sleep(wait).await;
    let resp = generate(&app, &new.sign(&claims(&idp.issuer, "ana@x.test"))).await;
    assert_eq!(
        resp.status(),
        200,
        "the new kid is fetched without a restart"
    );
    assert_eq!(idp.fetches(), 2);
    for token in forge(1_000) {
        assert_eq!(generate(&app, &token).await.status(), 401);
    }
    assert_eq!(
        idp.fetches(),
        2,
        "forged kids after the rotation fetch nothing either"
    );
}

#[tokio::test]
async fn tokens_keep_working_when_the_provider_stops_after_warm_up() {
    let key = SigningKey::rsa("k");
    let idp = Idp::start(&[&key]).await;
    let app = gateway(&oidc_issuer(&idp.issuer), &[]).await;
    assert_eq!(
        generate(&app, &key.sign(&claims(&idp.issuer, "ana@x.test")))
            .await
            .status(),
        200
    );
    idp.stop();
    for user in ["ana@x.test", "ben@x.test"] {
        let resp = generate(&app, &key.sign(&claims(&idp.issuer, user))).await;
        assert_eq!(resp.status(), 200, "{user}");
    }
    // Keys in hand: the issuer counts as ready and health stays healthy.
    let (_, health) = app.health().await;
    assert_eq!(
        health["checks"]["identityProviders"],
        json!({"issuers": 1, "withKeys": 1})
    );
    assert_eq!(health["status"], "healthy", "{health}");
}

#[tokio::test]
async fn a_cold_start_with_the_provider_down_is_503_for_tokens_and_api_keys_still_work() {
    let issuer = Idp::nowhere().await;
    let app = gateway(&oidc_issuer(&issuer), &[]).await;
    let key = SigningKey::ec("k");
    let resp = generate(&app, &key.sign(&claims(&issuer, "ana@x.test"))).await;
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_error(resp, 503, "auth_unavailable").await;
    let resp = app
        .post_generate(&json!({"prompt": "a door", "engine": "unity"}))
        .await;
    assert_eq!(resp.status(), 200);
    let m = app.metrics().await;
    assert!(m.contains("spark_auth_unavailable_total 1"), "{m}");
    assert!(m.contains(&format!(
        "spark_jwks_refresh_total{{issuer=\"{issuer}\",result=\"error\"}}"
    )));
    // Health names the issuer without keys and says degraded, not unhealthy: API keys serve.
    let (code, health) = app.health().await;
    assert_eq!(code, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        health["checks"]["identityProviders"],
        json!({"issuers": 1, "withKeys": 0})
    );
}

fn lms_token(user: &str, roles: &[&str]) -> String {
    let claims = json!({"iss": "https://lms.example.edu", "aud": "spark", "sub": user,
                        "roles": roles, "iat": now(), "exp": now() + 600});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(LMS_SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_shared_secret_issuer_gives_its_users_their_groups_tier() {
    let app = gateway(&lms_issuer(), &[("SPARK_RATE_LIMIT_GENERATE", "100/min")]).await;
    let student = lms_token("student-17", &["students"]);
    for _ in 0..2 {
        let resp = generate(&app, &student).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "2", "the tier's quota");
    }
    let resp = generate(&app, &student).await;
    assert_eq!(resp.status(), 429);
    // The tier's budget applies to its members: it is reported on their responses.
    let teacher = lms_token("teacher-3", &["teachers"]);
    let resp = generate(&app, &teacher).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "1000");
    assert!(
        resp.headers().get("x-spark-budget-remaining").is_none(),
        "teachers have no budget"
    );
    // A member of no tier gets the route's quota.
    let guest = lms_token("guest-1", &[]);
    let resp = generate(&app, &guest).await;
    assert_eq!(resp.headers()["x-ratelimit-limit"], "100");
    // A different secret is not the LMS.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": "https://lms.example.edu", "aud": "spark", "sub": "x", "exp": now() + 60}),
        &EncodingKey::from_secret(b"not-the-lms-secret-0123456789-abcdef").unwrap(),
    )
    .unwrap();
    assert_eq!(generate(&app, &forged).await.status(), 401);
}

#[tokio::test]
async fn the_tokens_user_is_the_caller_for_usage_budget_and_the_admin_api() {
    let key = SigningKey::ec("k");
    let idp = Idp::start(&[&key]).await;
    let app = gateway(
        &format!("{}{}", oidc_issuer(&idp.issuer), lms_issuer()),
        &[],
    )
    .await;
    // The student's tier budget shows on their responses once spent from.
    let student = lms_token("student-42", &["students"]);
    let resp = generate(&app, &student).await;
    assert_eq!(resp.status(), 200);
    let resp = generate(&app, &student).await;
    let left: f64 = resp.headers()["x-spark-budget-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left > 0.0 && left <= 5.0, "{left}");

    // The ledger rows belong to the signed-in user, who sees only their own usage (rows are
    // written by the batch writer within about a second).
    let mut text = String::new();
    for _ in 0..100 {
        let resp = app
            .client
            .get(app.url("/api/usage?groupBy=user"))
            .bearer_auth(&student)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let usage: Value = resp.json().await.unwrap();
        text = usage.to_string();
        if usage["totals"]["requests"].as_i64() == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.contains("student-42") && text.contains("\"requests\":2"),
        "{text}"
    );

    // A member of an admin group reaches the admin API, and the audit trail names them.
    let admin = key.sign(
        &json!({"iss": idp.issuer, "aud": AUDIENCE, "email": "lead@studio.test",
        "groups": ["spark-admins"], "exp": now() + 600}),
    );
    let resp = app
        .client
        .post(app.url("/api/admin/keys"))
        .bearer_auth(&admin)
        .json(&json!({"userId": "tool_bot", "name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let audit = app.get_json("/api/admin/audit", MASTER_KEY).await;
    let actors: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert!(actors.contains(&"lead@studio.test"), "{audit}");
    // Everyone else is not an administrator.
    let artist = key.sign(&claims(&idp.issuer, "ana@studio.test"));
    let resp = app
        .client
        .get(app.url("/api/admin/keys"))
        .bearer_auth(&artist)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}
