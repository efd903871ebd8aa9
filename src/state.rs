//! The application state: everything a request needs, built once from the config.
//!
//! `AppState` is a cheap clone (one `Arc`) handed to axum. `build_state` creates the provider
//! clients, key store and generation service; nothing the request path uses is a global.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::auth::{AuthBrake, KeyRing, KeyStore, ManagedKeys};
use crate::budget::Budgets;
use crate::cache::ResponseCache;
use crate::config::Config;
use crate::config::Database;
use crate::generate::{GenerateService, Limits, Metering};
use crate::ledger::{Ledger, LedgerMetrics};
use crate::providers::Provider;
use crate::providers::anthropic::Anthropic;
use crate::providers::openai::OpenAi;
use crate::providers::simulator::Simulator;
use crate::ratelimit::redis::RedisLimiter;
use crate::ratelimit::{Limiter, MemoryLimiter};
use crate::redis::RedisBackend;
use crate::resilience::ProviderRouter;
use crate::store::Store;
use crate::telemetry::{ErrorTracker, Metrics};
use secrecy::ExposeSecret;
use sha2::Digest;
use std::sync::atomic::{AtomicBool, Ordering};

/// How often each replica polls the database for changed managed keys.
const KEY_POLL: Duration = Duration::from_secs(1);

/// A start-up failure: never reaches a response.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("could not build the HTTP client: {0}")]
    HttpClient(String),
    #[error("the sanitizer rules failed to compile")]
    Sanitizer,
    #[error("could not register metrics: {0}")]
    Metrics(String),
    #[error("{0}")]
    Redis(String),
    #[error("API keys: {0}")]
    Keys(String),
    #[error("SPARK_DATABASE_URL: {0}")]
    Database(String),
    #[error("the state must be built inside a Tokio runtime (it starts background tasks)")]
    NoRuntime,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    keys: KeyRing,
    /// Bearer JWTs from `SPARK_AUTH_ISSUERS_FILE`, when it is set.
    jwt: Option<crate::auth::jwt::Verifier>,
    /// Failed authentications per client address.
    brake: AuthBrake,
    generator: GenerateService,
    metrics: Arc<Metrics>,
    limiter: Arc<dyn Limiter>,
    redis: Option<Arc<RedisBackend>>,
    errors: Arc<ErrorTracker>,
    /// The database, unless `SPARK_DATABASE_URL=none`.
    store: Option<Store>,
    /// Usage rows and system audit entries, written off the request path.
    ledger: Ledger,
    /// Keys issued through the admin API, polled from the database.
    managed: Arc<ManagedKeys>,
    budgets: Arc<Budgets>,
    /// Set on SIGTERM: readiness turns 503 while in-flight requests finish.
    draining: AtomicBool,
    /// Permits for requests being served; when none is left new ones are shed with 503.
    inflight: Arc<Semaphore>,
    /// Shed requests are logged at most once a second, with their count.
    shed_log: crate::telemetry::Throttle,
    /// Readings of the traffic counters for the console's overview.
    summary: crate::telemetry::summary::Summary,
    started: std::time::Instant,
}

impl AppState {
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The keys in force now (they change when the key file is rotated).
    pub fn keys(&self) -> Arc<KeyStore> {
        self.0.keys.current()
    }

    /// The JWT verifier, when identity providers are configured.
    pub fn jwt(&self) -> Option<&crate::auth::jwt::Verifier> {
        self.0.jwt.as_ref()
    }

    pub fn auth_brake(&self) -> &AuthBrake {
        &self.0.brake
    }

    pub fn key_ring(&self) -> &KeyRing {
        &self.0.keys
    }

    pub fn generator(&self) -> &GenerateService {
        &self.0.generator
    }

    pub fn errors(&self) -> &ErrorTracker {
        &self.0.errors
    }

    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    pub fn limiter(&self) -> &dyn Limiter {
        self.0.limiter.as_ref()
    }

    /// The shared Redis, when `REDIS_URL` is set.
    pub fn redis(&self) -> Option<&RedisBackend> {
        self.0.redis.as_deref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The console's live figures over the last minute.
    pub fn overview(&self) -> crate::telemetry::summary::Overview {
        self.0
            .summary
            .overview(tokio::time::Instant::now(), self.0.metrics.traffic())
    }

    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }

    pub fn shed_log(&self) -> &crate::telemetry::Throttle {
        &self.0.shed_log
    }

    pub fn inflight(&self) -> Arc<Semaphore> {
        Arc::clone(&self.0.inflight)
    }

    /// Re-reads the key file (see [`KeyRing::reload`]); a new key set in force is an audit
    /// entry with its count. Blocking I/O: call it on a blocking thread.
    pub fn reload_key_file(&self, force: bool) -> Result<crate::auth::Reload, String> {
        let result = self.0.keys.reload(force);
        if let Ok(crate::auth::Reload::Installed { user_keys }) = &result {
            self.0.ledger.audit(
                crate::store::audit::Entry::new("system", "keys.reload")
                    .details(serde_json::json!({ "userKeys": user_keys, "forced": force })),
            );
        }
        result
    }

    pub fn store(&self) -> Option<&Store> {
        self.0.store.as_ref()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.0.ledger
    }

    pub fn managed_keys(&self) -> &ManagedKeys {
        &self.0.managed
    }

    pub fn budgets(&self) -> &Budgets {
        &self.0.budgets
    }
}

/// One reqwest client for every upstream: one connection pool, rustls, bounded connect time.
/// Redirects are never followed: reqwest strips only `Authorization` on a cross-host redirect, so
/// Anthropic's `x-api-key` would follow a 3xx anywhere. A 3xx is an upstream error instead.
fn http_client() -> Result<reqwest::Client, InitError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("spark-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| InitError::HttpClient(e.to_string()))
}

pub fn build_state(config: Config) -> Result<AppState, InitError> {
    if !crate::sanitize::ready() {
        return Err(InitError::Sanitizer);
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(InitError::NoRuntime);
    }
    let http = http_client()?;
    let metrics = Arc::new(Metrics::new().map_err(|e| InitError::Metrics(e.to_string()))?);
    // The simulator is always available: as the default with no keys, and on request.
    let mut providers: Vec<Arc<dyn Provider>> = vec![Arc::new(Simulator::new(
        config.simulator_latency,
        config.simulator_failure_rate,
    ))];
    if let Some(a) = &config.anthropic {
        providers.push(Arc::new(Anthropic::new(http.clone(), a)));
    }
    if let Some(o) = &config.openai {
        providers.push(Arc::new(OpenAi::new(http.clone(), o)));
    }
    let sentry = config.sentry_dsn.as_ref().and_then(|dsn| {
        let dsn = dsn.expose_secret().parse().ok();
        if dsn.is_none() {
            tracing::warn!("SENTRY_DSN is not a valid DSN; error forwarding is off");
        }
        let mut opts = sentry::ClientOptions::default();
        opts.dsn = Some(dsn?);
        opts.release = Some(concat!("spark-gateway@", env!("CARGO_PKG_VERSION")).into());
        opts.send_default_pii = false;
        Some(sentry::Client::from(sentry::apply_defaults(opts)))
    });
    let errors = Arc::new(ErrorTracker::new(500, metrics.errors.clone(), sentry));
    let redis = match &config.redis_url {
        Some(url) => Some(
            RedisBackend::connect(url, config.redis_timeout, Arc::clone(&metrics))
                .map_err(InitError::Redis)?,
        ),
        None => None,
    };
    let router = ProviderRouter::new(
        providers,
        &config.breaker,
        config.retry.clone(),
        config.upstream_timeout,
        Arc::clone(&metrics),
        Arc::clone(&errors),
    )
    .with_shaper(Arc::new(crate::shaping::Shaper::new(
        &config.provider_limits,
        config.queue_timeout,
        config.queue_max,
        config.batch_users.clone(),
        &metrics,
        redis.as_ref(),
    )));
    let limiter: Arc<dyn Limiter> = match &redis {
        Some(r) => Arc::new(RedisLimiter::new(Arc::clone(r), config.rate_limits.clone())),
        None => Arc::new(MemoryLimiter::new(config.rate_limits.clone())),
    };
    let cache = ResponseCache::new(&config.cache, Arc::clone(&metrics), redis.clone());
    let generator = GenerateService::new(
        router,
        cache,
        config.provider_order.clone(),
        Limits {
            max_tokens_cap: config.max_tokens_cap,
            default_max_tokens: config.default_max_tokens,
            request_deadline: config.request_deadline,
            stream_idle: config.upstream_timeout,
            max_stream: config.max_stream_duration,
        },
        config.sanitizer,
        config.system_prompt_override.clone(),
        Arc::clone(&metrics),
    );
    let keys = KeyRing::new(
        config.master_key.clone(),
        config.inline_api_keys.clone(),
        config.api_keys_file.clone(),
        config.api_keys_allow_empty,
        Some(metrics.key_reload_failures.clone()),
    )
    .map_err(InitError::Keys)?;
    // Tokens from identity providers turn authentication on even with no API key configured.
    let keys = if config.auth_issuers.is_empty() {
        keys
    } else {
        keys.with_auth_on().map_err(InitError::Keys)?
    };
    let jwt = if config.auth_issuers.is_empty() {
        None
    } else {
        let fetch = crate::auth::jwt::HttpFetch::new().map_err(InitError::HttpClient)?;
        let verifier = crate::auth::jwt::Verifier::new(
            config.auth_issuers.clone(),
            Arc::new(fetch),
            metrics.jwks_refreshes.clone(),
        )
        .map_err(InitError::Keys)?;
        verifier.warm_up();
        Some(verifier)
    };
    let store = match &config.database {
        Database::Off => None,
        Database::Url(url) => {
            Some(Store::open(url.expose_secret()).map_err(|e| InitError::Database(e.to_string()))?)
        }
    };
    let ledger = Ledger::start(
        store.clone(),
        config.prices.clone(),
        config.usage_queue,
        LedgerMetrics {
            cost: metrics.cost_usd.clone(),
            unpriced: metrics.unpriced.clone(),
            queue_depth: metrics.usage_queue_depth.clone(),
            dropped: metrics.usage_dropped.clone(),
            db_up: metrics.db_up.clone(),
        },
    );
    let budgets = Arc::new(Budgets::new(
        store.clone(),
        redis.clone(),
        config.user_budgets.clone(),
        metrics.budget_rejections.clone(),
    ));
    let generator = generator.with_metering(Metering {
        ledger: ledger.clone(),
        budgets: Arc::clone(&budgets),
    });
    let managed = Arc::new(ManagedKeys::default());
    if let Some(store) = &store {
        managed.spawn_sync(store.clone(), KEY_POLL);
        // What this process started with, for the trail: a digest of the redacted dump (no
        // secret is in it), so two starts can be compared without storing the settings.
        let dump: String = config
            .redacted()
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        ledger.audit(
            crate::store::audit::Entry::new("system", "config.start").details(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "configSha256": crate::store::keys::hex(&sha2::Sha256::digest(dump.as_bytes())),
                "database": store.backend().as_str(),
            })),
        );
    }
    Ok(AppState(Arc::new(Inner {
        store,
        ledger,
        managed,
        budgets,
        inflight: Arc::new(Semaphore::new(config.max_inflight)),
        shed_log: crate::telemetry::Throttle::new(Duration::from_secs(1)),
        summary: crate::telemetry::summary::Summary::new(tokio::time::Instant::now()),
        started: std::time::Instant::now(),
        keys,
        jwt,
        brake: AuthBrake::new(config.auth_failures_per_min),
        generator,
        metrics,
        limiter,
        redis,
        errors,
        draining: AtomicBool::new(false),
        config,
    })))
}
