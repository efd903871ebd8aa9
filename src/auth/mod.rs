//! Who is calling: API keys held as SHA-256 digests and checked in constant time.
//!
//! The first step after the request id in DESIGN.md's request path. This module knows nothing of
//! HTTP: `api::auth` reads the header and hands the presented key here. Keys are never stored in
//! clear, so a heap dump or a debug print of the state shows only digests. User keys have the
//! form `user-{userId}-{secret}`; the user id is not secret, so it selects the candidate digests
//! and only the digest comparison has to be constant-time.

mod brake;
pub mod issue;
pub mod jwt;
pub mod managed;
mod ring;

use std::collections::HashMap;

pub use brake::AuthBrake;
pub use managed::{ManagedKey, ManagedKeys};
pub use ring::{KeyRing, Reload};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type KeyDigest = [u8; 32];

/// The authenticated caller, carried in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off (no key configured): the caller is known only by its address.
    Anonymous,
    /// A user key. The id is safe to log and to use as a rate-limit key; the secret is not kept.
    User(String),
    /// The master key: admin rights.
    Master,
    /// A user signed in by an identity provider as a member of an admin group: admin rights,
    /// and otherwise limited, metered and logged as the user it is.
    Admin(String),
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Master | Caller::Admin(_))
    }

    /// A label for logs: the user id, `master` or `anonymous`. Never key material.
    pub fn label(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::User(id) | Caller::Admin(id) => id,
            Caller::Master => "master",
        }
    }

    /// The user id limits, budgets and cache scopes are kept under, when the caller is a user.
    pub fn user(&self) -> Option<&str> {
        match self {
            Caller::User(id) | Caller::Admin(id) => Some(id),
            Caller::Master | Caller::Anonymous => None,
        }
    }
}

/// The tier a signed-in user's group gives it (its rate limit and budget), carried in the
/// request's extensions beside the [`Caller`].
#[derive(Debug, Clone)]
pub struct GroupTier(pub std::sync::Arc<jwt::Tier>);

/// The configured keys, as digests.
#[derive(Default)]
pub struct KeyStore {
    master: Option<KeyDigest>,
    users: HashMap<String, Vec<KeyDigest>>,
    /// Set by the [`KeyRing`] from its latched mode; a store built directly is on when it holds
    /// any key.
    auth_on: bool,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("master", &self.master.is_some())
            .field("users", &self.users.len())
            .finish()
    }
}

impl KeyStore {
    /// Builds the store. Keys were validated by the config; a malformed one is skipped here
    /// rather than trusted.
    pub fn new(master: Option<&SecretString>, users: &[SecretString]) -> Self {
        let mut store = KeyStore {
            master: master.map(|m| digest(m.expose_secret())),
            users: HashMap::new(),
            auth_on: master.is_some() || !users.is_empty(),
        };
        for key in users {
            let key = key.expose_secret();
            if let Some((user, _)) = split_user_key(key) {
                store
                    .users
                    .entry(user.to_owned())
                    .or_default()
                    .push(digest(key));
            }
        }
        store
    }

    /// True when authentication is off: every caller is [`Caller::Anonymous`]. Decided by
    /// configuration, never by how many keys happen to be loaded.
    pub fn is_open(&self) -> bool {
        !self.auth_on
    }

    /// The caller a presented key belongs to, or `None`. With auth off every caller is anonymous.
    pub fn authenticate(&self, presented: Option<&str>) -> Option<Caller> {
        if self.is_open() {
            return Some(Caller::Anonymous);
        }
        let presented = presented?;
        let d = digest(presented);
        // Both comparisons always run, so the time taken does not tell a user key from the master.
        let is_master = self
            .master
            .as_ref()
            .is_some_and(|m| bool::from(m.ct_eq(&d)));
        let user = split_user_key(presented).and_then(|(user, _)| {
            let candidates = self.users.get(user)?;
            let mut hit = subtle::Choice::from(0u8);
            for c in candidates {
                hit |= c.ct_eq(&d);
            }
            bool::from(hit).then(|| user.to_owned())
        });
        if is_master {
            Some(Caller::Master)
        } else {
            user.map(Caller::User)
        }
    }
}

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// Splits `user-{userId}-{secret}`. The user id is letters, digits, `_` and `.`, so the first
/// hyphen after it starts the secret, which may contain anything.
fn split_user_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("user-")?;
    let (user, secret) = rest.split_once('-')?;
    let user_ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    (user_ok && !secret.is_empty()).then_some((user, secret))
}

/// Keys are separated by commas or new lines; blank lines and `#` comments are skipped so a
/// Kubernetes secret file can carry notes.
pub fn split_keys(text: &str) -> Vec<SecretString> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .map(|k| SecretString::from(k.to_owned()))
        .collect()
}

/// An estimate of a secret's strength in bits: its length times log2 of the alphabet its
/// character classes suggest (lowercase, uppercase, digits, other printable). Generous to the
/// secret: a real entropy is never higher than this.
pub fn secret_bits(secret: &str) -> f64 {
    let mut alphabet = 0u32;
    if secret.chars().any(|c| c.is_ascii_lowercase()) {
        alphabet += 26;
    }
    if secret.chars().any(|c| c.is_ascii_uppercase()) {
        alphabet += 26;
    }
    if secret.chars().any(|c| c.is_ascii_digit()) {
        alphabet += 10;
    }
    if secret.chars().any(|c| !c.is_ascii_alphanumeric()) {
        alphabet += 32;
    }
    secret.chars().count() as f64 * f64::from(alphabet.max(1)).log2()
}

/// The weakest acceptable secret, in bits (a warning below it, not a refusal).
pub const MIN_SECRET_BITS: f64 = 96.0;

/// Warnings about weak user secrets: how many keys, never which.
pub fn weak_secret_warnings(keys: &[SecretString]) -> Option<String> {
    let weak = keys
        .iter()
        .filter_map(|k| split_user_key(k.expose_secret()))
        .filter(|(_, secret)| secret_bits(secret) < MIN_SECRET_BITS)
        .count();
    (weak > 0).then(|| {
        format!(
            "{weak} user key(s) have a secret weaker than {MIN_SECRET_BITS} bits by its alphabet and length; \
             issue longer random secrets (for example 32 hex characters from a CSPRNG = 128 bits)"
        )
    })
}

/// Why a configured user key is unusable, without repeating the key.
pub fn check_user_key_format(key: &str) -> Result<(), &'static str> {
    let Some((_, secret)) = split_user_key(key) else {
        return Err(
            "expected user-{userId}-{secret}, the user id made of letters, digits, '_' and '.'",
        );
    };
    if secret.chars().count() < 16 {
        return Err("the secret part must be at least 16 characters");
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the secret part must not contain spaces or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KeyStore {
        KeyStore::new(
            Some(&SecretString::from("master-0123456789abcdef")),
            &[
                SecretString::from("user-alice-aaaaaaaaaaaaaaaa"),
                SecretString::from("user-alice-bbbbbbbbbbbbbbbb"),
                SecretString::from("user-bob-cccccccccc-ccccccc"),
            ],
        )
    }

    #[test]
    fn user_and_master_keys_authenticate() {
        let s = store();
        assert_eq!(
            s.authenticate(Some("user-alice-aaaaaaaaaaaaaaaa")),
            Some(Caller::User("alice".into()))
        );
        // A second key for the same user (rotation) works too.
        assert_eq!(
            s.authenticate(Some("user-alice-bbbbbbbbbbbbbbbb")),
            Some(Caller::User("alice".into()))
        );
        assert_eq!(
            s.authenticate(Some("user-bob-cccccccccc-ccccccc")),
            Some(Caller::User("bob".into()))
        );
        assert_eq!(
            s.authenticate(Some("master-0123456789abcdef")),
            Some(Caller::Master)
        );
    }

    #[test]
    fn unknown_wrong_and_missing_keys_fail() {
        let s = store();
        assert_eq!(s.authenticate(None), None);
        assert_eq!(s.authenticate(Some("")), None);
        assert_eq!(s.authenticate(Some("user-alice-wrongwrongwrongwr")), None);
        assert_eq!(s.authenticate(Some("user-mallory-aaaaaaaaaaaaaaaa")), None);
        // Another user's secret under alice's id is not alice.
        assert_eq!(s.authenticate(Some("user-alice-cccccccccc-ccccccc")), None);
        assert_eq!(s.authenticate(Some("master-0123456789abcdeF")), None);
    }

    #[test]
    fn open_store_lets_everyone_in_anonymously() {
        let s = KeyStore::new(None, &[]);
        assert!(s.is_open());
        assert_eq!(s.authenticate(None), Some(Caller::Anonymous));
    }

    #[test]
    fn debug_output_holds_no_digest_or_key() {
        let printed = format!("{:?}", store());
        assert!(!printed.contains("alice"));
        assert!(!printed.contains("aaaa"));
    }

    #[test]
    fn secret_strength_follows_alphabet_and_length() {
        assert!(secret_bits("0123456789abcdef") < MIN_SECRET_BITS); // 16 hex: ~82 bits
        assert!(secret_bits("0123456789abcdef0123456789abcdef") >= MIN_SECRET_BITS);
        assert!(secret_bits(&"a".repeat(20)) < MIN_SECRET_BITS); // 20 × log2(26) ≈ 94
        let keys = [
            SecretString::from("user-alice-0123456789abcdef"),
            SecretString::from("user-bob-Zx9Qm2Lp7Vt4Rk8Wn3Hs6Jd1"),
        ];
        let w = weak_secret_warnings(&keys).unwrap();
        assert!(w.starts_with("1 user key"));
        assert!(!w.contains("alice") && !w.contains("0123"));
    }

    #[test]
    fn key_format_rules() {
        assert!(check_user_key_format("user-alice-0123456789abcdef").is_ok());
        assert!(check_user_key_format("user-al-ice-0123456789abcdef").is_ok()); // id "al"
        assert!(check_user_key_format("user-alice-short").is_err());
        assert!(check_user_key_format("alice-0123456789abcdef").is_err());
        assert!(check_user_key_format("user--0123456789abcdef").is_err());
        assert!(check_user_key_format("user-al ice-0123456789abcdef").is_err());
    }
}
