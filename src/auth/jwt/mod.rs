//! Callers signed in by an identity provider: bearer JWTs checked against the issuers of
//! `SPARK_AUTH_ISSUERS_FILE`, beside API keys.
//!
//! The checks follow RFC 8725 (JWT best current practice) rather than trusting the token to say
//! how it should be checked: the issuer is looked up by the token's `iss`, but the algorithms
//! allowed are the issuer's own (RS256, PS256, ES256, EdDSA from its JWKS; HS256 only for an
//! issuer configured with a shared secret), so `alg: none` and an HS256 token "signed" with a
//! published RSA key are refused by construction. `exp`, `nbf` and `iat` are checked with 60 s
//! of leeway; `aud` must name one of the issuer's audiences. A token longer than
//! [`MAX_TOKEN_BYTES`] is refused before it is parsed.
//!
//! The outcome is an [`Identity`]: the user id from the issuer's `user_claim`, whether one of its
//! groups is an admin group, and the first tier (in file order) whose group the user is in. This
//! module knows nothing of HTTP; `api::auth` maps [`JwtError`] to 401 and 503.

pub mod jwks;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use prometheus::IntCounterVec;
use serde_json::{Map, Value};

pub use jwks::{Fetch, HttpFetch, Lookup};
pub use spec::{IssuerSpec, KeySource, Tier};

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// The longest user id taken from a claim.
pub const MAX_USER_BYTES: usize = 256;
/// Groups read from a token at most (a token is at most 8 KiB, so this is only a guard).
const MAX_GROUPS: usize = 256;

/// Algorithms accepted from a JWKS.
const ASYMMETRIC: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    /// A member of one of the issuer's `admin_groups`.
    pub admin: bool,
    /// The limits of the user's first tier, if any.
    pub tier: Option<Arc<Tier>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token is not acceptable; the reason is for the debug log, never the response.
    #[error("token refused: {0}")]
    Invalid(&'static str),
    /// The issuer's keys cannot be had now; the caller may retry after this long.
    #[error("the identity provider's keys are unavailable")]
    Unavailable(Duration),
}

enum Keys {
    Jwks(Arc<jwks::Jwks>),
    Secret(DecodingKey),
}

struct Issuer {
    spec: IssuerSpec,
    tiers: Vec<Arc<Tier>>,
    keys: Keys,
    /// One set of rules per allowed algorithm: jsonwebtoken wants every algorithm of a
    /// validation to be of the key's family, so each is checked on its own.
    validations: Vec<(Algorithm, Validation)>,
}

/// Verified tokens remembered at most: a bound on memory whatever callers present (only tokens
/// that verified are kept, so forged ones cannot fill it).
pub const VERIFIED_CAPACITY: u64 = 10_000;
/// How long a verified token is remembered at most. A signature check costs 6 µs (HS256) to
/// 70 µs (ES256) against 0.2 µs for an API key (BENCHMARKS.md); a client sends the same token
/// on every request. Short, so a key the provider withdraws stops working at most this long
/// after the JWKS cache lets go of it.
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// A verified token, by its SHA-256: who it names and until when (`exp`, Unix seconds).
type Verified = moka::sync::Cache<[u8; 32], Arc<(Identity, u64)>>;

/// The configured issuers and their key caches.
pub struct Verifier {
    issuers: Vec<Issuer>,
    verified: Verified,
}

/// Whether a presented credential is shaped like a JWS compact token (three base64url parts, a
/// JSON header): API keys never are, so they never pay for a JWT parse.
pub fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ") && s.bytes().filter(|b| *b == b'.').count() == 2
}

impl Verifier {
    pub fn new(
        specs: Vec<IssuerSpec>,
        fetch: Arc<dyn Fetch>,
        refreshes: IntCounterVec,
    ) -> Result<Verifier, String> {
        let issuers = specs
            .into_iter()
            .map(|spec| {
                let (keys, algorithms) = match &spec.keys {
                    KeySource::Hs256(_) => (
                        Keys::Secret(
                            DecodingKey::from_secret(spec.hs256_secret().unwrap_or_default())
                                .map_err(|e| format!("issuer {:?}: {e}", spec.issuer))?,
                        ),
                        vec![Algorithm::HS256],
                    ),
                    KeySource::Jwks { url } => (
                        Keys::Jwks(Arc::new(jwks::Jwks::new(
                            spec.issuer.clone(),
                            url.clone(),
                            Arc::clone(&fetch),
                            refreshes.clone(),
                        ))),
                        ASYMMETRIC.to_vec(),
                    ),
                };
                let validations = algorithms
                    .into_iter()
                    .map(|alg| {
                        let mut v = Validation::new(alg);
                        v.leeway = LEEWAY_SECS;
                        v.validate_exp = true;
                        v.validate_nbf = true;
                        v.set_audience(&spec.audiences);
                        v.set_issuer(&[spec.issuer.as_str()]);
                        v.set_required_spec_claims(&["exp", "iss", "aud"]);
                        (alg, v)
                    })
                    .collect();
                Ok(Issuer {
                    tiers: spec.tiers.iter().cloned().map(Arc::new).collect(),
                    spec,
                    keys,
                    validations,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Verifier {
            issuers,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build(),
        })
    }

    /// Fetches every JWKS issuer's keys in the background, so the first caller finds them warm.
    pub fn warm_up(&self) {
        for issuer in &self.issuers {
            if let Keys::Jwks(jwks) = &issuer.keys {
                let jwks = Arc::clone(jwks);
                crate::telemetry::spawn_named("jwks-warm-up", async move {
                    jwks.refresh().await;
                });
            }
        }
    }

    /// Issuers whose keys are usable now, and how many are configured.
    pub fn ready(&self) -> (usize, usize) {
        let ready = self
            .issuers
            .iter()
            .filter(|i| match &i.keys {
                Keys::Jwks(j) => j.has_keys(),
                Keys::Secret(_) => true,
            })
            .count();
        (ready, self.issuers.len())
    }

    /// Verified tokens remembered now (for tests and health).
    pub fn remembered(&self) -> u64 {
        self.verified.run_pending_tasks();
        self.verified.entry_count()
    }

    /// Checks a token and says who it names. A token that verified in the last minute is
    /// answered from memory while its `exp` (with the leeway) has not passed.
    pub async fn verify(&self, token: &str) -> Result<Identity, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Invalid("token too long"));
        }
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.verified.get(&digest) {
            if unexpired(hit.1, jsonwebtoken::get_current_timestamp()) {
                return Ok(hit.0.clone());
            }
            self.verified.invalidate(&digest);
        }
        let (identity, exp) = self.verify_uncached(token).await?;
        self.verified
            .insert(digest, Arc::new((identity.clone(), exp)));
        Ok(identity)
    }

    /// [`verify`](Self::verify) without the memory of verified tokens: what a token's first
    /// request costs (the benchmark compares both). Also answers the token's `exp`.
    pub async fn verify_uncached(&self, token: &str) -> Result<(Identity, u64), JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Invalid("token too long"));
        }
        // `alg: none` and unknown algorithms fail here: they are not jsonwebtoken algorithms.
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| JwtError::Invalid("bad header"))?;
        #[derive(serde::Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        // Unverified, and used only to choose whose rules apply; the signature check and
        // `set_issuer` confirm it below.
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
            .ok()
            .and_then(|c| c.iss)
            .ok_or(JwtError::Invalid("no iss"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.spec.issuer == iss)
            .ok_or(JwtError::Invalid("unknown issuer"))?;
        let validation = issuer
            .validations
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .map(|(_, v)| v)
            .ok_or(JwtError::Invalid("algorithm not allowed for this issuer"))?;
        let key = match &issuer.keys {
            Keys::Secret(k) => Arc::new(k.clone()),
            Keys::Jwks(jwks) => match jwks.key(header.kid.as_deref(), header.alg).await {
                Lookup::Found(k) => k,
                Lookup::Unknown => return Err(JwtError::Invalid("unknown key")),
                Lookup::Unavailable(wait) => return Err(JwtError::Unavailable(wait)),
            },
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, validation)
            .map_err(|e| JwtError::Invalid(reason(&e)))?;
        let claims = data.claims;
        // Required and checked by jsonwebtoken: kept to bound how long the token is remembered.
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .filter(|e| e.is_finite() && *e >= 0.0)
            .map(|e| e as u64)
            .ok_or(JwtError::Invalid("exp not a number"))?;
        // jsonwebtoken checks exp and nbf; a token issued in the future is refused here.
        match claims.get("iat") {
            None => {}
            Some(v) => {
                let iat = v.as_f64().ok_or(JwtError::Invalid("iat not a number"))?;
                let now = jsonwebtoken::get_current_timestamp() as f64;
                if iat > now + LEEWAY_SECS as f64 {
                    return Err(JwtError::Invalid("issued in the future"));
                }
            }
        }
        let user = user_id(claims.get(&issuer.spec.user_claim))
            .ok_or(JwtError::Invalid("no usable user claim"))?;
        let groups = issuer
            .spec
            .groups_claim
            .as_ref()
            .map(|c| groups(claims.get(c)))
            .unwrap_or_default();
        let admin = groups
            .iter()
            .any(|g| issuer.spec.admin_groups.iter().any(|a| a == g));
        let tier = issuer
            .tiers
            .iter()
            .find(|t| groups.iter().any(|g| *g == t.group))
            .cloned();
        Ok((Identity { user, admin, tier }, exp))
    }
}

/// Whether a token expiring at `exp` is still accepted at `now` (Unix seconds), with the same
/// leeway as a full check.
fn unexpired(exp: u64, now: u64) -> bool {
    now <= exp.saturating_add(LEEWAY_SECS)
}

fn reason(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not yet valid",
        K::InvalidAudience => "wrong audience",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidSignature => "bad signature",
        K::InvalidAlgorithm => "algorithm not allowed",
        K::MissingRequiredClaim(_) => "a required claim is missing",
        _ => "malformed",
    }
}

/// The user id a claim holds: a non-empty string (or number) without control characters.
fn user_id(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty() && s.len() <= MAX_USER_BYTES && !s.chars().any(char::is_control)).then_some(s)
}

/// Groups: an array of strings, or one string.
fn groups(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .take(MAX_GROUPS)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
