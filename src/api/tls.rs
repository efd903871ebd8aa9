//! Native TLS (`SPARK_TLS_CERT`, `SPARK_TLS_KEY`): HTTPS served by the gateway itself, for small
//! deployments without an ingress.
//!
//! rustls with the aws-lc-rs provider (the one reqwest and sqlx already use, so there is one
//! crypto stack in the binary), TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`. The certificate is
//! resolved per handshake from [`Certificates`], which re-reads the PEM files when they change
//! (cert-manager rotates them in place): a new connection gets the new certificate, an open one
//! keeps the session it has. A file that does not load (half written, a key that does not belong
//! to the certificate, garbage) never replaces the certificate in force: the last good one stays,
//! the failure is logged once per change and counted in `spark_tls_reloads_total{result="error"}`.
//! At start-up there is no last good one, so a bad pair stops the gateway (fail closed).
//! `spark_tls_certificate_expiry_timestamp_seconds` says when the certificate in force expires,
//! so an alert fires before a rotation that never happened matters.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use prometheus::{IntCounterVec, IntGauge};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use crate::config::TlsFiles;

/// How often the files are checked for a change (two `stat` calls).
pub const WATCH_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("the private key cannot be used with the certificate: {0}")]
    Key(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// What identifies a version of the two files without reading them: modification time and
/// length of each (a Kubernetes Secret volume swaps a symlink, which changes both).
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(files: &TlsFiles) -> Stamp {
    let one = |p: &Path| std::fs::metadata(p).map_or((None, 0), |m| (m.modified().ok(), m.len()));
    [one(&files.cert), one(&files.key)]
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Reads and checks a certificate chain and its key.
fn read(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&files.cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    // Parses the key and checks that it belongs to the leaf certificate: a rotation caught
    // between writing the certificate and writing the key is refused here, not at handshakes.
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Key(e.to_string()))
}

/// The certificate in force, and how to replace it when its files change.
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as last loaded, and as last refused (so a bad version is logged once).
    loaded: Mutex<(Stamp, Option<Stamp>)>,
    reloads: IntCounterVec,
    expiry: IntGauge,
}

/// The metrics a [`Certificates`] keeps.
#[derive(Clone)]
pub struct TlsMetrics {
    /// Reloads by result (`ok`, `error`).
    pub reloads: IntCounterVec,
    /// When the leaf certificate in force expires (Unix seconds; 0 when it cannot be read).
    pub expiry: IntGauge,
}

/// The leaf's notAfter, in Unix seconds.
fn not_after(key: &CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// What [`Certificates::refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Unchanged,
    Reloaded,
    /// The files changed but do not load; the certificate in force stays.
    Refused,
}

impl Certificates {
    /// Loads the pair; an error here is a configuration error.
    pub fn load(files: TlsFiles, metrics: TlsMetrics) -> Result<Arc<Certificates>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let seen = stamp(&files);
        let current = read(&files, &provider)?;
        metrics.expiry.set(not_after(&current).unwrap_or(0));
        Ok(Arc::new(Certificates {
            files,
            provider,
            current: RwLock::new(Arc::new(current)),
            loaded: Mutex::new((seen, None)),
            reloads: metrics.reloads,
            expiry: metrics.expiry,
        }))
    }

    /// Reads the pair as serving would, without keeping it: for `check-config` and start-up.
    pub fn check(files: &TlsFiles) -> Result<(), TlsError> {
        read(files, &rustls::crypto::aws_lc_rs::default_provider()).map(|_| ())
    }

    /// Re-reads the files if they changed since the last load. Blocking file I/O.
    pub fn refresh(&self) -> Refresh {
        let seen = stamp(&self.files);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 == seen || loaded.1 == Some(seen) {
            return Refresh::Unchanged;
        }
        match read(&self.files, &self.provider) {
            Ok(next) => {
                self.expiry.set(not_after(&next).unwrap_or(0));
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(next);
                }
                *loaded = (seen, None);
                self.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                Refresh::Reloaded
            }
            Err(e) => {
                loaded.1 = Some(seen);
                self.reloads.with_label_values(&["error"]).inc();
                tracing::error!(
                    error = %e,
                    "the TLS certificate files changed but do not load; the certificate in force stays"
                );
                Refresh::Refused
            }
        }
    }

    /// The leaf certificate in force (DER).
    #[cfg(test)]
    fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.read().ok()?.cert.first().cloned()
    }

    /// A server configuration that resolves every handshake's certificate from `self`.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Checks the files every [`WATCH_PERIOD`] until the returned task is aborted.
    pub fn spawn_watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let certs = Arc::clone(self);
        crate::telemetry::spawn_named("tls-watch", async move {
            let mut tick = tokio::time::interval(WATCH_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let certs = Arc::clone(&certs);
                let _ = tokio::task::spawn_blocking(move || certs.refresh()).await;
            }
        })
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// Marks a request that arrived over native TLS (HSTS is sent only then, or behind a proxy
/// that says the client used HTTPS).
#[derive(Debug, Clone, Copy)]
pub struct Secure;

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn reloads() -> IntCounterVec {
        IntCounterVec::new(Opts::new("r", "r"), &["result"]).unwrap()
    }

    fn metrics(reloads: &IntCounterVec) -> TlsMetrics {
        TlsMetrics {
            reloads: reloads.clone(),
            expiry: IntGauge::new("e", "e").unwrap(),
        }
    }

    /// A self-signed certificate for `name` valid until 1 January of `until`: (PEM, key PEM, DER).
    fn make(name: &str, until: i32) -> (String, String, Vec<u8>) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn write_pair(dir: &Path, name: &str) -> (TlsFiles, Vec<u8>) {
        let (cert, key, der) = make(name, 2031);
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        (files, der)
    }

    #[test]
    fn a_changed_pair_is_loaded_and_a_bad_one_never_replaces_the_good_one() {
        let dir = std::env::temp_dir().join(format!("spark-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (files, first) = write_pair(&dir, "one.test");
        let r = reloads();
        let m = metrics(&r);
        let certs = Certificates::load(files.clone(), m.clone()).unwrap();
        assert_eq!(certs.leaf().unwrap().as_ref(), first.as_slice());
        // 2031-01-01T00:00:00Z.
        assert_eq!(m.expiry.get(), 1_924_992_000);
        assert_eq!(certs.refresh(), Refresh::Unchanged);

        // A certificate written without its key: the pair does not match, the old one stays,
        // and the refusal is counted once however often the files are checked.
        let (other_cert, other_key, other_der) = make("two.test", 2032);
        std::fs::write(&files.cert, format!("{other_cert}\n")).unwrap();
        assert_eq!(certs.refresh(), Refresh::Refused);
        assert_eq!(certs.refresh(), Refresh::Unchanged);
        assert_eq!(r.with_label_values(&["error"]).get(), 1);
        assert_eq!(certs.leaf().unwrap().as_ref(), first.as_slice());
        assert_eq!(
            m.expiry.get(),
            1_924_992_000,
            "the refused pair's expiry is not shown"
        );

        // Garbage: refused as well.
        std::fs::write(&files.key, "not a key").unwrap();
        assert_eq!(certs.refresh(), Refresh::Refused);
        assert_eq!(certs.leaf().unwrap().as_ref(), first.as_slice());

        // The whole new pair: loaded.
        std::fs::write(&files.key, other_key).unwrap();
        assert_eq!(certs.refresh(), Refresh::Reloaded);
        assert_eq!(certs.leaf().unwrap().as_ref(), other_der.as_slice());
        // 2032-01-01T00:00:00Z.
        assert_eq!(m.expiry.get(), 1_956_528_000);
        assert_eq!(r.with_label_values(&["ok"]).get(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_bad_pair_at_start_up_is_an_error() {
        let dir = std::env::temp_dir().join(format!("spark-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (files, _) = write_pair(&dir, "one.test");
        std::fs::write(&files.cert, "").unwrap();
        assert!(matches!(
            Certificates::load(files.clone(), metrics(&reloads())),
            Err(TlsError::NoCertificate(_))
        ));
        let missing = TlsFiles {
            cert: dir.join("nope.crt"),
            key: files.key.clone(),
        };
        assert!(matches!(
            Certificates::load(missing, metrics(&reloads())),
            Err(TlsError::File { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
