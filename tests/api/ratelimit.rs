//! Rate limits through the HTTP layer: headers, 429, spoofing, and the Redis backend shared by
//! two gateways (with Redis killed and restarted mid-run).

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .unwrap()
        .to_owned()
}

fn body() -> Value {
    json!({"prompt": "a door", "provider": "simulator"})
}

#[tokio::test]
async fn the_third_request_in_a_minute_is_429_and_every_response_carries_the_headers() {
    let app = spawn_app_with(&[("SPARK_RATE_LIMIT_GENERATE", "2/min,burst=2")]).await;
    let first = app.post_generate(&body()).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-limit"), "2");
    assert_eq!(header(&first, "x-ratelimit-remaining"), "1");
    assert_eq!(header(&first, "x-ratelimit-reset"), "30");
    let second = app.post_generate(&body()).await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&second, "x-ratelimit-reset"), "60");
    let third = app.post_generate(&body()).await;
    assert_eq!(header(&third, "retry-after"), "30");
    assert_eq!(header(&third, "x-ratelimit-limit"), "2");
    assert_eq!(header(&third, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&third, "x-ratelimit-reset"), "60");
    let err = assert_error(third, 429, "rate_limited").await;
    let ms = err["error"]["details"]["retryAfterMs"].as_u64().unwrap();
    assert!((29_000..=30_000).contains(&ms), "{ms}");

    // Another key has its own budget; the master key is exempt.
    let bob = app.post_generate_as(BOB_KEY, &body()).await;
    assert_eq!(bob.status(), 200);
    for _ in 0..3 {
        let master = app.post_generate_as(MASTER_KEY, &body()).await;
        assert_eq!(master.status(), 200);
    }
    let m = app.metrics().await;
    assert!(
        m.contains("spark_rate_limited_total{route=\"generate\"} 1"),
        "{m}"
    );
}

/// The sum of the Redis fallback counters whose series start with `prefix`.
async fn redis_fallbacks(app: &TestApp, prefix: &str) -> u64 {
    app.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn anonymous(app: &TestApp, forwarded_for: &str) -> u16 {
    app.client
        .post(app.url("/api/spark/generate"))
        .header("x-forwarded-for", forwarded_for)
        .json(&body())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_bucket() {
    let open = [
        ("SPARK_MASTER_API_KEY", ""),
        ("SPARK_API_KEYS", ""),
        ("SPARK_RATE_LIMIT_GENERATE", "1/min"),
    ];
    let app = spawn_app_with(&open).await;
    assert_eq!(anonymous(&app, "198.51.100.1").await, 200);
    assert_eq!(
        anonymous(&app, "198.51.100.2").await,
        429,
        "same peer, same bucket"
    );

    let mut trusted = open.to_vec();
    trusted.push(("SPARK_TRUSTED_PROXIES", "127.0.0.1"));
    let app = spawn_app_with(&trusted).await;
    assert_eq!(anonymous(&app, "198.51.100.1").await, 200);
    assert_eq!(
        anonymous(&app, "198.51.100.2").await,
        200,
        "a trusted proxy's client has its own bucket"
    );
    assert_eq!(anonymous(&app, "198.51.100.1").await, 429);
}

/// Issue 16, finding 9: every `X-Forwarded-For` line is read, and hops written `ip:port` or
/// `[v6]:port` are their address (each was the proxy's own bucket before: one for everyone).
#[tokio::test]
async fn forwarded_for_lines_are_joined_and_hops_with_ports_are_parsed() {
    let app = spawn_app_with(&[
        ("SPARK_MASTER_API_KEY", ""),
        ("SPARK_API_KEYS", ""),
        ("SPARK_RATE_LIMIT_GENERATE", "1/min"),
        ("SPARK_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    assert_eq!(anonymous(&app, "198.51.100.7:5555").await, 200);
    assert_eq!(
        anonymous(&app, "198.51.100.8:5555").await,
        200,
        "another client behind the same proxy port"
    );
    assert_eq!(
        anonymous(&app, "198.51.100.7:7777").await,
        429,
        "the same client from another source port"
    );
    assert_eq!(anonymous(&app, "[2001:db8::1]:443").await, 200);
    assert_eq!(anonymous(&app, "2001:db8::1").await, 429);

    // Two header lines are one list: the right-most hop is on the second line.
    let two_lines = app
        .client
        .post(app.url("/api/spark/generate"))
        .header("x-forwarded-for", "198.51.100.20")
        .header("x-forwarded-for", "198.51.100.21")
        .json(&body())
        .send()
        .await
        .unwrap();
    assert_eq!(two_lines.status(), 200);
    assert_eq!(
        anonymous(&app, "198.51.100.21").await,
        429,
        "the client was read from the last line"
    );
    assert_eq!(anonymous(&app, "198.51.100.20").await, 200);
}

/// Issue 16, finding 7: a Redis that accepts and never answers costs one timeout, then
/// requests skip it for a back-off window instead of each waiting out the timeout.
#[tokio::test]
async fn a_stalled_redis_costs_one_timeout_not_one_per_request() {
    let redis = TestRedis::start().await;
    let url = redis.url();
    let app = spawn_app_with(&[
        ("REDIS_URL", url.as_str()),
        ("SPARK_CACHE_TTL", "1h"),
        ("SPARK_REDIS_TIMEOUT", "1s"),
    ])
    .await;
    wait_for_redis(&app, true).await;
    assert_eq!(app.post_generate(&body()).await.status(), 200);

    redis.signal("-STOP");
    let mut slow = 0;
    for i in 0..10 {
        let started = std::time::Instant::now();
        let resp = app
            .post_generate(&json!({"prompt": format!("stalled {i}"), "provider": "simulator"}))
            .await;
        assert_eq!(resp.status(), 200, "served without Redis");
        // Half the timeout: far above a simulator answer, far below a wait on Redis.
        slow += usize::from(started.elapsed() >= Duration::from_millis(500));
    }
    redis.signal("-CONT");
    // The first request meets the stall (so Redis was on the path); a later one may probe at
    // the end of the window.
    assert!(
        (1..=2).contains(&slow),
        "{slow} of 10 requests waited on the stalled Redis"
    );
    let fallbacks = redis_fallbacks(&app, "spark_redis_fallback_total{").await;
    assert!(fallbacks >= 10, "every request fell back: {fallbacks}");
}

#[tokio::test]
async fn two_gateways_sharing_redis_share_one_budget_and_one_cache() {
    let redis = TestRedis::start().await;
    let url = redis.url();
    let shared = [
        ("REDIS_URL", url.as_str()),
        ("SPARK_RATE_LIMIT_GENERATE", "5/min"),
        ("SPARK_CACHE_TTL", "1h"),
        ("SPARK_CACHE_HMAC_KEY", SHARED_HMAC_KEY),
    ];
    let a = spawn_app_with(&shared).await;
    let b = spawn_app_with(&shared).await;
    wait_for_redis(&a, true).await;
    wait_for_redis(&b, true).await;

    let mut accepted = 0;
    for i in 0..12 {
        let app = if i % 2 == 0 { &a } else { &b };
        let resp = app
            .post_generate(&json!({"prompt": format!("door {i}"), "provider": "simulator"}))
            .await;
        match resp.status().as_u16() {
            200 => accepted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        accepted, 5,
        "the two replicas together accept exactly the limit"
    );

    // Instance A generates; instance B answers the same prompt from the shared cache.
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_answer(UNITY_ANSWER)))
        .expect(1)
        .mount(&a.anthropic)
        .await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_answer(UNITY_ANSWER)))
        .expect(0)
        .mount(&b.anthropic)
        .await;
    let prompt = json!({"prompt": "a shared gate", "provider": "anthropic"});
    let on_a = a.post_generate_as(MASTER_KEY, &prompt).await;
    assert_eq!(on_a.headers()["x-cache"], "MISS");
    // Shared writes never delay a response: wait until this one has landed.
    redis.wait_for_keys("spark:cache:*", 1).await;
    let on_b = b.post_generate_as(MASTER_KEY, &prompt).await;
    assert_eq!(on_b.status(), 200);
    assert_eq!(on_b.headers()["x-cache"], "HIT");
    let a_body: Value = on_a.json().await.unwrap();
    let b_body: Value = on_b.json().await.unwrap();
    assert_eq!(a_body["code"], b_body["code"]);
    assert_eq!(b_body["cached"], true);
}

#[tokio::test]
async fn with_redis_killed_requests_keep_succeeding_and_the_backend_recovers_by_itself() {
    let mut redis = TestRedis::start().await;
    let url = redis.url();
    let app = spawn_app_with(&[("REDIS_URL", url.as_str()), ("SPARK_CACHE_TTL", "1h")]).await;
    let h = wait_for_redis(&app, true).await;
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["checks"]["rateLimiter"]["backend"], "redis");
    assert_eq!(app.post_generate(&body()).await.status(), 200);

    redis.kill();
    for i in 0..5 {
        let started = std::time::Instant::now();
        let resp = app
            .post_generate(&json!({"prompt": format!("down {i}"), "provider": "simulator"}))
            .await;
        assert_eq!(resp.status(), 200, "served on local state");
        assert!(resp.headers().get("x-ratelimit-remaining").is_some());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "Redis never holds a request"
        );
    }
    let h = wait_for_redis(&app, false).await;
    assert_eq!(h["status"], "degraded");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "Redis down does not fail readiness");
    let fallbacks = redis_fallbacks(&app, "spark_redis_fallback_total{op=\"ratelimit\"}").await;
    assert!(fallbacks >= 5, "fallbacks counted: {fallbacks}");

    assert!(redis.spawn().await, "restart on the same port");
    // The connection manager reconnects on use; keep the traffic flowing until it does.
    let mut recovered = false;
    // Redis is probed once per back-off window (1 s doubling), so recovery takes a few windows.
    for i in 0..400 {
        let _ = app
            .post_generate(&json!({"prompt": format!("up {i}"), "provider": "simulator"}))
            .await;
        let h: Value = app.health().await.1;
        if h["checks"]["rateLimiter"]["ok"] == true && h["status"] == "healthy" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the backend recovered without a gateway restart");
}

/// The limiter contract, one body for both backends: a burst of 3 per minute, one key after
/// another, overrides per user, the headers' numbers and the retry time.
async fn limiter_contract(limiter: &dyn spark_gateway::ratelimit::Limiter) {
    use spark_gateway::ratelimit::{LimitKey, RouteClass};
    // Unique keys per run, so a shared Redis holds no earlier state for them.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let alice = LimitKey::User(format!("alice{run}"));
    let bob = LimitKey::User(format!("bob{run}"));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let d = limiter.check(RouteClass::Generate, &alice).await;
        assert!(d.allowed);
        assert_eq!(d.limit, 3);
        remaining.push(d.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = limiter.check(RouteClass::Generate, &alice).await;
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    // One request comes back every 20 s.
    assert!(refused.retry_after > Duration::from_secs(19), "{refused:?}");
    assert!(
        refused.retry_after <= Duration::from_secs(20),
        "{refused:?}"
    );
    // Another key, and another route class, have their own buckets.
    assert!(limiter.check(RouteClass::Generate, &bob).await.allowed);
    assert!(limiter.check(RouteClass::Export, &alice).await.allowed);
    // The override for `vip` is 1 per minute (each backend here is fresh, so `vip` is unused).
    let vip = LimitKey::User("vip".to_owned());
    assert!(limiter.check(RouteClass::Generate, &vip).await.allowed);
    assert!(!limiter.check(RouteClass::Generate, &vip).await.allowed);
}

fn contract_quotas(run_vip: &str) -> spark_gateway::ratelimit::Quotas {
    use spark_gateway::ratelimit::{Quota, Quotas};
    let q = |s| Quota::parse(s).unwrap();
    Quotas {
        generate: q("3/min"),
        export: q("3/min"),
        openai: q("3/min"),
        anthropic: q("3/min"),
        overrides: [(run_vip.to_owned(), q("1/min"))].into_iter().collect(),
        master_exempt: true,
    }
}

#[tokio::test]
async fn the_memory_limiter_keeps_the_contract() {
    let limiter = spark_gateway::ratelimit::MemoryLimiter::new(contract_quotas("vip"));
    limiter_contract(&limiter).await;
}

#[tokio::test]
async fn the_redis_limiter_keeps_the_same_contract() {
    use spark_gateway::ratelimit::Limiter;
    let redis = TestRedis::start().await;
    let metrics = std::sync::Arc::new(spark_gateway::telemetry::Metrics::new().unwrap());
    let backend = spark_gateway::redis::RedisBackend::connect(
        &secrecy::SecretString::from(redis.url()),
        Duration::from_millis(500),
        metrics,
    )
    .unwrap();
    let limiter =
        spark_gateway::ratelimit::redis::RedisLimiter::new(backend, contract_quotas("vip"));
    for _ in 0..200 {
        if limiter.ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(limiter.ok(), "connected to the test's redis-server");
    limiter_contract(&limiter).await;
    assert!(
        !redis.keys("spark:rl:*").await.is_empty(),
        "the decisions were Redis's, not the memory fallback's"
    );
}
