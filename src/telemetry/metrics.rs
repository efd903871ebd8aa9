//! Prometheus metrics: one registry owned by the app state, typed handles, bounded labels.
//!
//! Not the crate's global default registry: each `AppState` has its own, so tests that build
//! several gateways in one process see only their own counts. Label values are bounded by
//! construction: route templates (never raw paths), provider and engine names from enums, error
//! codes from `ApiError::code`, and sanitizer category names.

use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for LLM calls: 50 ms to 60 s.
const LLM_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];
/// Buckets for fast HTTP routes: 0.5 ms to 10 s.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for the gateway's own cost per request: 50 µs to 1 s.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    api_generate: IntCounterVec,
    api_export: IntCounterVec,
    export_duration: Histogram,
    generation: IntCounterVec,
    generation_duration: HistogramVec,
    prompt_rejected: IntCounterVec,
    upstream_duration: HistogramVec,
    tokens: IntCounterVec,
    pub overhead: Histogram,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    /// 1 while a provider's last answer refused our key or endpoint.
    provider_misconfigured: IntGaugeVec,
    cache_requests: IntCounterVec,
    rate_limited: IntCounterVec,
    /// Handed to the error tracker, which counts by severity.
    pub errors: IntCounterVec,
    redis_fallback: IntCounterVec,
    /// Shared-cache values refused by the integrity or request check.
    pub cache_l2_rejected: IntCounter,
    /// Key-file reloads refused (malformed, unreadable, or emptying the key set).
    pub key_reload_failures: IntCounter,
    /// Requests whose presented key did not authenticate.
    pub auth_failures: IntCounter,
    /// Bearer tokens answered 503 `auth_unavailable` (no usable key of their issuer).
    pub auth_unavailable: IntCounter,
    /// Requests refused by the per-address brake on failed authentications.
    pub auth_blocked: IntCounter,
    /// Finished spans by what became of them; brought up to date from `trace` at each scrape.
    otel_spans: IntCounterVec,
    /// Dollars spent upstream, per provider and price-table model (`other` when unpriced).
    pub cost_usd: CounterVec,
    /// Calls to a model the price table does not know (costed at 0).
    pub unpriced: IntCounter,
    /// Ledger rows and audit entries queued and not yet written.
    pub usage_queue_depth: IntGauge,
    /// Ledger rows and audit entries dropped because the queue was full.
    pub usage_dropped: IntCounter,
    /// 1 while the database answers the ledger writer.
    pub db_up: IntGauge,
    /// Requests refused because a budget was spent, by scope (`key`, `user`).
    pub budget_rejections: IntCounterVec,
    /// Reloads of the native TLS certificate files, by result (`ok`, `error`).
    pub tls_reloads: IntCounterVec,
    /// JWKS fetches per configured issuer (the `issuer` of `SPARK_AUTH_ISSUERS_FILE`, a bounded
    /// set), by result (`ok`, `error`).
    pub jwks_refreshes: IntCounterVec,
    /// When the native TLS certificate in force expires (Unix seconds; absent without TLS).
    pub tls_expiry: IntGauge,
    /// Outbound shaping, per lane (`provider` or `provider:model`, from configuration).
    shaper_depth: IntGaugeVec,
    shaper_wait: HistogramVec,
    shaper_rejected: IntCounterVec,
    shaper_available: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram = |name: &str,
                         help: &str,
                         labels: &[&str],
                         buckets: &[f64]|
         -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let plain = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let metrics = Metrics {
            cost_usd: {
                let c = CounterVec::new(
                    Opts::new(
                        "spark_cost_usd_total",
                        "US dollars spent upstream by provider and model (price-table name, or other).",
                    ),
                    &["provider", "model"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            unpriced: plain(
                "spark_unpriced_requests_total",
                "Upstream calls to a model without a price (costed at 0); add it to SPARK_PRICES_FILE.",
            )?,
            usage_queue_depth: gauge(
                "spark_usage_queue_depth",
                "Usage rows and audit entries waiting to be written to the database.",
            )?,
            usage_dropped: plain(
                "spark_usage_dropped_total",
                "Usage rows and audit entries dropped because the queue (SPARK_USAGE_QUEUE) was full.",
            )?,
            budget_rejections: counter(
                "spark_budget_rejections_total",
                "Requests refused with 429 budget_exceeded, by the budget's scope (key or user).",
                &["scope"],
            )?,
            tls_reloads: counter(
                "spark_tls_reloads_total",
                "Reloads of SPARK_TLS_CERT/SPARK_TLS_KEY after they changed, by result (ok; error: the certificate in force stays).",
                &["result"],
            )?,
            jwks_refreshes: counter(
                "spark_jwks_refresh_total",
                "JWKS fetches per issuer of SPARK_AUTH_ISSUERS_FILE, by result (ok; error: the keys in force stay until 24 h after their last good fetch).",
                &["issuer", "result"],
            )?,
            tls_expiry: gauge(
                "spark_tls_certificate_expiry_timestamp_seconds",
                "When the native TLS certificate in force (SPARK_TLS_CERT) expires, in Unix seconds; 0 without native TLS or when it cannot be read.",
            )?,
            db_up: gauge(
                "spark_db_up",
                "1 while the database answers the ledger writer, 0 while it does not (or is off).",
            )?,
            cache_l2_rejected: plain(
                "spark_cache_shared_rejected_total",
                "Shared (Redis) cache values ignored because their signature, size or content did not check out.",
            )?,
            key_reload_failures: plain(
                "spark_key_reload_failures_total",
                "API key file reloads refused; the keys in force stayed.",
            )?,
            auth_failures: plain(
                "spark_auth_failures_total",
                "Requests with a missing or unknown API key, or a refused bearer token.",
            )?,
            auth_unavailable: plain(
                "spark_auth_unavailable_total",
                "Bearer tokens answered 503 auth_unavailable because their issuer's keys could not be fetched (API keys are unaffected).",
            )?,
            auth_blocked: plain(
                "spark_auth_blocked_total",
                "Requests refused with 429 because their address failed authentication too often.",
            )?,
            shaper_depth: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "spark_shaper_queue_depth",
                        "Requests waiting for provider capacity, per lane and priority class.",
                    ),
                    &["lane", "class"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            shaper_wait: histogram(
                "spark_shaper_wait_seconds",
                "Time requests waited for provider capacity before going out, per lane and class.",
                &["lane", "class"],
                HTTP_BUCKETS,
            )?,
            shaper_rejected: counter(
                "spark_shaper_rejected_total",
                "Requests a lane did not admit: queue_full or timeout (they fall back or get 503 providers_busy).",
                &["lane", "reason"],
            )?,
            shaper_available: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "spark_shaper_available",
                        "Requests or tokens a lane could send at once (its one-second burst when idle), at scrape time.",
                    ),
                    &["lane", "kind"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            otel_spans: counter(
                "spark_otel_spans_total",
                "Finished trace spans by outcome: exported, dropped (export queue full) or failed (the collector refused or did not answer).",
                &["outcome"],
            )?,
            http_requests: counter(
                "http_requests_total",
                "HTTP responses by route template, method and status.",
                &["route", "method", "status"],
            )?,
            http_duration: histogram(
                "http_request_duration_seconds",
                "Time to produce a response, by route template and method.",
                &["route", "method"],
                HTTP_BUCKETS,
            )?,
            api_generate: counter(
                "api_generate_total",
                "Responses of POST /api/spark/generate by status.",
                &["status"],
            )?,
            api_export: counter(
                "api_export_total",
                "Responses of POST /api/export by status.",
                &["status"],
            )?,
            export_duration: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "api_export_duration_seconds",
                        "Time to answer POST /api/export.",
                    )
                    .buckets(HTTP_BUCKETS.to_vec()),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            generation: counter(
                "spark_generation_total",
                "Generation attempts by provider, engine, outcome and whether the cache answered.",
                &["provider", "engine", "outcome", "cached"],
            )?,
            generation_duration: histogram(
                "spark_generation_duration_seconds",
                "Time to produce a generation, provider calls included.",
                &["provider"],
                LLM_BUCKETS,
            )?,
            prompt_rejected: counter(
                "spark_prompt_rejected_total",
                "Prompts rejected by the sanitizer, by matched rule family.",
                &["category"],
            )?,
            upstream_duration: histogram(
                "spark_upstream_request_duration_seconds",
                "One upstream attempt, by provider and HTTP status (or error kind).",
                &["provider", "status"],
                LLM_BUCKETS,
            )?,
            tokens: counter(
                "spark_tokens_total",
                "Tokens reported by providers, by direction (input, output).",
                &["provider", "direction"],
            )?,
            breaker_state: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "spark_circuit_breaker_state",
                        "Circuit state per provider: 0 closed, 1 half-open, 2 open.",
                    ),
                    &["provider"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            provider_misconfigured: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "spark_provider_misconfigured",
                        "1 while a provider's last answer refused our key or endpoint (401, 403, 404).",
                    ),
                    &["provider"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            breaker_transitions: counter(
                "spark_circuit_breaker_transitions_total",
                "Circuit state changes per provider, by the state entered.",
                &["provider", "to"],
            )?,
            errors: counter(
                "errors_total",
                "Errors recorded by the error tracker, by severity.",
                &["severity"],
            )?,
            rate_limited: counter(
                "spark_rate_limited_total",
                "Requests refused with 429 by the rate limiter, by route class.",
                &["route"],
            )?,
            redis_fallback: counter(
                "spark_redis_fallback_total",
                "Redis operations that failed and fell back to local state, by operation.",
                &["op"],
            )?,
            cache_requests: counter(
                "spark_cache_requests_total",
                "Response-cache lookups by result (hit, miss, bypass).",
                &["result"],
            )?,
            overhead: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "spark_gateway_overhead_seconds",
                        "Each generate request's total time minus the time spent waiting on providers.",
                    )
                    .buckets(OVERHEAD_BUCKETS.to_vec()),
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            registry,
        };
        Ok(metrics)
    }

    /// The text exposition format (0.0.4) of every registered metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        // The span counts are process-wide atomics (the subscriber that produces spans is
        // process-wide); each registry's counter catches up with them here.
        for (outcome, total) in super::trace::span_counts() {
            let counter = self.otel_spans.with_label_values(&[outcome]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }

    /// One HTTP response: the route template (never a raw path), the method from a fixed set,
    /// the numeric status. The two API routes also count in their own series.
    pub fn http_response(&self, route: &str, method: &str, status: u16, took: Duration) {
        let method = method_label(method);
        let status = status.to_string();
        self.http_requests
            .with_label_values(&[route, method, &status])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
        match route {
            "/api/spark/generate" => self.api_generate.with_label_values(&[&status]).inc(),
            "/api/export" => {
                self.api_export.with_label_values(&[&status]).inc();
                self.export_duration.observe(took.as_secs_f64());
            }
            _ => {}
        }
    }

    pub fn rate_limited(&self, class: &'static str) {
        self.rate_limited.with_label_values(&[class]).inc();
    }

    pub fn redis_fallback(&self, op: &'static str) {
        self.redis_fallback.with_label_values(&[op]).inc();
    }

    pub fn prompt_rejected(&self, category: &'static str) {
        self.prompt_rejected.with_label_values(&[category]).inc();
    }

    pub fn generation_took(&self, provider: &'static str, took: Duration) {
        self.generation_duration
            .with_label_values(&[provider])
            .observe(took.as_secs_f64());
    }

    /// A circuit entered `to` (its label and gauge value).
    pub fn breaker_entered(&self, provider: &'static str, to: &'static str, gauge: i64) {
        self.breaker_state.with_label_values(&[provider]).set(gauge);
        self.breaker_transitions
            .with_label_values(&[provider, to])
            .inc();
    }

    pub fn breaker_gauge(&self, provider: &'static str, gauge: i64) {
        self.breaker_state.with_label_values(&[provider]).set(gauge);
    }

    /// Requests waiting in a shaping lane's line for one class.
    pub fn shaper_queue_depth(&self, lane: &str, class: &str, depth: usize) {
        self.shaper_depth
            .with_label_values(&[lane, class])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// A request that waited in a shaping lane's line and then went out.
    pub fn shaper_waited(&self, lane: &str, class: &str, waited: Duration) {
        self.shaper_wait
            .with_label_values(&[lane, class])
            .observe(waited.as_secs_f64());
    }

    /// A request a shaping lane did not admit.
    pub fn shaper_rejected(&self, lane: &str, reason: &str) {
        self.shaper_rejected
            .with_label_values(&[lane, reason])
            .inc();
    }

    /// What a shaping lane could send now (`kind` is `requests` or `tokens`).
    pub fn shaper_available(&self, lane: &str, kind: &str, units: u64) {
        self.shaper_available
            .with_label_values(&[lane, kind])
            .set(i64::try_from(units).unwrap_or(i64::MAX));
    }

    pub fn provider_misconfigured(&self, provider: &'static str, on: bool) {
        self.provider_misconfigured
            .with_label_values(&[provider])
            .set(i64::from(on));
    }

    /// One generation's end: `outcome` is `success` or an API error code.
    pub fn generation_done(&self, provider: &str, engine: &str, outcome: &str, cached: bool) {
        let cached = if cached { "true" } else { "false" };
        self.generation
            .with_label_values(&[provider, engine, outcome, cached])
            .inc();
    }

    pub fn tokens_used(&self, provider: &str, input: u64, output: u64) {
        self.tokens
            .with_label_values(&[provider, "input"])
            .inc_by(input);
        self.tokens
            .with_label_values(&[provider, "output"])
            .inc_by(output);
    }

    /// `result` is `hit`, `miss` or `bypass` (`CacheResult::label`).
    pub fn cache_request(&self, result: &'static str) {
        self.cache_requests.with_label_values(&[result]).inc();
    }

    pub fn observe_upstream(&self, provider: &str, status: &str, took: Duration) {
        self.upstream_duration
            .with_label_values(&[provider, status])
            .observe(took.as_secs_f64());
    }
}

/// Counts the console's overview is computed from (`telemetry::summary`): API traffic only, so
/// probes, scrapes and the console's own polling do not dilute the rates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traffic {
    pub requests: u64,
    pub server_errors: u64,
    /// Cumulative counts per upper bound of [`HTTP_BUCKETS`], then +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// Routes that are not API traffic: operations, the console and its summary.
fn is_api_route(route: &str) -> bool {
    !matches!(
        route,
        "/livez"
            | "/readyz"
            | "/metrics"
            | "/api/metrics"
            | "/api/spark/health"
            | "/api/openapi.json"
    ) && !route.starts_with("/console")
        && !route.starts_with("/api/admin/summary")
}

impl Metrics {
    /// API traffic so far, summed over routes and methods.
    pub fn traffic(&self) -> Traffic {
        use prometheus::core::Collector;
        let mut t = Traffic::default();
        let route_of = |m: &prometheus::proto::Metric| {
            m.get_label()
                .iter()
                .find(|l| l.name() == "route")
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        for family in self.http_requests.collect() {
            for m in family.get_metric() {
                if !is_api_route(&route_of(m)) {
                    continue;
                }
                let n = m.get_counter().get_value() as u64;
                t.requests += n;
                let server_error = m
                    .get_label()
                    .iter()
                    .any(|l| l.name() == "status" && l.value().starts_with('5'));
                if server_error {
                    t.server_errors += n;
                }
            }
        }
        t.buckets = HTTP_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .map(|b| (b, 0))
            .collect();
        for family in self.http_duration.collect() {
            for m in family.get_metric() {
                if !is_api_route(&route_of(m)) {
                    continue;
                }
                let h = m.get_histogram();
                for (slot, b) in t.buckets.iter_mut().zip(h.get_bucket()) {
                    slot.1 += b.cumulative_count();
                }
                if let Some(last) = t.buckets.last_mut() {
                    last.1 += h.get_sample_count();
                }
            }
        }
        t.cache_hits = self.cache_requests.with_label_values(&["hit"]).get();
        t.cache_misses = self.cache_requests.with_label_values(&["miss"]).get();
        t
    }
}

/// HTTP methods as labels: the standard ones by name, anything else `other`. hyper accepts any
/// token as a method, so a label taken from the request would let a client mint series.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics_in_text_format() {
        let m = Metrics::new().unwrap();
        m.prompt_rejected("instruction_override");
        let text = m.render().unwrap();
        assert!(text.contains("spark_prompt_rejected_total{category=\"instruction_override\"} 1"));
        assert!(text.contains("# TYPE spark_gateway_overhead_seconds histogram"));
    }

    #[test]
    fn two_instances_do_not_share_counts() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.tokens_used("simulator", 5, 0);
        assert!(!b.render().unwrap().contains("spark_tokens_total{"));
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        let m = Metrics::new().unwrap();
        for method in ["GET", "BREW", "X".repeat(1000).as_str(), "get", "PROPFIND"] {
            m.http_response("unmatched", method, 405, Duration::ZERO);
        }
        let text = m.render().unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("http_requests_total{"))
            .count();
        assert_eq!(series, 2, "GET and other: {text}");
    }
}
