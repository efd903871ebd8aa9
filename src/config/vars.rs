//! Every variable the gateway reads, declared once: name, default, kind (which parses and bounds
//! it), whether it is a secret, and a line of help.
//!
//! The reader in `config/mod.rs` refuses to read a variable that is not declared here, records
//! what it read for `check-config`, and takes defaults and bounds from this table only. A test
//! checks that README's configuration table lists exactly these names, so a documented variable
//! cannot be ignored and a read one cannot be undocumented.

use std::time::Duration;

/// How a variable's value is parsed and bounded.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Free text, parsed where it is read (addresses, lists, quotas, URLs).
    Text,
    /// A secret: never printed, never echoed in an error.
    Secret,
    Bool,
    /// `500ms`, `30s`, `5m`, `1h`, at most `max`.
    Duration {
        max: Duration,
    },
    /// `512KiB`, `256MiB`, `1GiB` or bytes.
    Size,
    /// A whole number in `min..=max`.
    Int {
        min: u64,
        max: u64,
    },
    /// A number in `min..=max` (`min` excluded when `open_min`).
    Float {
        min: f64,
        max: f64,
        open_min: bool,
    },
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
}

/// One declared variable.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    /// The value used when the variable is unset, written as an operator would write it.
    pub default: Option<&'static str>,
    pub kind: Kind,
    pub help: &'static str,
}

impl Var {
    pub fn secret(&self) -> bool {
        matches!(self.kind, Kind::Secret)
    }
}

/// The longest duration any variable accepts: a larger one would overflow `Instant + Duration` on
/// the request path, and no timeout of a request gateway needs more than a day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The longest cache lifetime.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

const DAY: Kind = Kind::Duration { max: MAX_DURATION };
const BOOL: Kind = Kind::Bool;
const TEXT: Kind = Kind::Text;
const SECRET: Kind = Kind::Secret;
const RATIO: Kind = Kind::Float {
    min: 0.0,
    max: 1.0,
    open_min: false,
};
const fn int(min: u64, max: u64) -> Kind {
    Kind::Int { min, max }
}
const fn var(
    name: &'static str,
    default: Option<&'static str>,
    kind: Kind,
    help: &'static str,
) -> Var {
    Var {
        name,
        default,
        kind,
        help,
    }
}

pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

#[rustfmt::skip]
pub const VARS: &[Var] = &[
    // Listening and authentication.
    var("SPARK_BIND", Some("127.0.0.1:8080"), TEXT, "listen address; a non-loopback one needs a key configured"),
    var("SPARK_MASTER_API_KEY", None, SECRET, "admin key, at least 16 characters"),
    var("SPARK_API_KEYS", None, SECRET, "comma list of user keys user-{userId}-{secret}"),
    var("SPARK_API_KEYS_FILE", None, TEXT, "file of user keys (one per line or comma-separated, # comments), re-read on change and SIGHUP"),
    var("SPARK_API_KEYS_ALLOW_EMPTY", Some("false"), BOOL, "let a key-file reload leave no user key"),
    var("SPARK_AUTH_ISSUERS_FILE", None, TEXT, "TOML (or .json) file of identity providers whose bearer JWTs are accepted beside API keys; read at start-up"),
    // The database: managed keys, the usage ledger, the audit trail.
    var("SPARK_DATABASE_URL", None, SECRET, "postgres://… (several replicas) or sqlite://PATH; unset: an SQLite file in SPARK_DATA_DIR; none: no database (no managed keys, ledger or audit)"),
    var("SPARK_DATA_DIR", Some("./data"), TEXT, "where the default SQLite database lives (created when missing)"),
    var("SPARK_PRICES_FILE", None, TEXT, "JSON object of model name to {inputPerMillion, outputPerMillion} USD, laid over the built-in price table"),
    var("SPARK_USER_BUDGETS", None, TEXT, "per-user spend limits in USD, optionally tokens too: alice=10/month;bob=0.5/day,tokens=200000"),
    var("SPARK_USAGE_QUEUE", Some("100000"), int(1, 10_000_000), "usage rows and audit entries held while the database is down; more are dropped and counted"),
    var("SPARK_AUTH_FAILURES_PER_MIN", Some("30"), int(0, 1_000_000), "failed authentications per address and minute before 429 (0: off)"),
    var("SPARK_CORS_ORIGINS", None, TEXT, "comma list of exact browser origins allowed by CORS"),
    var("SPARK_OPS_BIND", None, TEXT, "a second listen address for /metrics, /livez, /readyz and health; when set they leave the public port"),
    var("SPARK_HEADER_READ_TIMEOUT", Some("10s"), DAY, "a client must finish sending request headers within this; also how long an idle HTTP/1.1 connection waits for its next request"),
    var("SPARK_IDLE_TIMEOUT", Some("60s"), DAY, "a connection with no bytes either way for this long is closed"),
    var("SPARK_MAX_CONNECTIONS", Some("10000"), int(1, 1_000_000), "open client connections at most; more wait in the accept backlog"),
    var("SPARK_TLS_CERT", None, TEXT, "PEM certificate chain (leaf first): serve HTTPS on SPARK_BIND; re-read when the file changes"),
    var("SPARK_TLS_KEY", None, TEXT, "PEM private key of SPARK_TLS_CERT; set both or neither"),
    var("SPARK_TRUSTED_PROXIES", None, TEXT, "comma list of IPs or CIDRs whose X-Forwarded-For is believed"),
    // Providers.
    var("ANTHROPIC_API_KEY", None, SECRET, "Anthropic key; without it Anthropic is not configured"),
    var("ANTHROPIC_BASE_URL", Some(DEFAULT_ANTHROPIC_BASE_URL), TEXT, "Anthropic endpoint, without /v1"),
    var("SPARK_ANTHROPIC_MODELS", Some("claude-sonnet-4-5,claude-haiku-4-5,claude-opus-4-1"), TEXT, "Anthropic model allow-list; the first is the default"),
    var("OPENAI_API_KEY", None, SECRET, "OpenAI key; without it OpenAI is not configured"),
    var("OPENAI_BASE_URL", Some(DEFAULT_OPENAI_BASE_URL), TEXT, "OpenAI (or compatible) endpoint, with /v1"),
    var("SPARK_OPENAI_MODELS", Some("gpt-4.1,gpt-4.1-mini,gpt-4o,gpt-4o-mini,o4-mini"), TEXT, "OpenAI model allow-list; the first is the default"),
    var("SPARK_ALLOW_INSECURE_UPSTREAM", Some("false"), BOOL, "allow a plain http:// provider URL to a non-loopback host"),
    var("SPARK_PROVIDER_ORDER", None, TEXT, "the order provider auto tries; default: the configured providers, else simulator"),
    var("SPARK_UPSTREAM_TIMEOUT", Some("20s"), DAY, "one upstream attempt; also the longest silence inside a stream"),
    var("SPARK_REQUEST_DEADLINE", Some("30s"), DAY, "the whole request; 504 when it passes"),
    var("SPARK_SIMULATOR_LATENCY", Some("0ms"), DAY, "the simulator's answer time"),
    var("SPARK_SIMULATOR_FAILURE_RATE", Some("0"), RATIO, "share of simulator answers that fail as 529 overloaded"),
    // Requests.
    var("SPARK_MAX_TOKENS", Some("4096"), int(1, 200_000), "cap on maxTokens"),
    var("SPARK_DEFAULT_MAX_TOKENS", Some("2048"), int(1, 200_000), "maxTokens when the request has none"),
    var("SPARK_MAX_PROMPT_CHARS", Some("10000"), int(1, 1_000_000), "longest prompt (with system text) after normalization"),
    var("SPARK_GENERATE_BODY_LIMIT", Some("64KiB"), Kind::Size, "body limit of generate and /v1 (413)"),
    var("SPARK_EXPORT_BODY_LIMIT", Some("512KiB"), Kind::Size, "body limit of export (413)"),
    var("SPARK_BODY_READ_TIMEOUT", Some("10s"), DAY, "a request body must arrive within this (408 request_timeout)"),
    var("SPARK_MAX_STREAM_DURATION", Some("10m"), DAY, "longest a streamed answer may last"),
    var("SPARK_MAX_INFLIGHT", Some("1024"), int(1, 1_000_000), "requests served at once before 503 overloaded"),
    var("SPARK_SANITIZER_MODE", Some("block"), Kind::Choice(&["block", "warn", "off"]), "what a flagged prompt gets: 422, a warning, or no scan"),
    var("SPARK_SANITIZER_THRESHOLD", Some("0.5"), RATIO, "risk score at which a prompt is flagged"),
    var("SPARK_SYSTEM_PROMPT_OVERRIDE", None, TEXT, "user ids whose system messages replace the engine prompt"),
    // Resilience.
    var("SPARK_BREAKER_CONSECUTIVE_FAILURES", Some("5"), int(1, 1_000), "failures in a row that open a circuit"),
    var("SPARK_BREAKER_FAILURE_RATE", Some("0.5"), Kind::Float { min: 0.0, max: 1.0, open_min: true }, "failure rate over the window that opens a circuit"),
    var("SPARK_BREAKER_MIN_CALLS", Some("10"), int(1, 1_000_000), "calls in the window before the rate counts"),
    var("SPARK_BREAKER_WINDOW", Some("30s"), DAY, "the failure-rate window"),
    var("SPARK_BREAKER_OPEN", Some("5s"), DAY, "first cool-down of an open circuit"),
    var("SPARK_BREAKER_OPEN_MAX", Some("60s"), DAY, "cap of the cool-down as it doubles"),
    var("SPARK_BREAKER_HALF_OPEN_PROBES", Some("1"), int(1, 1_000), "probes allowed at once after a cool-down"),
    var("SPARK_RETRY_ATTEMPTS", Some("2"), int(1, 10), "attempts at the last provider of the plan, the first included"),
    var("SPARK_RETRY_BASE_DELAY", Some("100ms"), DAY, "retry back-off base"),
    var("SPARK_RETRY_MAX_DELAY", Some("2s"), DAY, "retry back-off cap"),
    // Outbound traffic shaping.
    var("SPARK_PROVIDER_LIMITS", None, TEXT, "capacity per provider or model, e.g. openai:gpt-4.1=500rpm,200000tpm,64inflight;anthropic=50inflight"),
    var("SPARK_QUEUE_TIMEOUT", Some("5s"), DAY, "longest a request waits for provider capacity (never past its deadline)"),
    var("SPARK_QUEUE_MAX", Some("1000"), int(1, 1_000_000), "requests waiting per lane at most; more fall back or get 503 providers_busy"),
    var("SPARK_BATCH_USERS", None, TEXT, "comma list of user ids whose whole-answer requests are batch priority"),
    // Cache and rate limits.
    var("SPARK_CACHE_TTL", Some("1h"), Kind::Duration { max: MAX_CACHE_TTL }, "response cache lifetime; 0 turns the cache off"),
    var("SPARK_CACHE_MAX_BYTES", Some("256MiB"), Kind::Size, "response cache size bound"),
    var("SPARK_CACHE_SCOPE", Some("global"), Kind::Choice(&["global", "key"]), "global: callers share answers; key: each caller its own"),
    var("SPARK_CACHE_HMAC_KEY", None, SECRET, "signs shared cache values, at least 32 characters"),
    var("SPARK_RATE_LIMIT_GENERATE", Some("60/min"), TEXT, "per-key quota of generate"),
    var("SPARK_RATE_LIMIT_EXPORT", Some("120/min"), TEXT, "per-key quota of export"),
    var("SPARK_RATE_LIMIT_OPENAI", Some("60/min"), TEXT, "per-key quota of the OpenAI-compatible /v1 routes"),
    var("SPARK_RATE_LIMIT_ANTHROPIC", Some("60/min"), TEXT, "per-key quota of the Anthropic-compatible /v1/messages routes"),
    var("SPARK_RATE_LIMIT_OVERRIDES", None, TEXT, "per-user quotas, alice=100/min;bob=5/min,burst=2"),
    var("SPARK_RATE_LIMIT_MASTER_EXEMPT", Some("true"), BOOL, "the master key skips rate limits"),
    var("REDIS_URL", None, SECRET, "shared limiter and second-level cache"),
    var("SPARK_REDIS_TIMEOUT", Some("100ms"), Kind::Duration { max: Duration::from_secs(10) }, "longest a request waits on Redis"),
    // Operations.
    var("SENTRY_DSN", None, SECRET, "error forwarding"),
    var("SPARK_SHUTDOWN_DELAY", Some("0s"), DAY, "keep accepting after SIGTERM while readiness is 503"),
    var("SPARK_SHUTDOWN_GRACE", Some("25s"), DAY, "then drain in-flight requests for at most this"),
    var("SPARK_ENABLE_PANIC_ROUTE", Some("false"), BOOL, "mount /api/debug/panic (drills and tests only)"),
    var("SPARK_LOG_FORMAT", Some("pretty"), Kind::Choice(&["pretty", "json"]), "json for JSON lines"),
    var("RUST_LOG", Some("info"), TEXT, "log filter (tracing EnvFilter syntax)"),
    // Distributed tracing (OpenTelemetry): off unless an endpoint is set.
    var("OTEL_EXPORTER_OTLP_ENDPOINT", None, TEXT, "OTLP/HTTP collector base URL (/v1/traces is appended); set to export traces"),
    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None, TEXT, "the full OTLP/HTTP traces URL, used as it is; overrides the base URL"),
    var("OTEL_EXPORTER_OTLP_HEADERS", None, SECRET, "headers sent to the collector, name=value pairs separated by commas, values percent-encoded"),
    var("OTEL_EXPORTER_OTLP_PROTOCOL", Some("http/protobuf"), Kind::Choice(&["http/protobuf"]), "OTLP transport; only http/protobuf is built in"),
    var("OTEL_EXPORTER_OTLP_TIMEOUT", Some("10000"), int(1, 600_000), "milliseconds one export may take"),
    var("OTEL_SERVICE_NAME", Some("spark-gateway"), TEXT, "service.name of the exported spans"),
    var("OTEL_TRACES_SAMPLER", Some("parentbased_always_on"), Kind::Choice(crate::telemetry::trace::SAMPLERS), "which traces are recorded"),
    var("OTEL_TRACES_SAMPLER_ARG", None, TEXT, "the ratio (0 to 1) of the traceidratio samplers; default 1"),
    var("OTEL_BSP_MAX_QUEUE_SIZE", Some("2048"), int(1, 1_000_000), "finished spans waiting for export at most; more are dropped and counted"),
    var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", Some("512"), int(1, 100_000), "spans per export request at most"),
    var("OTEL_BSP_SCHEDULE_DELAY", Some("5000"), int(1, 600_000), "milliseconds a partial batch waits before it is sent"),
    var("SPARK_OTEL_TRUST_CLIENT_CONTEXT", Some("true"), BOOL, "continue a client's traceparent; false starts a new trace linked to it"),
];

pub fn find(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.name == name)
}
