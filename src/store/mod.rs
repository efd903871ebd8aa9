//! The gateway's database: managed keys, the usage ledger and the audit trail.
//!
//! One schema with migrations embedded in the binary (`migrations/`), two backends chosen by the
//! URL: PostgreSQL for deployments with several replicas, SQLite for one (the default, a file
//! under `SPARK_DATA_DIR`, so a fresh checkout needs no setup). Queries go through sqlx's `Any`
//! driver so one SQL text serves both: the schema uses only types both have (`BIGINT`, `TEXT`),
//! times are epoch milliseconds, money is integer nano-dollars so sums are exact, and
//! placeholders are `$n`, which SQLite reads as positional too.
//!
//! The pool is lazy: opening the store makes no connection, so a database that is down at
//! start-up delays the ledger and the managed keys, never the gateway. Migrations run on first
//! use ([`Store::ready`]) and again after a failure. Nothing here knows HTTP.

pub mod audit;
pub mod keys;
pub mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

/// Why a store operation failed. Messages never hold the database URL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database URL is not usable: {0}")]
    Url(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("the database schema could not be migrated: {0}")]
    Migrate(String),
    #[error("not found")]
    NotFound,
    #[error("a stored row is malformed: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(e.to_string())
            }
            // Database errors carry the server's message (never our URL); I/O, TLS and pool
            // errors mean the database could not be reached.
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Which database the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A handle on the database; a cheap clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Kept for PostgreSQL's notification listener, which needs a connection of its own
    /// outside the pool. Never printed (it may hold a password).
    url: Arc<str>,
    /// Set once the migrations have run in this process.
    migrated: Arc<AtomicBool>,
    /// One migration at a time in this process (the database serializes replicas).
    migrating: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The URL the default SQLite file has, under `data_dir`.
pub fn default_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("spark.db").display())
}

impl Store {
    /// Opens a pool on `url` (`postgres://…`, `postgresql://…` or `sqlite://PATH`) without
    /// connecting, on the current Tokio runtime. A SQLite file and its directory are created
    /// when missing.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        // The pool starts a reaper task; outside a runtime sqlx would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Url(
                "the store must be opened inside a Tokio runtime".to_owned(),
            ));
        }
        install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let file = path.split('?').next().unwrap_or(path);
            if file.is_empty() {
                return Err(StoreError::Url("sqlite:// needs a file path".to_owned()));
            }
            if let Some(dir) = std::path::Path::new(file).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Url(format!("cannot create {}: {}", dir.display(), e.kind()))
                })?;
            }
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            return Err(StoreError::Url(
                "expected postgres://…, postgresql://… or sqlite://PATH".to_owned(),
            ));
        };
        let sqlite = backend == Backend::Sqlite;
        let pool = AnyPoolOptions::new()
            // SQLite has one writer whatever the pool; PostgreSQL connections are a shared
            // resource of every replica, and the gateway's own use is a batch writer, a key
            // poller and the admin API.
            .max_connections(if sqlite { 4 } else { 8 })
            .min_connections(0)
            // Callers that reach the database (admin and usage APIs, the writer) fail fast
            // rather than queue behind a database that is down.
            .acquire_timeout(Duration::from_secs(3))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets readers (usage API) run beside the batch writer; NORMAL is
                        // durable across process crashes, which is what a ledger needs here.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 5000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(&url)
            .map_err(|e| StoreError::Url(redact_url_error(&e)))?;
        Ok(Store {
            pool,
            backend,
            url: Arc::from(url.as_str()),
            migrated: Arc::new(AtomicBool::new(false)),
            migrating: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that writes. SQLite's default (deferred) transaction takes the write lock
    /// only at its first write, and if another connection wrote in between it fails at once
    /// with `SQLITE_BUSY` whatever the busy timeout; `BEGIN IMMEDIATE` takes the lock first, so
    /// writers queue under the busy timeout instead. PostgreSQL locks rows as it goes.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Applies the embedded migrations (idempotent: applied ones are skipped, a changed one is
    /// an error). Concurrent callers in this process wait for one run.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let _one = self.migrating.lock().await;
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// Ok once the schema is in place: migrates on first use, and after a failed attempt.
    pub async fn ready(&self) -> Result<(), StoreError> {
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        self.migrate().await
    }

    /// Whether the database answers a trivial query now.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// sqlx's URL errors can quote the URL, password included; keep only the kind of problem.
fn redact_url_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "the URL could not be parsed".to_owned(),
        other => format!("{}", other)
            .split("://")
            .next()
            .unwrap_or("invalid URL")
            .to_owned(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Nano-dollars as dollars, for the API.
pub fn usd(nusd: i64) -> f64 {
    nusd as f64 / 1e9
}

/// Dollars as nano-dollars (rounded; negative and non-finite amounts are zero).
pub fn nusd(usd: f64) -> i64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e9).round().min(i64::MAX as f64) as i64
    } else {
        0
    }
}

/// An RFC 3339 UTC time from epoch milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Epoch milliseconds from an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_converts_both_ways_exactly_enough() {
        assert_eq!(nusd(0.000_003), 3_000);
        assert_eq!(nusd(-1.0), 0);
        assert_eq!(nusd(f64::NAN), 0);
        assert!((usd(nusd(12.345_678_9)) - 12.345_678_9).abs() < 1e-12);
    }

    #[test]
    fn times_round_trip_through_rfc3339() {
        let ms = 1_764_547_200_123;
        let text = rfc3339(ms);
        assert_eq!(text, "2025-12-01T00:00:00.123Z");
        assert_eq!(parse_rfc3339(&text), Some(ms));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn opening_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            Store::open("postgres://u@127.0.0.1:1/x"),
            Err(StoreError::Url(_))
        ));
    }

    #[tokio::test]
    async fn urls_are_checked_and_errors_hold_no_secret() {
        assert!(matches!(
            Store::open("mysql://u:hunter2@db/x"),
            Err(StoreError::Url(_))
        ));
        assert!(matches!(Store::open("sqlite://"), Err(StoreError::Url(_))));
        let e = Store::open("postgres://u:hunter2@[::1/x").err();
        if let Some(e) = e {
            assert!(!e.to_string().contains("hunter2"));
        }
    }
}
