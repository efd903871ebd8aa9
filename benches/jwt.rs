//! What a signed-in caller costs: one bearer JWT verified (HS256, ES256, RS256, the issuer's keys
//! already cached) on its first request and remembered on later ones, against the API-key
//! check every request pays, in the same run.
//!
//! Run: `cargo bench --bench jwt`. The baseline is `KeyStore::authenticate` of a configured user
//! key (a SHA-256 digest and a constant-time compare). The JWKS comes from an in-memory fetcher:
//! the fetch is not on the request path once warm, the signature check and the claims are.
//! Numbers are recorded in BENCHMARKS.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmarks fail loudly"
)]

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::json;
use spark_gateway::auth::KeyStore;
use spark_gateway::auth::jwt::jwks::Fetched;
use spark_gateway::auth::jwt::{Fetch, Verifier, spec};

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

struct StaticJwks(String);

#[async_trait]
impl Fetch for StaticJwks {
    async fn get(&self, _url: &str) -> Result<Fetched, String> {
        Ok(Fetched {
            body: self.0.clone().into_bytes(),
            max_age: None,
        })
    }
}

fn key(alg: Algorithm, kid: &str) -> (EncodingKey, serde_json::Value) {
    let (kp, enc) = match alg {
        Algorithm::RS256 => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
            let enc = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap();
            (kp, enc)
        }
        _ => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let enc = EncodingKey::from_ec_der(&kp.serialize_der());
            (kp, enc)
        }
    };
    drop(kp);
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap();
    jwk["kid"] = kid.into();
    (enc, jwk)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (rsa, rsa_jwk) = key(Algorithm::RS256, "rsa");
    let (ec, ec_jwk) = key(Algorithm::ES256, "ec");
    let specs = spec::parse(
        r#"
[[issuer]]
issuer = "https://idp.test"
audiences = ["spark"]
jwks_url = "https://idp.test/jwks"
groups_claim = "groups"
[issuer.tiers.artists]
rate_limit = "30/min"

[[issuer]]
issuer = "https://lms.test"
audiences = ["spark"]
hs256_secret_env = "LMS"
"#,
        false,
        &|n| (n == "LMS").then(|| SECRET.to_owned()),
    )
    .unwrap();
    let doc = json!({ "keys": [rsa_jwk, ec_jwk] }).to_string();
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new("bench_refresh", "bench"),
        &["issuer", "result"],
    )
    .unwrap();
    let verifier = Verifier::new(specs, Arc::new(StaticJwks(doc)), counter).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |iss: &str| {
        json!({"iss": iss, "aud": "spark", "sub": "ana@studio.test", "groups": ["artists"],
               "iat": now, "exp": now + 3600})
    };
    let sign = |alg: Algorithm, kid: Option<&str>, key: &EncodingKey, iss: &str| {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, &claims(iss), key).unwrap()
    };
    let hs = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        "https://lms.test",
    );
    let es = sign(Algorithm::ES256, Some("ec"), &ec, "https://idp.test");
    let rs = sign(Algorithm::RS256, Some("rsa"), &rsa, "https://idp.test");
    // Warm: the first verification fetches the (in-memory) JWKS.
    for t in [&hs, &es, &rs] {
        rt.block_on(verifier.verify(t)).unwrap();
    }

    let user_key = "user-alice-alicesecret0123456789";
    let store = KeyStore::new(None, &[SecretString::from(user_key)]);
    let mut g = c.benchmark_group("bearer");
    g.bench_function("api key (baseline)", |b| {
        b.iter(|| black_box(store.authenticate(black_box(Some(user_key)))))
    });
    // A token's first request: the signature and the claims are checked.
    for (name, token) in [("jwt HS256", &hs), ("jwt ES256", &es), ("jwt RS256", &rs)] {
        g.bench_function(format!("{name}, first sight"), |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(verifier.verify_uncached(black_box(token)))
                        .unwrap(),
                )
            })
        });
    }
    // Every later request within a minute: answered from the memory of verified tokens.
    g.bench_function("jwt RS256, remembered", |b| {
        b.iter(|| black_box(rt.block_on(verifier.verify(black_box(&rs))).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
