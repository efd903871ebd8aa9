//! The verifier's rules, with keys made in the test and a fake JWKS fetcher (no network).

use super::*;
use async_trait::async_trait;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

struct StaticJwks(String);

#[async_trait]
impl Fetch for StaticJwks {
    async fn get(&self, _url: &str) -> Result<jwks::Fetched, String> {
        Ok(jwks::Fetched {
            body: self.0.clone().into_bytes(),
            max_age: None,
        })
    }
}

struct Ec {
    enc: EncodingKey,
    jwk: Value,
    public_pem: String,
}

fn ec_key(kid: &str) -> Ec {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let enc = EncodingKey::from_ec_der(&kp.serialize_der());
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = kid.into();
    Ec {
        enc,
        jwk,
        public_pem: kp.public_key_pem(),
    }
}

fn counter() -> IntCounterVec {
    IntCounterVec::new(
        prometheus::Opts::new("t_refresh", "t"),
        &["issuer", "result"],
    )
    .unwrap()
}

fn specs() -> Vec<IssuerSpec> {
    let text = r#"
[[issuer]]
issuer = "https://idp.test"
audiences = ["spark-app"]
jwks_url = "https://idp.test/jwks"
user_claim = "email"
groups_claim = "groups"
admin_groups = ["spark-admins"]
[issuer.tiers.leads]
rate_limit = "300/min"
[issuer.tiers.artists]
rate_limit = "30/min"
budget = { limit_usd = 20.0, period = "month" }

[[issuer]]
issuer = "https://lms.test"
audiences = ["spark"]
hs256_secret_env = "LMS"
groups_claim = "roles"
[issuer.tiers.students]
rate_limit = "5/min"
"#;
    spec::parse(text, false, &|n| (n == "LMS").then(|| SECRET.to_owned())).unwrap()
}

fn verifier(ec: &Ec) -> Verifier {
    let doc = json!({ "keys": [ec.jwk] }).to_string();
    Verifier::new(specs(), Arc::new(StaticJwks(doc)), counter()).unwrap()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn idp_claims() -> Value {
    json!({"iss": "https://idp.test", "aud": "spark-app", "email": "ana@studio.test",
           "groups": ["artists", "leads"], "iat": now(), "exp": now() + 600})
}

fn es256(ec: &Ec, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    encode(&h, claims, &ec.enc).unwrap()
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

fn lms_claims() -> Value {
    json!({"iss": "https://lms.test", "aud": "spark", "sub": 4711, "roles": "students",
           "exp": now() + 600})
}

#[tokio::test]
async fn a_valid_es256_token_names_its_user_first_tier_and_no_admin() {
    let ec = ec_key("k1");
    let v = verifier(&ec);
    let id = v.verify(&es256(&ec, "k1", &idp_claims())).await.unwrap();
    assert_eq!(id.user, "ana@studio.test");
    assert!(!id.admin);
    // In both groups: the tier written first in the file wins.
    assert_eq!(id.tier.as_deref().map(|t| t.group.as_str()), Some("leads"));
    let mut admin = idp_claims();
    admin["groups"] = json!(["spark-admins"]);
    let id = v.verify(&es256(&ec, "k1", &admin)).await.unwrap();
    assert!(id.admin);
    assert_eq!(id.tier, None);
}

#[tokio::test]
async fn the_hs256_issuer_accepts_its_secret_and_gives_the_groups_tier() {
    let v = verifier(&ec_key("k1"));
    let id = v
        .verify(&hs256(SECRET.as_bytes(), &lms_claims()))
        .await
        .unwrap();
    assert_eq!(id.user, "4711");
    assert_eq!(
        id.tier.as_deref().map(|t| t.group.as_str()),
        Some("students")
    );
    assert_eq!(
        id.tier.as_deref().and_then(|t| t.rate_limit),
        crate::ratelimit::Quota::parse("5/min")
    );
    let wrong = hs256(b"another-secret-that-is-32-bytes-long!!", &lms_claims());
    assert_eq!(
        v.verify(&wrong).await,
        Err(JwtError::Invalid("bad signature"))
    );
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused() {
    let ec = ec_key("k1");
    let v = verifier(&ec);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = idp_claims();
        f(&mut c);
        es256(&ec, "k1", &c)
    };
    let cases: Vec<(&str, String)> = vec![
        ("wrong audience", with(&|c| c["aud"] = "other-app".into())),
        (
            "wrong issuer",
            with(&|c| c["iss"] = "https://evil.test".into()),
        ),
        ("expired", with(&|c| c["exp"] = (now() - 61).into())),
        ("not yet valid", with(&|c| c["nbf"] = (now() + 120).into())),
        (
            "issued in the future",
            with(&|c| c["iat"] = (now() + 120).into()),
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "no aud",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        ("no user", with(&|c| c["email"] = json!(["a"]))),
        (
            "control chars in user",
            with(&|c| c["email"] = "ana\n@x".into()),
        ),
    ];
    for (what, token) in cases {
        assert!(
            matches!(v.verify(&token).await, Err(JwtError::Invalid(_))),
            "{what} was accepted"
        );
    }
    // Inside the leeway still passes.
    assert!(
        v.verify(&with(&|c| c["exp"] = (now() - 30).into()))
            .await
            .is_ok()
    );
    assert!(
        v.verify(&with(&|c| c["nbf"] = (now() + 30).into()))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn tampering_alg_none_and_key_confusion_are_refused() {
    let ec = ec_key("k1");
    let v = verifier(&ec);
    let token = es256(&ec, "k1", &idp_claims());
    // A changed payload under the old signature.
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims = idp_claims();
    claims["groups"] = json!(["spark-admins"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        v.verify(&forged).await,
        Err(JwtError::Invalid("bad signature"))
    );
    // alg: none, with and without a signature.
    let none = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = b64.encode(idp_claims().to_string());
    assert!(v.verify(&format!("{none}.{body}.")).await.is_err());
    assert!(
        v.verify(&format!("{none}.{body}.{}", parts[2]))
            .await
            .is_err()
    );
    // HS256 keyed with the issuer's published public key: the issuer takes no HS256.
    let confused = hs256(ec.public_pem.as_bytes(), &idp_claims());
    assert_eq!(
        v.verify(&confused).await,
        Err(JwtError::Invalid("algorithm not allowed for this issuer"))
    );
    // And the HS256 issuer takes nothing else.
    let mut lms = lms_claims();
    lms["aud"] = "spark".into();
    let other = es256(&ec, "k1", &lms);
    assert!(v.verify(&other).await.is_err());
    // An unknown kid on a warm set is refused without a fetch storm (see jwks tests).
    assert_eq!(
        v.verify(&es256(&ec, "nope", &idp_claims())).await,
        Err(JwtError::Invalid("unknown key"))
    );
}

#[tokio::test]
async fn oversized_and_malformed_tokens_are_refused_unread() {
    let v = verifier(&ec_key("k1"));
    let long = format!("eyJ{}.a.b", "A".repeat(MAX_TOKEN_BYTES));
    assert_eq!(
        v.verify(&long).await,
        Err(JwtError::Invalid("token too long"))
    );
    for junk in [
        "",
        "a.b",
        "eyJ.eyJ.",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
    ] {
        assert!(v.verify(junk).await.is_err(), "{junk}");
    }
}

#[test]
fn only_jws_shaped_credentials_are_taken_for_tokens() {
    assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
    assert!(!looks_like_jwt("user-alice-0123456789abcdef"));
    assert!(!looks_like_jwt("sk-spark-abc-def"));
    assert!(!looks_like_jwt("eyJ.only-one-dot"));
}

#[tokio::test]
async fn a_verified_token_is_remembered_and_a_refused_one_never_is() {
    let ec = ec_key("k1");
    let v = verifier(&ec);
    let token = es256(&ec, "k1", &idp_claims());
    let first = v.verify(&token).await.unwrap();
    assert_eq!(v.remembered(), 1);
    // The same token again: the same answer, from memory.
    assert_eq!(v.verify(&token).await.unwrap(), first);
    assert_eq!(v.remembered(), 1);
    // Refused tokens (a wrong audience, a forged signature) leave nothing behind.
    let mut wrong = idp_claims();
    wrong["aud"] = "another-app".into();
    assert!(v.verify(&es256(&ec, "k1", &wrong)).await.is_err());
    let forged = es256(&ec_key("k1"), "k1", &idp_claims());
    assert!(v.verify(&forged).await.is_err());
    assert_eq!(v.remembered(), 1);
}

#[test]
fn a_remembered_token_expires_with_the_same_leeway_as_a_full_check() {
    assert!(unexpired(1_000, 1_000));
    assert!(unexpired(1_000, 1_000 + LEEWAY_SECS));
    assert!(!unexpired(1_000, 1_001 + LEEWAY_SECS));
    assert!(unexpired(u64::MAX, u64::MAX));
}
