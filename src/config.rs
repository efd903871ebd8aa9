//! Typed configuration, read once at start-up from the environment (12-factor).
//!
//! Everything the service can be told lives here, with its default in code. Reading goes through
//! the small [`Source`] trait so tests hand in a map instead of mutating the process environment,
//! and [`Config::from_source`] collects *every* problem before failing, so an operator fixes a bad
//! deployment in one pass instead of one variable per restart. Secrets are `SecretString`s from the
//! moment they are read; [`Config::redacted`] is the only way the config is ever printed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::auth::split_keys;
use crate::cache::{CacheConfig, CacheScope};
use crate::providers::{ProviderId, UpstreamConfig};
use crate::ratelimit::{Quota, Quotas, TrustedProxies};
use crate::resilience::{BreakerConfig, RetryPolicy};
use crate::sanitize::{Policy, PolicyMode};
use crate::telemetry::LogFormat;

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

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub master_key: Option<SecretString>,
    /// User keys from `SPARK_API_KEYS` and `SPARK_API_KEYS_FILE`, not yet hashed.
    pub api_keys: Vec<SecretString>,
    /// Just the `SPARK_API_KEYS` keys (the file is re-read on rotation).
    pub inline_api_keys: Vec<SecretString>,
    pub api_keys_file: Option<PathBuf>,
    /// Lets a key-file reload leave no user key (revoking every key at once).
    pub api_keys_allow_empty: bool,
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
    pub sanitizer: Policy,
    /// User ids whose system messages replace the engine prompt (the master key always may).
    pub system_prompt_override: Vec<String>,
    pub breaker: BreakerConfig,
    pub retry: RetryPolicy,
    pub cache: CacheConfig,
    pub rate_limits: Quotas,
    pub trusted_proxies: TrustedProxies,
    pub redis_url: Option<SecretString>,
    pub redis_timeout: Duration,
    pub sentry_dsn: Option<SecretString>,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    /// Mounts `GET /api/debug/panic`, for drills and tests of the panic path. Never in production.
    pub panic_route: bool,
    pub log_format: LogFormat,
}

pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
const DEFAULT_ANTHROPIC_MODELS: &str = "claude-sonnet-4-5,claude-haiku-4-5,claude-opus-4-1";
const DEFAULT_OPENAI_MODELS: &str = "gpt-4.1,gpt-4.1-mini,gpt-4o,gpt-4o-mini,o4-mini";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&EnvSource)
    }

    /// Reads and validates every variable, reporting all problems together.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let mut r = Reader {
            src,
            problems: Vec::new(),
        };

        let bind = r.parse(
            "SPARK_BIND",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            "a socket address such as 0.0.0.0:8080",
            |s| s.parse::<SocketAddr>().ok(),
        );
        let master_key = r.secret("SPARK_MASTER_API_KEY");
        let mut api_keys: Vec<SecretString> = r
            .string("SPARK_API_KEYS")
            .map(|s| split_keys(&s))
            .unwrap_or_default();
        let inline_api_keys = api_keys.clone();
        let api_keys_file = r.string("SPARK_API_KEYS_FILE").map(PathBuf::from);
        let cors_origins: Vec<String> = r
            .string("SPARK_CORS_ORIGINS")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        for origin in &cors_origins {
            if !is_origin(origin) {
                r.problem(format!(
                    "SPARK_CORS_ORIGINS: {origin:?} is not an origin such as https://editor.example.com (no path, no wildcard)"
                ));
            }
        }
        let auth_failures_per_min = r.parse(
            "SPARK_AUTH_FAILURES_PER_MIN",
            30,
            "a whole number from 0 (off) to 1000000",
            |s| s.parse::<u32>().ok().filter(|v| *v <= 1_000_000),
        );
        let api_keys_allow_empty =
            r.parse("SPARK_API_KEYS_ALLOW_EMPTY", false, "true or false", |s| {
                s.parse::<bool>().ok()
            });
        if let Some(path) = &api_keys_file {
            match std::fs::read_to_string(path) {
                Ok(text) => api_keys.extend(split_keys(&text)),
                Err(e) => r.problem(format!(
                    "SPARK_API_KEYS_FILE: cannot read {}: {e}",
                    path.display()
                )),
            }
        }
        for key in &api_keys {
            if let Err(why) = crate::auth::check_user_key_format(key.expose_secret()) {
                // The key itself is never echoed: only where it is and what is wrong with it.
                r.problem(format!("SPARK_API_KEYS: a key is malformed: {why}"));
            }
        }
        if master_key
            .as_ref()
            .is_some_and(|m| m.expose_secret().len() < 16)
        {
            r.problem("SPARK_MASTER_API_KEY: must be at least 16 characters".into());
        }

        let anthropic = r.upstream(
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            DEFAULT_ANTHROPIC_BASE_URL,
            "SPARK_ANTHROPIC_MODELS",
            DEFAULT_ANTHROPIC_MODELS,
        );
        let openai = r.upstream(
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            DEFAULT_OPENAI_BASE_URL,
            "SPARK_OPENAI_MODELS",
            DEFAULT_OPENAI_MODELS,
        );

        let provider_order = match r.string("SPARK_PROVIDER_ORDER") {
            Some(list) => {
                let mut order = Vec::new();
                for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match ProviderId::parse(name) {
                        Some(ProviderId::Anthropic) if anthropic.is_none() => r.problem(
                            "SPARK_PROVIDER_ORDER: names anthropic, but ANTHROPIC_API_KEY is not set".into(),
                        ),
                        Some(ProviderId::OpenAi) if openai.is_none() => r.problem(
                            "SPARK_PROVIDER_ORDER: names openai, but OPENAI_API_KEY is not set".into(),
                        ),
                        Some(p) if order.contains(&p) => {
                            r.problem(format!("SPARK_PROVIDER_ORDER: {name} is listed twice"))
                        }
                        Some(p) => order.push(p),
                        None => r.problem(format!(
                            "SPARK_PROVIDER_ORDER: unknown provider {name:?}; expected anthropic, openai or simulator"
                        )),
                    }
                }
                if order.is_empty() {
                    r.problem("SPARK_PROVIDER_ORDER: must name at least one provider".into());
                }
                order
            }
            None => {
                let mut order = Vec::new();
                if anthropic.is_some() {
                    order.push(ProviderId::Anthropic);
                }
                if openai.is_some() {
                    order.push(ProviderId::OpenAi);
                }
                if order.is_empty() {
                    order.push(ProviderId::Simulator);
                }
                order
            }
        };

        let upstream_timeout = r.duration("SPARK_UPSTREAM_TIMEOUT", Duration::from_secs(20));
        let request_deadline = r.duration("SPARK_REQUEST_DEADLINE", Duration::from_secs(30));
        let simulator_latency = r.duration("SPARK_SIMULATOR_LATENCY", Duration::ZERO);
        let simulator_failure_rate = r.parse(
            "SPARK_SIMULATOR_FAILURE_RATE",
            0.0,
            "a number from 0 to 1",
            |s| s.parse::<f64>().ok().filter(|v| (0.0..=1.0).contains(v)),
        );
        let max_tokens_cap = r.parse(
            "SPARK_MAX_TOKENS",
            4096,
            "a whole number from 1 to 200000",
            |s| s.parse::<u32>().ok().filter(|v| (1..=200_000).contains(v)),
        );
        let default_max_tokens = r.parse(
            "SPARK_DEFAULT_MAX_TOKENS",
            2048,
            "a whole number from 1 to 200000",
            |s| s.parse::<u32>().ok().filter(|v| (1..=200_000).contains(v)),
        );
        let max_prompt_chars = r.parse(
            "SPARK_MAX_PROMPT_CHARS",
            10_000,
            "a whole number from 1 to 1000000",
            |s| {
                s.parse::<usize>()
                    .ok()
                    .filter(|v| (1..=1_000_000).contains(v))
            },
        );
        let generate_body_limit = r.size("SPARK_GENERATE_BODY_LIMIT", 64 * 1024);
        let export_body_limit = r.size("SPARK_EXPORT_BODY_LIMIT", 512 * 1024);
        let max_inflight = r.parse(
            "SPARK_MAX_INFLIGHT",
            1024,
            "a whole number of at least 1",
            |s| s.parse::<usize>().ok().filter(|v| *v >= 1),
        );
        let mode = r.parse(
            "SPARK_SANITIZER_MODE",
            PolicyMode::Block,
            "block, warn or off",
            PolicyMode::parse,
        );
        let threshold = r.parse(
            "SPARK_SANITIZER_THRESHOLD",
            0.5,
            "a number from 0 to 1",
            |s| s.parse::<f64>().ok().filter(|v| (0.0..=1.0).contains(v)),
        );
        let log_format = r.parse(
            "SPARK_LOG_FORMAT",
            LogFormat::Pretty,
            "json or pretty",
            LogFormat::parse,
        );

        let defaults = BreakerConfig::default();
        let breaker = BreakerConfig {
            consecutive_failures: r.parse(
                "SPARK_BREAKER_CONSECUTIVE_FAILURES",
                defaults.consecutive_failures,
                "a whole number of at least 1",
                |s| s.parse::<u32>().ok().filter(|v| *v >= 1),
            ),
            failure_rate: r.parse(
                "SPARK_BREAKER_FAILURE_RATE",
                defaults.failure_rate,
                "a number above 0 and at most 1",
                |s| s.parse::<f64>().ok().filter(|v| *v > 0.0 && *v <= 1.0),
            ),
            min_calls: r.parse(
                "SPARK_BREAKER_MIN_CALLS",
                defaults.min_calls,
                "a whole number of at least 1",
                |s| s.parse::<u32>().ok().filter(|v| *v >= 1),
            ),
            window: r.duration("SPARK_BREAKER_WINDOW", defaults.window),
            open_base: r.duration("SPARK_BREAKER_OPEN", defaults.open_base),
            open_max: r.duration("SPARK_BREAKER_OPEN_MAX", defaults.open_max),
            half_open_probes: r.parse(
                "SPARK_BREAKER_HALF_OPEN_PROBES",
                defaults.half_open_probes,
                "a whole number of at least 1",
                |s| s.parse::<u32>().ok().filter(|v| *v >= 1),
            ),
        };
        if breaker.open_max < breaker.open_base {
            r.problem("SPARK_BREAKER_OPEN_MAX must not be shorter than SPARK_BREAKER_OPEN".into());
        }
        let retry_defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            attempts: r.parse(
                "SPARK_RETRY_ATTEMPTS",
                retry_defaults.attempts,
                "a whole number from 1 to 10",
                |s| s.parse::<u32>().ok().filter(|v| (1..=10).contains(v)),
            ),
            base_delay: r.duration("SPARK_RETRY_BASE_DELAY", retry_defaults.base_delay),
            max_delay: r.duration("SPARK_RETRY_MAX_DELAY", retry_defaults.max_delay),
        };
        let cache = CacheConfig {
            ttl: r.duration_up_to("SPARK_CACHE_TTL", Duration::from_secs(3600), MAX_CACHE_TTL),
            max_bytes: r.size("SPARK_CACHE_MAX_BYTES", 256 << 20) as u64,
            scope: r.parse(
                "SPARK_CACHE_SCOPE",
                CacheScope::Global,
                "global or key",
                CacheScope::parse,
            ),
            hmac_key: r.secret("SPARK_CACHE_HMAC_KEY"),
        };
        if cache
            .hmac_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().len() < 32)
        {
            r.problem("SPARK_CACHE_HMAC_KEY: must be at least 32 characters".into());
        }
        let system_prompt_override: Vec<String> = r
            .string("SPARK_SYSTEM_PROMPT_OVERRIDE")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();

        let quota = |r: &mut Reader, name: &str, default: &str| {
            r.parse(
                name,
                Quota::parse(default).unwrap_or(Quota {
                    limit: 60,
                    period: Duration::from_secs(60),
                    burst: 60,
                }),
                "a quota such as 10/min or 600/min,burst=60",
                Quota::parse,
            )
        };
        let rate_limits = Quotas {
            generate: quota(&mut r, "SPARK_RATE_LIMIT_GENERATE", "60/min"),
            export: quota(&mut r, "SPARK_RATE_LIMIT_EXPORT", "120/min"),
            openai: quota(&mut r, "SPARK_RATE_LIMIT_OPENAI", "60/min"),
            overrides: match r.string("SPARK_RATE_LIMIT_OVERRIDES") {
                None => Default::default(),
                Some(s) => Quotas::parse_overrides(&s).unwrap_or_else(|why| {
                    r.problem(format!("SPARK_RATE_LIMIT_OVERRIDES: {why}"));
                    Default::default()
                }),
            },
            master_exempt: r.parse(
                "SPARK_RATE_LIMIT_MASTER_EXEMPT",
                true,
                "true or false",
                |s| s.parse::<bool>().ok(),
            ),
        };
        let trusted_proxies = match r.string("SPARK_TRUSTED_PROXIES") {
            None => TrustedProxies::default(),
            Some(s) => TrustedProxies::parse(&s).unwrap_or_else(|why| {
                r.problem(format!("SPARK_TRUSTED_PROXIES: {why}"));
                TrustedProxies::default()
            }),
        };
        let redis_url = r.secret("REDIS_URL");
        let redis_timeout = r.duration("SPARK_REDIS_TIMEOUT", Duration::from_millis(100));
        let sentry_dsn = r.secret("SENTRY_DSN");
        let shutdown_delay = r.duration("SPARK_SHUTDOWN_DELAY", Duration::ZERO);
        let shutdown_grace = r.duration("SPARK_SHUTDOWN_GRACE", Duration::from_secs(25));
        let panic_route = r.parse("SPARK_ENABLE_PANIC_ROUTE", false, "true or false", |s| {
            s.parse::<bool>().ok()
        });

        if request_deadline < upstream_timeout {
            r.problem(format!(
                "SPARK_REQUEST_DEADLINE ({request_deadline:?}) must not be shorter than SPARK_UPSTREAM_TIMEOUT ({upstream_timeout:?})"
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
            master_key,
            api_keys,
            inline_api_keys,
            api_keys_file,
            api_keys_allow_empty,
            auth_failures_per_min,
            cors_origins,
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
            system_prompt_override,
            sanitizer: Policy {
                mode,
                threshold,
                max_chars: max_prompt_chars,
            },
            breaker,
            retry,
            cache,
            rate_limits,
            trusted_proxies,
            redis_url,
            redis_timeout,
            sentry_dsn,
            shutdown_delay,
            shutdown_grace,
            panic_route,
            log_format,
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
        self.master_key.is_some() || !self.api_keys.is_empty() || self.api_keys_file.is_some()
    }

    /// The effective configuration as `NAME=value` pairs, every secret replaced by `<redacted>`.
    pub fn redacted(&self) -> Vec<(&'static str, String)> {
        fn secret(s: &Option<SecretString>) -> String {
            match s {
                Some(_) => "<redacted>".into(),
                None => "<unset>".into(),
            }
        }
        let upstream = |u: &Option<UpstreamConfig>| {
            (
                secret(&u.as_ref().map(|u| u.api_key.clone())),
                u.as_ref()
                    .map(|u| u.base_url.clone())
                    .unwrap_or_else(|| "<unset>".into()),
                u.as_ref()
                    .map(|u| u.models.join(","))
                    .unwrap_or_else(|| "<unset>".into()),
            )
        };
        let (ak, au, am) = upstream(&self.anthropic);
        let (ok, ou, om) = upstream(&self.openai);
        vec![
            ("SPARK_BIND", self.bind.to_string()),
            ("SPARK_MASTER_API_KEY", secret(&self.master_key)),
            (
                "SPARK_API_KEYS",
                format!("<{} keys redacted>", self.api_keys.len()),
            ),
            (
                "SPARK_API_KEYS_FILE",
                self.api_keys_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "<unset>".into()),
            ),
            ("SPARK_CORS_ORIGINS", self.cors_origins.join(",")),
            (
                "SPARK_AUTH_FAILURES_PER_MIN",
                self.auth_failures_per_min.to_string(),
            ),
            (
                "SPARK_API_KEYS_ALLOW_EMPTY",
                self.api_keys_allow_empty.to_string(),
            ),
            (
                "AUTH",
                if self.auth_enabled() { "on" } else { "off" }.into(),
            ),
            ("ANTHROPIC_API_KEY", ak),
            ("ANTHROPIC_BASE_URL", au),
            ("SPARK_ANTHROPIC_MODELS", am),
            ("OPENAI_API_KEY", ok),
            ("OPENAI_BASE_URL", ou),
            ("SPARK_OPENAI_MODELS", om),
            (
                "SPARK_PROVIDER_ORDER",
                self.provider_order
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "SPARK_UPSTREAM_TIMEOUT",
                fmt_duration(self.upstream_timeout),
            ),
            (
                "SPARK_REQUEST_DEADLINE",
                fmt_duration(self.request_deadline),
            ),
            (
                "SPARK_SIMULATOR_LATENCY",
                fmt_duration(self.simulator_latency),
            ),
            (
                "SPARK_SIMULATOR_FAILURE_RATE",
                self.simulator_failure_rate.to_string(),
            ),
            ("SPARK_MAX_TOKENS", self.max_tokens_cap.to_string()),
            (
                "SPARK_DEFAULT_MAX_TOKENS",
                self.default_max_tokens.to_string(),
            ),
            (
                "SPARK_MAX_PROMPT_CHARS",
                self.sanitizer.max_chars.to_string(),
            ),
            (
                "SPARK_GENERATE_BODY_LIMIT",
                format!("{}B", self.generate_body_limit),
            ),
            (
                "SPARK_EXPORT_BODY_LIMIT",
                format!("{}B", self.export_body_limit),
            ),
            ("SPARK_MAX_INFLIGHT", self.max_inflight.to_string()),
            ("SPARK_SANITIZER_MODE", self.sanitizer.mode.as_str().into()),
            (
                "SPARK_BREAKER_CONSECUTIVE_FAILURES",
                self.breaker.consecutive_failures.to_string(),
            ),
            (
                "SPARK_BREAKER_FAILURE_RATE",
                self.breaker.failure_rate.to_string(),
            ),
            (
                "SPARK_BREAKER_MIN_CALLS",
                self.breaker.min_calls.to_string(),
            ),
            ("SPARK_BREAKER_WINDOW", fmt_duration(self.breaker.window)),
            ("SPARK_BREAKER_OPEN", fmt_duration(self.breaker.open_base)),
            (
                "SPARK_BREAKER_OPEN_MAX",
                fmt_duration(self.breaker.open_max),
            ),
            (
                "SPARK_BREAKER_HALF_OPEN_PROBES",
                self.breaker.half_open_probes.to_string(),
            ),
            ("SPARK_RETRY_ATTEMPTS", self.retry.attempts.to_string()),
            (
                "SPARK_RETRY_BASE_DELAY",
                fmt_duration(self.retry.base_delay),
            ),
            ("SPARK_RETRY_MAX_DELAY", fmt_duration(self.retry.max_delay)),
            ("SPARK_CACHE_TTL", fmt_duration(self.cache.ttl)),
            (
                "SPARK_CACHE_MAX_BYTES",
                format!("{}B", self.cache.max_bytes),
            ),
            ("SPARK_CACHE_SCOPE", self.cache.scope.as_str().into()),
            ("SPARK_CACHE_HMAC_KEY", secret(&self.cache.hmac_key)),
            (
                "SPARK_SYSTEM_PROMPT_OVERRIDE",
                format!("<{} users>", self.system_prompt_override.len()),
            ),
            (
                "SPARK_RATE_LIMIT_GENERATE",
                self.rate_limits.generate.to_string(),
            ),
            (
                "SPARK_RATE_LIMIT_EXPORT",
                self.rate_limits.export.to_string(),
            ),
            (
                "SPARK_RATE_LIMIT_OPENAI",
                self.rate_limits.openai.to_string(),
            ),
            (
                "SPARK_RATE_LIMIT_OVERRIDES",
                format!("<{} users>", self.rate_limits.overrides.len()),
            ),
            (
                "SPARK_RATE_LIMIT_MASTER_EXEMPT",
                self.rate_limits.master_exempt.to_string(),
            ),
            ("REDIS_URL", secret(&self.redis_url)),
            ("SPARK_REDIS_TIMEOUT", fmt_duration(self.redis_timeout)),
            ("SENTRY_DSN", secret(&self.sentry_dsn)),
            ("SPARK_SHUTDOWN_DELAY", fmt_duration(self.shutdown_delay)),
            ("SPARK_SHUTDOWN_GRACE", fmt_duration(self.shutdown_grace)),
            ("SPARK_ENABLE_PANIC_ROUTE", self.panic_route.to_string()),
            (
                "SPARK_SANITIZER_THRESHOLD",
                self.sanitizer.threshold.to_string(),
            ),
            ("SPARK_LOG_FORMAT", self.log_format.as_str().into()),
        ]
    }
}

struct Reader<'a> {
    src: &'a dyn Source,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    /// A set, non-blank value.
    fn string(&self, name: &str) -> Option<String> {
        self.src
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn secret(&self, name: &str) -> Option<SecretString> {
        self.string(name).map(SecretString::from)
    }

    /// Parses `name`, or gives `default` when it is unset. A value that does not parse is
    /// recorded as a problem and the default stands in, so reading goes on and reports the next
    /// problem too.
    fn parse<T>(
        &mut self,
        name: &str,
        default: T,
        expected: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> T {
        let Some(raw) = self.string(name) else {
            return default;
        };
        match f(&raw) {
            Some(v) => v,
            None => {
                self.problem(format!("{name}: {raw:?} is not {expected}"));
                default
            }
        }
    }

    /// A duration of at most [`MAX_DURATION`]: a larger one would overflow `Instant + Duration`
    /// on the request path, and no timeout of a request gateway needs more than a day.
    fn duration(&mut self, name: &str, default: Duration) -> Duration {
        self.duration_up_to(name, default, MAX_DURATION)
    }

    fn duration_up_to(&mut self, name: &str, default: Duration, max: Duration) -> Duration {
        let expected = format!(
            "a duration such as 500ms, 30s, 5m or 1h, at most {}",
            fmt_duration(max)
        );
        self.parse(name, default, &expected, |s| {
            parse_duration(s).filter(|d| *d <= max)
        })
    }

    fn size(&mut self, name: &str, default: usize) -> usize {
        self.parse(name, default, "a size such as 512KiB or 256MiB", parse_size)
    }

    fn upstream(
        &mut self,
        key_var: &str,
        url_var: &str,
        default_url: &str,
        models_var: &str,
        default_models: &str,
    ) -> Option<UpstreamConfig> {
        let key = self.secret(key_var)?;
        let base_url = self
            .string(url_var)
            .unwrap_or_else(|| default_url.to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            self.problem(format!("{url_var}: {base_url:?} is not an http(s) URL"));
        } else if base_url.starts_with("http://") && !is_loopback_url(&base_url) {
            // The provider key would cross the network in clear text.
            let allowed = self
                .string("SPARK_ALLOW_INSECURE_UPSTREAM")
                .is_some_and(|v| v == "true");
            if !allowed {
                self.problem(format!(
                    "{url_var}: plain http:// to a non-loopback host sends the provider key in clear text; use https:// or set SPARK_ALLOW_INSECURE_UPSTREAM=true"
                ));
            }
        }
        let models: Vec<String> = self
            .string(models_var)
            .unwrap_or_else(|| default_models.to_owned())
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        if models.is_empty() {
            self.problem(format!("{models_var}: must list at least one model"));
        }
        Some(UpstreamConfig {
            api_key: key,
            base_url,
            models,
        })
    }
}

/// `scheme://host[:port]` with nothing after it: what a browser sends as `Origin`.
fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// Whether an `http://` URL names a loopback host (`localhost`, `127.0.0.0/8`, `[::1]`).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The longest duration any variable accepts (`SPARK_CACHE_TTL`: [`MAX_CACHE_TTL`]).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// `500ms`, `30s`, `5m`, `1h`; a bare `0` means zero.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// `512KiB`, `256MiB`, `1GiB`, `100B` or a bare number of bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.is_zero() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_give_a_loopback_simulator_gateway_with_auth_off() {
        let c = Config::from_source(&src(&[])).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.provider_order, vec![ProviderId::Simulator]);
        assert!(!c.auth_enabled());
        assert_eq!(c.sanitizer.max_chars, 10_000);
        assert_eq!(c.generate_body_limit, 64 * 1024);
        assert_eq!(c.request_deadline, Duration::from_secs(30));
    }

    #[test]
    fn every_problem_is_reported_together_and_names_its_variable() {
        let err = Config::from_source(&src(&[
            ("SPARK_BIND", "nonsense"),
            ("SPARK_UPSTREAM_TIMEOUT", "20 parsecs"),
            ("SPARK_PROVIDER_ORDER", "anthropic,mistral"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("SPARK_BIND"), "{text}");
        assert!(text.contains("SPARK_UPSTREAM_TIMEOUT"), "{text}");
        assert!(text.contains("ANTHROPIC_API_KEY is not set"), "{text}");
        assert!(text.contains("\"mistral\""), "{text}");
        assert!(text.contains("must name at least one provider"), "{text}");
        assert_eq!(err.problems.len(), 5);
    }

    #[test]
    fn public_bind_without_keys_refuses_to_start() {
        let err = Config::from_source(&src(&[("SPARK_BIND", "0.0.0.0:8080")])).unwrap_err();
        assert!(err.to_string().contains("authentication off"));
        let ok = Config::from_source(&src(&[
            ("SPARK_BIND", "0.0.0.0:8080"),
            ("SPARK_MASTER_API_KEY", "master-key-0123456789"),
        ]));
        assert!(ok.is_ok());
    }

    #[test]
    fn malformed_user_key_is_reported_without_echoing_it() {
        let err = Config::from_source(&src(&[("SPARK_API_KEYS", "not-a-user-key-SECRETVALUE")]))
            .unwrap_err();
        assert!(err.to_string().contains("SPARK_API_KEYS"));
        assert!(!err.to_string().contains("SECRETVALUE"));
    }

    #[test]
    fn provider_keys_set_the_default_order_and_never_print() {
        let c = Config::from_source(&src(&[
            ("ANTHROPIC_API_KEY", "sk-ant-very-secret"),
            ("OPENAI_API_KEY", "sk-openai-very-secret"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/"),
        ]))
        .unwrap();
        assert_eq!(
            c.provider_order,
            vec![ProviderId::Anthropic, ProviderId::OpenAi]
        );
        assert_eq!(c.anthropic.as_ref().unwrap().base_url, "http://127.0.0.1:9");
        let printed = format!("{:?} {:?}", c.redacted(), c);
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn every_duration_is_bounded_so_none_can_overflow_an_instant() {
        let err = Config::from_source(&src(&[
            ("SPARK_UPSTREAM_TIMEOUT", "9999999999h"),
            ("SPARK_REQUEST_DEADLINE", "25h"),
            ("SPARK_BREAKER_OPEN_MAX", "9999999999h"),
            ("SPARK_CACHE_TTL", "721h"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for var in [
            "SPARK_UPSTREAM_TIMEOUT",
            "SPARK_REQUEST_DEADLINE",
            "SPARK_BREAKER_OPEN_MAX",
            "SPARK_CACHE_TTL",
        ] {
            assert!(text.contains(var), "{var}: {text}");
        }
        assert!(
            Config::from_source(&src(&[
                ("SPARK_REQUEST_DEADLINE", "24h"),
                ("SPARK_CACHE_TTL", "720h")
            ]))
            .is_ok()
        );
    }

    #[test]
    fn plain_http_upstreams_are_refused_unless_loopback_or_allowed() {
        let with = |url: &str, allow: &str| {
            Config::from_source(&src(&[
                ("ANTHROPIC_API_KEY", "sk-ant-x"),
                ("ANTHROPIC_BASE_URL", url),
                ("SPARK_ALLOW_INSECURE_UPSTREAM", allow),
            ]))
        };
        assert!(with("http://api.example.com", "").is_err());
        assert!(with("http://10.0.0.5:8000", "").is_err());
        assert!(with("http://api.example.com", "true").is_ok());
        assert!(with("https://api.example.com", "").is_ok());
        for loopback in [
            "http://127.0.0.1:9",
            "http://localhost:8080/",
            "http://[::1]:9",
        ] {
            assert!(with(loopback, "").is_ok(), "{loopback}");
        }
    }

    #[test]
    fn cors_origins_must_be_bare_origins() {
        assert!(
            Config::from_source(&src(&[(
                "SPARK_CORS_ORIGINS",
                "https://editor.example.com, http://localhost:3000"
            )]))
            .is_ok()
        );
        for bad in ["*", "https://a.example.com/path", "editor.example.com"] {
            assert!(
                Config::from_source(&src(&[("SPARK_CORS_ORIGINS", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations_and_sizes_parse_in_the_documented_units() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("12kb"), None);
    }
}
