//! The key store in force, and how it is reloaded: see [`KeyRing`].

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::{KeyStore, check_user_key_format, split_keys};

/// The key store in force, reloadable without a restart: keys from `SPARK_API_KEYS` stay, keys
/// from `SPARK_API_KEYS_FILE` are re-read when the file changes (Kubernetes updates mounted
/// secrets in place) or on SIGHUP.
///
/// Fails closed. Whether authentication is on is decided once, at start-up, from what is
/// configured (a master key, inline keys, or a key file), and no reload can turn it off. A file
/// that cannot be read, holds a malformed key, or would leave no user key at all (unless
/// `SPARK_API_KEYS_ALLOW_EMPTY=true`) is refused as a whole: the keys in force stay, one ERROR
/// line is written and `spark_key_reload_failures_total` rises, once per change of the file, not
/// once per poll. Reloads are serialized, so a SIGHUP and the file watcher racing each other
/// cannot install an older key set over a newer one. Reading the file is blocking I/O: callers
/// on the async runtime run [`KeyRing::reload`] on a blocking thread.
pub struct KeyRing {
    current: std::sync::RwLock<std::sync::Arc<KeyStore>>,
    master: Option<SecretString>,
    inline: Vec<SecretString>,
    file: Option<std::path::PathBuf>,
    /// Latched at start-up: with auth on, an empty key set means nobody gets in, never everyone.
    auth_on: bool,
    allow_empty: bool,
    /// Held for the whole read-check-install of a reload; also the SHA-256 of the file content
    /// last seen (installed or refused), to notice a change cheaply and report each once.
    seen: std::sync::Mutex<Option<[u8; 32]>>,
    failures: Option<prometheus::IntCounter>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The file did not change since it was last seen.
    Unchanged,
    /// A new key set is in force, with this many user keys.
    Installed { user_keys: usize },
}

impl KeyRing {
    /// `inline` are the `SPARK_API_KEYS` keys; the file's keys are read here. Fails when the
    /// initial key set is unusable (the same checks a reload makes).
    pub fn new(
        master: Option<SecretString>,
        inline: Vec<SecretString>,
        file: Option<std::path::PathBuf>,
        allow_empty: bool,
        failures: Option<prometheus::IntCounter>,
    ) -> Result<Self, String> {
        let auth_on = master.is_some() || !inline.is_empty() || file.is_some();
        let ring = KeyRing {
            current: std::sync::RwLock::new(std::sync::Arc::new(KeyStore::default())),
            master,
            inline,
            file,
            auth_on,
            allow_empty,
            seen: std::sync::Mutex::new(None),
            failures,
        };
        ring.reload(true)?;
        Ok(ring)
    }

    /// Latches authentication on although no key is configured (callers sign in with tokens
    /// from an identity provider instead): nobody gets in without a credential.
    pub fn with_auth_on(mut self) -> Result<Self, String> {
        self.auth_on = true;
        self.reload(true)?;
        Ok(self)
    }

    pub fn current(&self) -> std::sync::Arc<KeyStore> {
        self.current
            .read()
            .map(|c| std::sync::Arc::clone(&c))
            .unwrap_or_else(|p| std::sync::Arc::clone(&p.into_inner()))
    }

    /// Whether authentication is on; fixed for the life of the process.
    pub fn auth_on(&self) -> bool {
        self.auth_on
    }

    /// Re-reads the key file; with `force` false, only when its content changed. A refused
    /// reload is logged and counted here (once per content) and returned as an error.
    pub fn reload(&self, force: bool) -> Result<Reload, String> {
        // Without a key file nothing can have changed since start-up: the upkeep loop asks four
        // times a second, and each "new" key set was an audit entry.
        if self.file.is_none() && !force {
            return Ok(Reload::Unchanged);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = self.inline.clone();
        if let Some(path) = &self.file {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) => {
                    // An unreadable file has no content to remember: report it at most once
                    // until it becomes readable again.
                    let reported = *seen == Some([0; 32]);
                    *seen = Some([0; 32]);
                    return Err(self.refuse(
                        format!("cannot read {}: {}", path.display(), e.kind()),
                        force || !reported,
                    ));
                }
            };
            let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            if !force && *seen == Some(digest) {
                return Ok(Reload::Unchanged);
            }
            *seen = Some(digest);
            let from_file = split_keys(&text);
            for key in &from_file {
                check_user_key_format(key.expose_secret()).map_err(|why| {
                    self.refuse(
                        format!("{}: a key is malformed: {why}", path.display()),
                        true,
                    )
                })?;
            }
            keys.extend(from_file);
        }
        if keys.is_empty() && self.file.is_some() && !self.allow_empty {
            return Err(self.refuse(
                "the key file holds no user key; refusing to revoke every key at once \
                 (set SPARK_API_KEYS_ALLOW_EMPTY=true to allow it)"
                    .to_owned(),
                true,
            ));
        }
        let mut store = KeyStore::new(self.master.as_ref(), &keys);
        store.auth_on = self.auth_on;
        let user_keys = keys.len();
        if let Ok(mut current) = self.current.write() {
            *current = std::sync::Arc::new(store);
        }
        if self.file.is_some() && !force {
            tracing::info!(user_keys, "API keys reloaded from SPARK_API_KEYS_FILE");
        }
        Ok(Reload::Installed { user_keys })
    }

    /// Logs and counts a refused reload (when `report`), and returns the reason.
    fn refuse(&self, why: String, report: bool) -> String {
        if report {
            tracing::error!(reason = %why, "API key reload refused; the keys in force stay");
            if let Some(c) = &self.failures {
                c.inc();
            }
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Caller;

    fn ring_with_file(text: &str, master: bool) -> (KeyRing, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("spark-keys-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).unwrap();
        let ring = KeyRing::new(
            master.then(|| SecretString::from("master-0123456789abcdef")),
            vec![],
            Some(path.clone()),
            false,
            None,
        )
        .unwrap();
        (ring, path)
    }

    #[test]
    fn without_a_key_file_a_periodic_reload_changes_nothing() {
        let ring = KeyRing::new(
            Some(SecretString::from("master-0123456789abcdef")),
            vec![SecretString::from("user-alice-aaaaaaaaaaaaaaaa")],
            None,
            false,
            None,
        )
        .unwrap();
        let before = ring.current();
        for _ in 0..3 {
            assert_eq!(ring.reload(false), Ok(Reload::Unchanged));
        }
        assert!(std::sync::Arc::ptr_eq(&before, &ring.current()));
        assert!(matches!(
            ring.reload(true),
            Ok(Reload::Installed { user_keys: 1 })
        ));
    }

    #[test]
    fn an_emptied_key_file_never_turns_auth_off_or_revokes_everyone() {
        for master in [false, true] {
            let (ring, path) = ring_with_file("user-alice-aaaaaaaaaaaaaaaa\n", master);
            for emptied in ["", "# only a comment\n", "\n\n"] {
                std::fs::write(&path, emptied).unwrap();
                assert!(ring.reload(false).is_err(), "{emptied:?}");
                let keys = ring.current();
                assert!(!keys.is_open());
                assert_eq!(keys.authenticate(None), None);
                assert_eq!(
                    keys.authenticate(Some("user-alice-aaaaaaaaaaaaaaaa")),
                    Some(Caller::User("alice".into()))
                );
            }
            std::fs::remove_file(&path).unwrap();
            assert!(
                ring.reload(false).is_err(),
                "a vanished file is refused too"
            );
            assert!(!ring.current().is_open());
        }
    }

    #[test]
    fn a_refused_reload_is_counted_once_per_content() {
        let path = std::env::temp_dir().join(format!("spark-keys-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "user-alice-aaaaaaaaaaaaaaaa").unwrap();
        let counter = prometheus::IntCounter::new("f", "f").unwrap();
        let ring = KeyRing::new(
            None,
            vec![],
            Some(path.clone()),
            false,
            Some(counter.clone()),
        )
        .unwrap();
        std::fs::write(&path, "user-bob-short").unwrap();
        for _ in 0..10 {
            let _ = ring.reload(false);
        }
        assert_eq!(counter.get(), 1);
        std::fs::write(&path, "user-carol-cccccccccccccccc").unwrap();
        assert_eq!(ring.reload(false), Ok(Reload::Installed { user_keys: 1 }));
        assert_eq!(ring.reload(false), Ok(Reload::Unchanged));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_empty_file_is_allowed_only_when_configured_and_auth_stays_on() {
        let path = std::env::temp_dir().join(format!("spark-keys-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "user-alice-aaaaaaaaaaaaaaaa").unwrap();
        let ring = KeyRing::new(None, vec![], Some(path.clone()), true, None).unwrap();
        std::fs::write(&path, "").unwrap();
        assert_eq!(ring.reload(false), Ok(Reload::Installed { user_keys: 0 }));
        assert!(!ring.current().is_open(), "no key lets nobody in");
        assert_eq!(ring.current().authenticate(None), None);
        std::fs::remove_file(&path).unwrap();
    }
}
