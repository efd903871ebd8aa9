//! One issuer's verification keys: a JWKS document fetched, cached and refreshed without letting
//! callers drive the fetching.
//!
//! Three rules, all from the way identity providers fail in practice:
//! - Keys are fresh for the document's `Cache-Control: max-age`, bounded to 5 min–24 h. A stale
//!   set keeps answering while one background refresh runs.
//! - Fetches happen at most once per [`REFETCH_EVERY`] per issuer, whatever asks for them. A token
//!   with an unknown `kid` is how a rotation shows up, so it may ask for one; a thousand forged
//!   kids still cause at most one fetch per period.
//! - When the provider is down, the keys last fetched stay in use until [`MAX_AGE`] after that
//!   fetch. With no usable key at all (a cold start with the provider down), lookups answer
//!   [`Lookup::Unavailable`] so callers hear "try again" rather than "you are not who you say".
//!
//! The clock is tokio's, so the rules are tested on a paused clock with a fake [`Fetch`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus::IntCounterVec;
use tokio::time::Instant;

use super::spec::secure_or_loopback;

/// At most one fetch per issuer in this period.
pub const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// The shortest freshness a document may claim.
pub const MIN_AGE: Duration = Duration::from_secs(300);
/// The longest freshness, and how long keys stay usable after their last successful fetch.
pub const MAX_AGE: Duration = Duration::from_secs(86_400);
/// A document larger than this is refused (real ones are a few KiB).
pub const MAX_DOCUMENT: usize = 256 * 1024;
/// Keys kept from one document at most.
pub const MAX_KEYS: usize = 64;

/// What a GET returned.
pub struct Fetched {
    pub body: Vec<u8>,
    /// `Cache-Control: max-age`, when the response had one.
    pub max_age: Option<Duration>,
}

/// How documents are fetched: HTTP in the gateway, a fake in unit tests.
#[async_trait]
pub trait Fetch: Send + Sync {
    async fn get(&self, url: &str) -> Result<Fetched, String>;
}

/// The HTTP fetcher: no redirects (a key source is configured, not discovered by following
/// links), a timeout, and a bounded body.
pub struct HttpFetch {
    client: reqwest::Client,
}

impl HttpFetch {
    pub fn new() -> Result<HttpFetch, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("spark-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpFetch { client })
    }
}

/// `max-age` of a `Cache-Control` value.
pub fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let (name, value) = d.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

#[async_trait]
impl Fetch for HttpFetch {
    async fn get(&self, url: &str) -> Result<Fetched, String> {
        let mut resp = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let max_age = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("body failed: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("document larger than {MAX_DOCUMENT} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, max_age })
    }
}

/// The answer to a key lookup.
#[derive(Clone)]
pub enum Lookup {
    Found(Arc<DecodingKey>),
    /// No key matches; the token is refused.
    Unknown,
    /// No usable key set and none can be fetched now: retry after this long.
    Unavailable(Duration),
}

struct Key {
    kid: Option<String>,
    /// The algorithm the JWK pins, if it names one.
    alg: Option<Algorithm>,
    key: Arc<DecodingKey>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    fresh_until: Option<Instant>,
    usable_until: Option<Instant>,
}

impl KeySet {
    fn usable(&self, now: Instant) -> bool {
        self.usable_until.is_some_and(|u| now < u)
    }

    fn stale(&self, now: Instant) -> bool {
        self.fresh_until.is_none_or(|f| now >= f)
    }

    /// The key for a token's `kid` and `alg`. Without a kid, only an unambiguous key will do.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let fits = |k: &&Key| k.alg.is_none_or(|a| a == alg) && k.key.family() == alg_family(alg);
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(fits)
                .find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut it = self.keys.iter().filter(fits);
                let first = it.next();
                if it.next().is_some() { None } else { first }
            }
        }
        .map(|k| Arc::clone(&k.key))
    }
}

fn alg_family(alg: Algorithm) -> jsonwebtoken::AlgorithmFamily {
    use jsonwebtoken::AlgorithmFamily as F;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => F::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => F::Ec,
        Algorithm::EdDSA => F::Ed,
        _ => F::Rsa,
    }
}

/// Parses a JWKS document. Keys that cannot be used (encryption keys, unknown types, broken
/// parameters) are skipped one by one, so one odd key does not take the others down.
fn parse_keys(body: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let keys: Vec<Key> = doc
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
                // A symmetric key published in a JWKS would let anyone who reads it sign.
                return None;
            }
            // A key pinned to an algorithm that signs nothing here (RSA-OAEP, say) is skipped,
            // not taken as usable with any algorithm of its family.
            let alg = match jwk.common.key_algorithm {
                Some(a) => Some(Algorithm::try_from(a).ok()?),
                None => None,
            };
            Some(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key: Arc::new(key),
            })
        })
        .take(MAX_KEYS)
        .collect();
    if keys.is_empty() {
        return Err("the document holds no usable signing key".to_owned());
    }
    Ok(keys)
}

struct Gate {
    last_attempt: Option<Instant>,
    /// The JWKS address found through discovery, kept once found.
    discovered: Option<String>,
}

/// One issuer's key cache.
pub struct Jwks {
    issuer: String,
    url: Option<String>,
    fetch: Arc<dyn Fetch>,
    set: RwLock<Arc<KeySet>>,
    /// Held for the whole of a fetch: one at a time, and the time of the last one.
    gate: tokio::sync::Mutex<Gate>,
    refreshes: IntCounterVec,
}

impl Jwks {
    /// `url` is the configured `jwks_url`; without one the address is discovered from
    /// `{issuer}/.well-known/openid-configuration`.
    pub fn new(
        issuer: String,
        url: Option<String>,
        fetch: Arc<dyn Fetch>,
        refreshes: IntCounterVec,
    ) -> Jwks {
        Jwks {
            issuer,
            url,
            fetch,
            set: RwLock::new(Arc::new(KeySet::default())),
            gate: tokio::sync::Mutex::new(Gate {
                last_attempt: None,
                discovered: None,
            }),
            refreshes,
        }
    }

    fn current(&self) -> Arc<KeySet> {
        self.set
            .read()
            .map(|s| Arc::clone(&s))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// The key for a token. May fetch (at most once per [`REFETCH_EVERY`]); a stale set answers
    /// at once and is refreshed in the background.
    pub async fn key(self: &Arc<Self>, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let set = self.current();
        let now = Instant::now();
        if set.usable(now)
            && let Some(key) = set.find(kid, alg)
        {
            if set.stale(now) {
                let me = Arc::clone(self);
                crate::telemetry::spawn_named("jwks-refresh", async move {
                    me.refresh().await;
                });
            }
            return Lookup::Found(key);
        }
        let mut gate = self.gate.lock().await;
        // Another request may have fetched while this one waited for the gate.
        let set = self.current();
        let now = Instant::now();
        if set.usable(now)
            && let Some(key) = set.find(kid, alg)
        {
            return Lookup::Found(key);
        }
        if let Some(wait) = closed_for(&gate, now) {
            return if set.usable(now) {
                Lookup::Unknown
            } else {
                Lookup::Unavailable(wait)
            };
        }
        match self.fetch_locked(&mut gate).await {
            Ok(set) => set.find(kid, alg).map_or(Lookup::Unknown, Lookup::Found),
            Err(()) if set.usable(Instant::now()) => Lookup::Unknown,
            Err(()) => Lookup::Unavailable(REFETCH_EVERY),
        }
    }

    /// Fetches now unless a fetch ran within [`REFETCH_EVERY`] (start-up warm-up, and the
    /// background refresh of a stale set).
    pub async fn refresh(&self) {
        let mut gate = self.gate.lock().await;
        if closed_for(&gate, Instant::now()).is_none() {
            let _ = self.fetch_locked(&mut gate).await;
        }
    }

    /// Whether any key is usable now (for readiness reporting).
    pub fn has_keys(&self) -> bool {
        self.current().usable(Instant::now())
    }

    async fn fetch_locked(&self, gate: &mut Gate) -> Result<Arc<KeySet>, ()> {
        gate.last_attempt = Some(Instant::now());
        let result = self.fetch_document(gate).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(_) => "error",
        };
        self.refreshes
            .with_label_values(&[self.issuer.as_str(), label])
            .inc();
        match result {
            Ok((keys, max_age)) => {
                let now = Instant::now();
                let fresh = max_age.unwrap_or(MIN_AGE).clamp(MIN_AGE, MAX_AGE);
                let count = keys.len();
                let set = Arc::new(KeySet {
                    keys,
                    fresh_until: Some(now + fresh),
                    usable_until: Some(now + MAX_AGE),
                });
                if let Ok(mut s) = self.set.write() {
                    *s = Arc::clone(&set);
                }
                tracing::info!(issuer = %self.issuer, keys = count, fresh_secs = fresh.as_secs(), "JWKS fetched");
                Ok(set)
            }
            Err(why) => {
                let set = self.current();
                // Loud: while this lasts, sign-ins depend on keys that are getting old.
                tracing::error!(
                    issuer = %self.issuer,
                    reason = %why,
                    keys_in_use = set.keys.len(),
                    usable = set.usable(Instant::now()),
                    "JWKS fetch failed; the keys in force stay until their bound"
                );
                Err(())
            }
        }
    }

    async fn fetch_document(
        &self,
        gate: &mut Gate,
    ) -> Result<(Vec<Key>, Option<Duration>), String> {
        let url = match (&self.url, &gate.discovered) {
            (Some(u), _) | (None, Some(u)) => u.clone(),
            (None, None) => {
                let u = self.discover().await?;
                gate.discovered = Some(u.clone());
                u
            }
        };
        let doc = self.fetch.get(&url).await?;
        Ok((parse_keys(&doc.body)?, doc.max_age))
    }

    async fn discover(&self) -> Result<String, String> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: Option<String>,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let doc = self.fetch.get(&url).await?;
        let d: Discovery = serde_json::from_slice(&doc.body)
            .map_err(|e| format!("discovery document unreadable: {e}"))?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was asked for.
        if d.issuer.as_deref().is_some_and(|i| i != self.issuer) {
            return Err("the discovery document names another issuer".to_owned());
        }
        if !secure_or_loopback(&d.jwks_uri) {
            return Err("the discovery document's jwks_uri is not https://".to_owned());
        }
        Ok(d.jwks_uri)
    }
}

/// How long until the gate opens, if it is closed.
fn closed_for(gate: &Gate, now: Instant) -> Option<Duration> {
    let last = gate.last_attempt?;
    let open_at = last + REFETCH_EVERY;
    (now < open_at).then(|| open_at - now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves whatever documents the test set, counts requests, and can be "down".
    #[derive(Default)]
    struct Fake {
        jwks: Mutex<String>,
        max_age: Mutex<Option<Duration>>,
        down: std::sync::atomic::AtomicBool,
        gets: AtomicUsize,
    }

    #[async_trait]
    impl Fetch for Fake {
        async fn get(&self, url: &str) -> Result<Fetched, String> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err("connection refused".into());
            }
            let body = if url.ends_with("openid-configuration") {
                serde_json::json!({"issuer": "https://idp.test", "jwks_uri": "https://idp.test/jwks"})
                    .to_string()
            } else {
                self.jwks.lock().unwrap().clone()
            };
            Ok(Fetched {
                body: body.into_bytes(),
                max_age: *self.max_age.lock().unwrap(),
            })
        }
    }

    fn ec_jwk(kid: &str) -> serde_json::Value {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        use base64::Engine;
        let b = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": b(&raw[1..33]), "y": b(&raw[33..65])})
    }

    fn doc(keys: &[serde_json::Value]) -> String {
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn setup(keys: &[serde_json::Value]) -> (Arc<Fake>, Arc<Jwks>, IntCounterVec) {
        let fake = Arc::new(Fake::default());
        *fake.jwks.lock().unwrap() = doc(keys);
        let counter = IntCounterVec::new(
            prometheus::Opts::new("t_jwks_refresh_total", "t"),
            &["issuer", "result"],
        )
        .unwrap();
        let jwks = Arc::new(Jwks::new(
            "https://idp.test".into(),
            None,
            Arc::clone(&fake) as Arc<dyn Fetch>,
            counter.clone(),
        ));
        (fake, jwks, counter)
    }

    fn found(l: &Lookup) -> bool {
        matches!(l, Lookup::Found(_))
    }

    #[tokio::test(start_paused = true)]
    async fn discovery_then_keys_then_served_from_memory() {
        let (fake, jwks, counter) = setup(&[ec_jwk("a")]);
        assert!(found(&jwks.key(Some("a"), Algorithm::ES256).await));
        assert_eq!(fake.gets.load(Ordering::SeqCst), 2, "discovery and JWKS");
        for _ in 0..100 {
            assert!(found(&jwks.key(Some("a"), Algorithm::ES256).await));
        }
        assert_eq!(fake.gets.load(Ordering::SeqCst), 2);
        assert_eq!(
            counter.with_label_values(&["https://idp.test", "ok"]).get(),
            1
        );
        // The key's family decides which algorithms it can verify.
        assert!(matches!(
            jwks.key(Some("a"), Algorithm::RS256).await,
            Lookup::Unknown
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn forged_kids_cause_at_most_one_fetch_per_period_and_rotation_is_picked_up() {
        let (fake, jwks, _) = setup(&[ec_jwk("a")]);
        assert!(found(&jwks.key(Some("a"), Algorithm::ES256).await));
        let after_warmup = fake.gets.load(Ordering::SeqCst);
        for i in 0..1_000 {
            let kid = format!("forged-{i}");
            assert!(matches!(
                jwks.key(Some(&kid), Algorithm::ES256).await,
                Lookup::Unknown
            ));
        }
        assert_eq!(
            fake.gets.load(Ordering::SeqCst),
            after_warmup,
            "inside the first period"
        );
        // The provider rotates: a new key is published and tokens are signed with it.
        *fake.jwks.lock().unwrap() = doc(&[ec_jwk("a"), ec_jwk("b")]);
        assert!(matches!(
            jwks.key(Some("b"), Algorithm::ES256).await,
            Lookup::Unknown
        ));
        tokio::time::advance(REFETCH_EVERY).await;
        assert!(
            found(&jwks.key(Some("b"), Algorithm::ES256).await),
            "rotation seen"
        );
        assert_eq!(fake.gets.load(Ordering::SeqCst), after_warmup + 1);
        for i in 0..1_000 {
            let kid = format!("forged-again-{i}");
            let _ = jwks.key(Some(&kid), Algorithm::ES256).await;
        }
        assert_eq!(fake.gets.load(Ordering::SeqCst), after_warmup + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn provider_down_after_warm_up_keeps_keys_until_their_bound() {
        let (fake, jwks, counter) = setup(&[ec_jwk("a")]);
        *fake.max_age.lock().unwrap() = Some(Duration::from_secs(600));
        assert!(found(&jwks.key(Some("a"), Algorithm::ES256).await));
        fake.down.store(true, Ordering::SeqCst);
        // Past freshness: still answered, and a background refresh is attempted (and fails).
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(found(&jwks.key(Some("a"), Algorithm::ES256).await));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            counter
                .with_label_values(&["https://idp.test", "error"])
                .get(),
            1
        );
        // Still usable until 24 h after the last good fetch...
        tokio::time::advance(MAX_AGE - Duration::from_secs(700)).await;
        assert!(found(&jwks.key(Some("a"), Algorithm::ES256).await));
        // ...and not after: the caller is told to come back, not that it is unknown.
        tokio::time::advance(Duration::from_secs(200)).await;
        assert!(matches!(
            jwks.key(Some("a"), Algorithm::ES256).await,
            Lookup::Unavailable(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn cold_start_with_the_provider_down_is_unavailable_with_a_retry_time() {
        let (fake, jwks, _) = setup(&[ec_jwk("a")]);
        fake.down.store(true, Ordering::SeqCst);
        jwks.refresh().await; // the start-up warm-up fails
        let gets = fake.gets.load(Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(10)).await;
        match jwks.key(Some("a"), Algorithm::ES256).await {
            Lookup::Unavailable(wait) => assert_eq!(wait, Duration::from_secs(20)),
            _ => panic!("expected Unavailable"),
        }
        assert_eq!(
            fake.gets.load(Ordering::SeqCst),
            gets,
            "no fetch inside the period"
        );
        // The provider is back: the next period's first caller fetches.
        fake.down.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(found(&jwks.key(Some("a"), Algorithm::ES256).await));
    }

    #[test]
    fn cache_control_max_age_is_read_and_odd_documents_are_filtered() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=abc"), None);
        // An encryption key, a symmetric key and junk are skipped; the signing key stays.
        let mut enc = ec_jwk("e");
        enc["use"] = "enc".into();
        let body = doc(&[
            enc,
            serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}),
            serde_json::json!({"kty": "weird"}),
            ec_jwk("s"),
        ]);
        let keys = parse_keys(body.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("s"));
        assert!(parse_keys(b"{\"keys\": []}").is_err());
        assert!(parse_keys(b"<html>").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_without_kid_needs_an_unambiguous_key() {
        let (_, jwks, _) = setup(&[ec_jwk("a")]);
        assert!(found(&jwks.key(None, Algorithm::ES256).await));
        let (_, jwks, _) = setup(&[ec_jwk("a"), ec_jwk("b")]);
        assert!(matches!(
            jwks.key(None, Algorithm::ES256).await,
            Lookup::Unknown
        ));
    }
}
