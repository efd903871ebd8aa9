//! Typed configuration, read once at start-up from the environment (12-factor).
//!
//! Every variable is declared once, in [`vars::VARS`] (name, default, kind, secret, help). The
//! [`Reader`] reads only declared variables, takes their defaults and bounds from the table, and
//! records what it read, so `check-config` prints exactly the values in force (secrets as
//! `<redacted>`) without a second list to keep in step. Reading goes through the small [`Source`]
//! trait so tests hand in a map instead of mutating the process environment, and
//! [`Config::from_source`] collects *every* problem before failing, so an operator fixes a bad
//! deployment in one pass instead of one variable per restart.

mod otel;
mod parse;
mod reader;
pub mod vars;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

pub use parse::{fmt_duration, parse_duration, parse_size};
pub use vars::{
    DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_OPENAI_BASE_URL, Kind, MAX_CACHE_TTL, MAX_DURATION, VARS,
    Var,
};

use crate::auth::split_keys;
use crate::cache::{CacheConfig, CacheScope};
use crate::providers::{ProviderId, UpstreamConfig};
use crate::ratelimit::{Quotas, TrustedProxies};
use crate::resilience::{BreakerConfig, RetryPolicy};
use crate::sanitize::{Policy, PolicyMode};
use crate::telemetry::LogFormat;
use crate::telemetry::trace::TraceConfig;
use parse::is_origin;
use reader::Reader;

/// Where configuration values come from. The process environment in production, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct EnvSource;

impl Source for EnvSource {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Source for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

/// Every problem found while reading the configuration, each naming its variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// The database setting.
#[derive(Debug, Clone)]
pub enum Database {
    /// `SPARK_DATABASE_URL=none`: no managed keys, no ledger rows, no audit trail.
    Off,
    /// A URL (it may hold a password, hence secret).
    Url(SecretString),
}

/// The PEM files of `SPARK_TLS_CERT` and `SPARK_TLS_KEY` (loaded and watched by `api::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// Where the operational routes listen, when not on `bind`.
    pub ops_bind: Option<SocketAddr>,
    /// Request heads must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// Open client connections at most.
    pub max_connections: usize,
    /// Native TLS on `bind` (`SPARK_TLS_CERT`, `SPARK_TLS_KEY`).
    pub tls: Option<TlsFiles>,
    pub master_key: Option<SecretString>,
    /// User keys from `SPARK_API_KEYS` and `SPARK_API_KEYS_FILE`, not yet hashed.
    pub api_keys: Vec<SecretString>,
    /// Just the `SPARK_API_KEYS` keys (the file is re-read on rotation).
    pub inline_api_keys: Vec<SecretString>,
    pub api_keys_file: Option<PathBuf>,
    /// Lets a key-file reload leave no user key (revoking every key at once).
    pub api_keys_allow_empty: bool,
    /// Identity providers whose JWTs are accepted (`SPARK_AUTH_ISSUERS_FILE`).
    pub auth_issuers: Vec<crate::auth::jwt::IssuerSpec>,
    /// Browser origins allowed by CORS (`scheme://host[:port]`); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Failed authentications per client address and minute before it is braked (0: off).
    pub auth_failures_per_min: u32,
    pub anthropic: Option<UpstreamConfig>,
    pub openai: Option<UpstreamConfig>,
    /// The order `provider: "auto"` tries providers in.
    pub provider_order: Vec<ProviderId>,
    pub upstream_timeout: Duration,
    pub request_deadline: Duration,
    pub simulator_latency: Duration,
    pub simulator_failure_rate: f64,
    pub max_tokens_cap: u32,
    pub default_max_tokens: u32,
    pub generate_body_limit: usize,
    pub export_body_limit: usize,
    pub max_inflight: usize,
    /// A request body must arrive within this.
    pub body_read_timeout: Duration,
    /// Longest a streamed answer may last.
    pub max_stream_duration: Duration,
    pub sanitizer: Policy,
    /// User ids whose system messages replace the engine prompt (the master key always may).
    pub system_prompt_override: Vec<String>,
    pub breaker: BreakerConfig,
    pub retry: RetryPolicy,
    /// Provider capacity rules (`SPARK_PROVIDER_LIMITS`); empty: no shaping.
    pub provider_limits: Vec<crate::shaping::Rule>,
    pub queue_timeout: Duration,
    pub queue_max: usize,
    /// User ids whose whole-answer requests are batch priority.
    pub batch_users: Vec<String>,
    pub cache: CacheConfig,
    pub rate_limits: Quotas,
    pub trusted_proxies: TrustedProxies,
    pub redis_url: Option<SecretString>,
    pub redis_timeout: Duration,
    /// Where managed keys, the ledger and the audit trail live.
    pub database: Database,
    /// Model prices, built in and from `SPARK_PRICES_FILE`.
    pub prices: crate::ledger::PriceTable,
    /// Ledger rows and audit entries held while the database is down.
    pub usage_queue: usize,
    /// Spend limits per user id (`SPARK_USER_BUDGETS`).
    pub user_budgets: std::collections::HashMap<String, crate::store::keys::Budget>,
    pub sentry_dsn: Option<SecretString>,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    /// Mounts `GET /api/debug/panic`, for drills and tests of the panic path. Never in production.
    pub panic_route: bool,
    pub log_format: LogFormat,
    /// `RUST_LOG`: which log lines are written.
    pub log_filter: String,
    /// OpenTelemetry trace export, when an OTLP endpoint is configured.
    pub trace: Option<TraceConfig>,
    /// What was read, in table order, secrets redacted: `check-config` prints this.
    read: Vec<(&'static str, String)>,
}

impl Config {
    /// Reads the process environment.
    ///
    /// (The issuers of `SPARK_AUTH_ISSUERS_FILE` are read by [`read_issuers`].)
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&EnvSource)
    }

    /// Just the logging variables (`SPARK_LOG_FORMAT`, `RUST_LOG`), for setting up logging before
    /// the rest is read, so even a configuration error is written in the requested format. A bad
    /// format means pretty; a bad filter is reported by the full read.
    pub fn logging(src: &dyn Source) -> (LogFormat, String) {
        let mut r = Reader::new(src);
        let format = LogFormat::parse(&r.choice("SPARK_LOG_FORMAT")).unwrap_or(LogFormat::Pretty);
        (format, r.text("RUST_LOG").unwrap_or_default())
    }

    /// Where `/livez` answers: `SPARK_OPS_BIND` when set, else `SPARK_BIND` (for `healthcheck`,
    /// which must not fail on an unrelated variable).
    pub fn probe_bind(src: &dyn Source) -> Option<SocketAddr> {
        let mut r = Reader::new(src);
        let ops = r.parsed("SPARK_OPS_BIND", "a socket address", |s| s.parse().ok());
        ops.or_else(|| r.parsed("SPARK_BIND", "a socket address", |s| s.parse().ok()))
    }

    /// Whether the probe address of [`Config::probe_bind`] speaks HTTPS: the main listener with
    /// native TLS does; the operations listener never does.
    pub fn probe_tls(src: &dyn Source) -> bool {
        let mut r = Reader::new(src);
        r.text("SPARK_OPS_BIND").is_none() && r.text("SPARK_TLS_CERT").is_some()
    }

    /// Reads and validates every variable, reporting all problems together.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let mut r = Reader::new(src);

        let bind = r
            .parsed("SPARK_BIND", "a socket address such as 0.0.0.0:8080", |s| {
                s.parse::<SocketAddr>().ok()
            })
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        let ops_bind = r.parsed(
            "SPARK_OPS_BIND",
            "a socket address such as 0.0.0.0:9090",
            |s| s.parse::<SocketAddr>().ok(),
        );
        if ops_bind.is_some_and(|o| o == bind) {
            r.problem("SPARK_OPS_BIND: must differ from SPARK_BIND".into());
        }
        let header_read_timeout = r.duration("SPARK_HEADER_READ_TIMEOUT");
        let idle_timeout = r.duration("SPARK_IDLE_TIMEOUT");
        let max_connections = r.int("SPARK_MAX_CONNECTIONS") as usize;
        let tls = match (r.text("SPARK_TLS_CERT"), r.text("SPARK_TLS_KEY")) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            (None, None) => None,
            _ => {
                r.problem("SPARK_TLS_CERT and SPARK_TLS_KEY: set both or neither".into());
                None
            }
        };
        let master_key = r.secret("SPARK_MASTER_API_KEY");
        if master_key
            .as_ref()
            .is_some_and(|m| m.expose_secret().len() < 16)
        {
            r.problem("SPARK_MASTER_API_KEY: must be at least 16 characters".into());
        }
        let inline_api_keys: Vec<SecretString> = r
            .secret("SPARK_API_KEYS")
            .map(|s| split_keys(s.expose_secret()))
            .unwrap_or_default();
        let api_keys_file = r.text("SPARK_API_KEYS_FILE").map(PathBuf::from);
        let mut api_keys = inline_api_keys.clone();
        if let Some(path) = &api_keys_file {
            match std::fs::read_to_string(path) {
                Ok(text) => api_keys.extend(split_keys(&text)),
                Err(e) => r.problem(format!(
                    "SPARK_API_KEYS_FILE: cannot read {}: {}",
                    path.display(),
                    e.kind()
                )),
            }
        }
        for key in &api_keys {
            if let Err(why) = crate::auth::check_user_key_format(key.expose_secret()) {
                // The key itself is never echoed: only where it is and what is wrong with it.
                r.problem(format!("SPARK_API_KEYS: a key is malformed: {why}"));
            }
        }
        let api_keys_allow_empty = r.bool("SPARK_API_KEYS_ALLOW_EMPTY");
        let auth_issuers = read_issuers(&mut r);
        let auth_failures_per_min = r.int("SPARK_AUTH_FAILURES_PER_MIN") as u32;
        let cors_origins = r.list("SPARK_CORS_ORIGINS");
        for origin in &cors_origins {
            if !is_origin(origin) {
                r.problem(format!(
                    "SPARK_CORS_ORIGINS: {origin:?} is not an origin such as https://editor.example.com (no path, no wildcard)"
                ));
            }
        }
        let trusted_proxies = r
            .parsed_with("SPARK_TRUSTED_PROXIES", TrustedProxies::parse)
            .unwrap_or_default();

        let allow_insecure = r.bool("SPARK_ALLOW_INSECURE_UPSTREAM");
        let anthropic = r.upstream(
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "SPARK_ANTHROPIC_MODELS",
            allow_insecure,
        );
        let openai = r.upstream(
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "SPARK_OPENAI_MODELS",
            allow_insecure,
        );
        let provider_order = r.provider_order(anthropic.is_some(), openai.is_some());
        let upstream_timeout = r.duration("SPARK_UPSTREAM_TIMEOUT");
        let request_deadline = r.duration("SPARK_REQUEST_DEADLINE");
        let simulator_latency = r.duration("SPARK_SIMULATOR_LATENCY");
        let simulator_failure_rate = r.float("SPARK_SIMULATOR_FAILURE_RATE");

        let max_tokens_cap = r.int("SPARK_MAX_TOKENS") as u32;
        let default_max_tokens = r.int("SPARK_DEFAULT_MAX_TOKENS") as u32;
        let sanitizer = Policy {
            max_chars: r.int("SPARK_MAX_PROMPT_CHARS") as usize,
            mode: PolicyMode::parse(&r.choice("SPARK_SANITIZER_MODE")).unwrap_or(PolicyMode::Block),
            threshold: r.float("SPARK_SANITIZER_THRESHOLD"),
        };
        let generate_body_limit = r.size("SPARK_GENERATE_BODY_LIMIT");
        let export_body_limit = r.size("SPARK_EXPORT_BODY_LIMIT");
        let max_inflight = r.int("SPARK_MAX_INFLIGHT") as usize;
        let body_read_timeout = r.duration("SPARK_BODY_READ_TIMEOUT");
        let max_stream_duration = r.duration("SPARK_MAX_STREAM_DURATION");
        let system_prompt_override = r.list("SPARK_SYSTEM_PROMPT_OVERRIDE");

        let breaker = BreakerConfig {
            consecutive_failures: r.int("SPARK_BREAKER_CONSECUTIVE_FAILURES") as u32,
            failure_rate: r.float("SPARK_BREAKER_FAILURE_RATE"),
            min_calls: r.int("SPARK_BREAKER_MIN_CALLS") as u32,
            window: r.duration("SPARK_BREAKER_WINDOW"),
            open_base: r.duration("SPARK_BREAKER_OPEN"),
            open_max: r.duration("SPARK_BREAKER_OPEN_MAX"),
            half_open_probes: r.int("SPARK_BREAKER_HALF_OPEN_PROBES") as u32,
        };
        if breaker.open_max < breaker.open_base {
            r.problem("SPARK_BREAKER_OPEN_MAX must not be shorter than SPARK_BREAKER_OPEN".into());
        }
        let retry = RetryPolicy {
            attempts: r.int("SPARK_RETRY_ATTEMPTS") as u32,
            base_delay: r.duration("SPARK_RETRY_BASE_DELAY"),
            max_delay: r.duration("SPARK_RETRY_MAX_DELAY"),
        };

        let provider_limits = r
            .parsed_with("SPARK_PROVIDER_LIMITS", crate::shaping::limits::parse)
            .unwrap_or_default();
        for rule in &provider_limits {
            let upstream = match rule.provider {
                ProviderId::Anthropic => anthropic.as_ref(),
                ProviderId::OpenAi => openai.as_ref(),
                ProviderId::Simulator => None,
            };
            if let (Some(model), Some(up)) = (&rule.model, upstream)
                && !up.models.contains(model)
            {
                r.problem(format!(
                    "SPARK_PROVIDER_LIMITS: {model:?} is not in {}'s model allow-list",
                    rule.provider
                ));
            }
        }
        let queue_timeout = r.duration("SPARK_QUEUE_TIMEOUT");
        let queue_max = r.int("SPARK_QUEUE_MAX") as usize;
        let batch_users = r.list("SPARK_BATCH_USERS");

        let cache = CacheConfig {
            ttl: r.duration("SPARK_CACHE_TTL"),
            max_bytes: r.size("SPARK_CACHE_MAX_BYTES") as u64,
            scope: CacheScope::parse(&r.choice("SPARK_CACHE_SCOPE")).unwrap_or(CacheScope::Global),
            hmac_key: r.secret("SPARK_CACHE_HMAC_KEY"),
        };
        if cache
            .hmac_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().len() < 32)
        {
            r.problem("SPARK_CACHE_HMAC_KEY: must be at least 32 characters".into());
        }
        let rate_limits = Quotas {
            generate: r.quota("SPARK_RATE_LIMIT_GENERATE"),
            export: r.quota("SPARK_RATE_LIMIT_EXPORT"),
            openai: r.quota("SPARK_RATE_LIMIT_OPENAI"),
            anthropic: r.quota("SPARK_RATE_LIMIT_ANTHROPIC"),
            overrides: r
                .parsed_with("SPARK_RATE_LIMIT_OVERRIDES", Quotas::parse_overrides)
                .unwrap_or_default(),
            master_exempt: r.bool("SPARK_RATE_LIMIT_MASTER_EXEMPT"),
        };
        let redis_url = r.secret("REDIS_URL");
        let redis_timeout = r.duration("SPARK_REDIS_TIMEOUT");
        let data_dir = PathBuf::from(r.text("SPARK_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let database = match r.secret("SPARK_DATABASE_URL") {
            Some(url) if url.expose_secret().trim() == "none" => Database::Off,
            Some(url) => {
                let u = url.expose_secret().trim();
                if !(u.starts_with("postgres://")
                    || u.starts_with("postgresql://")
                    || u.starts_with("sqlite://"))
                {
                    r.problem(
                        "SPARK_DATABASE_URL: expected postgres://…, postgresql://…, sqlite://PATH or none"
                            .into(),
                    );
                }
                Database::Url(url)
            }
            None => Database::Url(SecretString::from(crate::store::default_url(&data_dir))),
        };
        let prices = match r.text("SPARK_PRICES_FILE") {
            None => crate::ledger::PriceTable::default(),
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => crate::ledger::PriceTable::with_overrides(&text).unwrap_or_else(|e| {
                    r.problem(format!("SPARK_PRICES_FILE: {path}: {e}"));
                    crate::ledger::PriceTable::default()
                }),
                Err(e) => {
                    r.problem(format!(
                        "SPARK_PRICES_FILE: cannot read {path}: {}",
                        e.kind()
                    ));
                    crate::ledger::PriceTable::default()
                }
            },
        };
        let usage_queue = r.int("SPARK_USAGE_QUEUE") as usize;
        let user_budgets = r
            .parsed_with("SPARK_USER_BUDGETS", crate::budget::parse_user_budgets)
            .unwrap_or_default();
        let sentry_dsn = r.secret("SENTRY_DSN");
        let shutdown_delay = r.duration("SPARK_SHUTDOWN_DELAY");
        let shutdown_grace = r.duration("SPARK_SHUTDOWN_GRACE");
        let panic_route = r.bool("SPARK_ENABLE_PANIC_ROUTE");
        let log_format =
            LogFormat::parse(&r.choice("SPARK_LOG_FORMAT")).unwrap_or(LogFormat::Pretty);
        let log_filter = r.text("RUST_LOG").unwrap_or_default();
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            r.problem(format!(
                "RUST_LOG: {log_filter:?} is not a valid log filter"
            ));
        }

        let trace = otel::read_trace(&mut r);

        if request_deadline < upstream_timeout {
            r.problem(format!(
                "SPARK_REQUEST_DEADLINE ({}) must not be shorter than SPARK_UPSTREAM_TIMEOUT ({})",
                fmt_duration(request_deadline),
                fmt_duration(upstream_timeout)
            ));
        }
        if default_max_tokens > max_tokens_cap {
            r.problem(format!(
                "SPARK_DEFAULT_MAX_TOKENS ({default_max_tokens}) must not exceed SPARK_MAX_TOKENS ({max_tokens_cap})"
            ));
        }
        if master_key.is_none()
            && api_keys.is_empty()
            && api_keys_file.is_none()
            && auth_issuers.is_empty()
            && !bind.ip().is_loopback()
        {
            r.problem(format!(
                "SPARK_BIND: refusing to listen on {bind} with authentication off; set SPARK_MASTER_API_KEY or SPARK_API_KEYS, or bind a loopback address"
            ));
        }

        if !r.problems.is_empty() {
            return Err(ConfigError {
                problems: r.problems,
            });
        }
        Ok(Config {
            bind,
            ops_bind,
            header_read_timeout,
            idle_timeout,
            max_connections,
            tls,
            master_key,
            api_keys,
            inline_api_keys,
            api_keys_file,
            api_keys_allow_empty,
            auth_issuers,
            cors_origins,
            auth_failures_per_min,
            anthropic,
            openai,
            provider_order,
            upstream_timeout,
            request_deadline,
            simulator_latency,
            simulator_failure_rate,
            max_tokens_cap,
            default_max_tokens,
            generate_body_limit,
            export_body_limit,
            max_inflight,
            body_read_timeout,
            max_stream_duration,
            sanitizer,
            system_prompt_override,
            breaker,
            retry,
            provider_limits,
            queue_timeout,
            queue_max,
            batch_users,
            cache,
            rate_limits,
            trusted_proxies,
            redis_url,
            redis_timeout,
            database,
            prices,
            usage_queue,
            user_budgets,
            sentry_dsn,
            shutdown_delay,
            shutdown_grace,
            panic_route,
            log_format,
            log_filter,
            trace,
            read: r.read,
        })
    }

    /// Problems that do not stop the gateway but an operator must hear about (start-up and
    /// `check-config` print them).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(w) = crate::auth::weak_secret_warnings(&self.api_keys) {
            out.push(format!("SPARK_API_KEYS: {w}"));
        }
        if self.redis_url.is_some() && self.cache.hmac_key.is_none() && !self.cache.ttl.is_zero() {
            out.push(
                "SPARK_CACHE_HMAC_KEY is unset: replicas sharing REDIS_URL will not share cached answers"
                    .to_owned(),
            );
        }
        out
    }

    /// Authentication is off only when no key source of any kind is configured. Decided once:
    /// a key file that later empties never turns it off.
    pub fn auth_enabled(&self) -> bool {
        self.master_key.is_some()
            || !self.api_keys.is_empty()
            || self.api_keys_file.is_some()
            || !self.auth_issuers.is_empty()
    }

    /// The effective configuration as `NAME=value` pairs in the table's order, every secret
    /// replaced by `<redacted>`, followed by what was derived (`AUTH`).
    pub fn redacted(&self) -> Vec<(&'static str, String)> {
        let mut out = self.read.clone();
        out.push((
            "AUTH",
            if self.auth_enabled() { "on" } else { "off" }.into(),
        ));
        out
    }
}

#[cfg(test)]
mod tests;

/// `SPARK_AUTH_ISSUERS_FILE`: read and checked whole; any problem stops the start (an issuer
/// half-configured would let the wrong people in or lock the right ones out).
fn read_issuers(r: &mut Reader) -> Vec<crate::auth::jwt::IssuerSpec> {
    let Some(path) = r.text("SPARK_AUTH_ISSUERS_FILE").map(PathBuf::from) else {
        return Vec::new();
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            r.problem(format!(
                "SPARK_AUTH_ISSUERS_FILE: cannot read {}: {}",
                path.display(),
                e.kind()
            ));
            return Vec::new();
        }
    };
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let env = |name: &str| r.named_elsewhere(name);
    match crate::auth::jwt::spec::parse(&text, json, &env) {
        Ok(specs) => specs,
        Err(problems) => {
            for p in problems {
                r.problem(format!("SPARK_AUTH_ISSUERS_FILE ({}): {p}", path.display()));
            }
            Vec::new()
        }
    }
}
