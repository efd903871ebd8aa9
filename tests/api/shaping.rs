//! Outbound shaping through the real router: a provider's capacity is respected, a busy
//! primary falls back, no room anywhere is 503 `providers_busy`, and health shows the lanes.

use serde_json::json;
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn capacity_is_respected_then_falls_back_then_answers_providers_busy() {
    let app = spawn_app_with(&[
        ("SPARK_PROVIDER_LIMITS", "anthropic=1rpm;openai=1rpm"),
        ("SPARK_QUEUE_TIMEOUT", "200ms"),
        ("SPARK_CACHE_TTL", "0s"),
    ])
    .await;
    both_providers_answer(&app).await;
    let body = json!({"prompt": "Create a door"});
    let ask = || app.post_generate(&body);

    let first = ask().await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-provider"], "anthropic");
    // Anthropic's minute is spent: the request waits in its line, then OpenAI has room.
    let second = ask().await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-provider"], "openai");
    // Both spent.
    let third = ask().await;
    let retry_after: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((55..=60).contains(&retry_after), "{retry_after}");
    let body = assert_error(third, 503, "providers_busy").await;
    assert!(body["error"]["details"]["retryAfterMs"].as_u64().unwrap() > 50_000);
    assert_eq!(app.anthropic.received_requests().await.unwrap().len(), 1);
    assert_eq!(app.openai.received_requests().await.unwrap().len(), 1);

    let (_, health) = app.health().await;
    let lanes = health["checks"]["shaping"].as_array().unwrap();
    assert_eq!(lanes.len(), 2);
    assert_eq!(lanes[0]["lane"], "anthropic");
    assert_eq!(lanes[0]["requestsAvailable"], 0);
    assert_eq!(lanes[0]["queuedInteractive"], 0);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("spark_shaper_rejected_total{lane=\"anthropic\",reason=\"timeout\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("spark_shaper_available{kind=\"requests\",lane=\"openai\"} 0"));
}

#[tokio::test]
async fn the_openai_compatible_api_gets_a_503_it_can_retry() {
    let app = spawn_app_with(&[
        ("SPARK_PROVIDER_LIMITS", "anthropic=1inflight"),
        ("SPARK_PROVIDER_ORDER", "anthropic"),
        ("SPARK_QUEUE_TIMEOUT", "100ms"),
        ("SPARK_CACHE_TTL", "0s"),
    ])
    .await;
    Mock::given(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(anthropic_answer(UNITY_ANSWER))
                .set_delay(std::time::Duration::from_secs(2)),
        )
        .mount(&app.anthropic)
        .await;
    let door =
        json!({"model": "spark-auto", "messages": [{"role": "user", "content": "Create a door"}]});
    let lamp =
        json!({"model": "spark-auto", "messages": [{"role": "user", "content": "Create a lamp"}]});
    let slow = app.chat(ALICE_KEY, &door);
    let busy = async {
        // The slow call holds the one slot by now.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        app.chat(ALICE_KEY, &lamp).await
    };
    let (slow, busy) = tokio::join!(slow, busy);
    assert_eq!(slow.status(), 200);
    assert_eq!(busy.status(), 503);
    assert!(busy.headers().contains_key("retry-after"));
    let body: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(body["error"]["code"], "providers_busy", "{body}");
}

#[tokio::test]
async fn a_providers_rate_limit_headers_shrink_the_local_budget() {
    let app = spawn_app_with(&[
        ("SPARK_PROVIDER_ORDER", "openai,anthropic"),
        ("SPARK_PROVIDER_LIMITS", "openai=600rpm"),
        ("SPARK_QUEUE_TIMEOUT", "200ms"),
        ("SPARK_CACHE_TTL", "0s"),
    ])
    .await;
    // OpenAI answers, and says our requests are spent for the next minute.
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(openai_answer(UNITY_ANSWER))
                .insert_header("x-ratelimit-remaining-requests", "0")
                .insert_header("x-ratelimit-reset-requests", "1m0s"),
        )
        .mount(&app.openai)
        .await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_answer(UNITY_ANSWER)))
        .mount(&app.anthropic)
        .await;
    let body = json!({"prompt": "Create a door"});
    let first = app.post_generate(&body).await;
    assert_eq!(first.headers()["x-provider"], "openai");
    // 600 rpm would allow this one at once; the provider's word does not.
    let second = app.post_generate(&body).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-provider"], "anthropic");
    assert_eq!(app.openai.received_requests().await.unwrap().len(), 1);
    let (_, health) = app.health().await;
    assert_eq!(health["checks"]["shaping"][0]["requestsAvailable"], 0);
}

#[tokio::test]
async fn with_redis_replicas_share_a_budget_and_each_keeps_its_own_when_redis_is_down() {
    let mut redis = TestRedis::start().await;
    let url = redis.url();
    let config = [
        ("REDIS_URL", url.as_str()),
        ("SPARK_PROVIDER_LIMITS", "anthropic=1rpm"),
        ("SPARK_PROVIDER_ORDER", "anthropic"),
        ("SPARK_QUEUE_TIMEOUT", "100ms"),
        ("SPARK_CACHE_TTL", "0s"),
    ];
    let a = spawn_app_with(&config).await;
    let b = spawn_app_with(&config).await;
    wait_for_redis(&a, true).await;
    wait_for_redis(&b, true).await;
    for app in [&a, &b] {
        both_providers_answer(app).await;
    }
    let body = json!({"prompt": "Create a door"});
    assert_eq!(a.post_generate(&body).await.status(), 200);
    // One call a minute between them: the other replica's budget is spent too.
    assert_error(b.post_generate(&body).await, 503, "providers_busy").await;
    assert!(b.anthropic.received_requests().await.unwrap().is_empty());
    assert_eq!(
        redis.keys("spark:shape:anthropic:*").await,
        ["spark:shape:anthropic:rpm"]
    );

    // Redis gone: each replica falls back to its own budget for the rule, never to none.
    redis.kill();
    assert_error(a.post_generate(&body).await, 503, "providers_busy").await;
    assert_eq!(b.post_generate(&body).await.status(), 200);
    assert_error(b.post_generate(&body).await, 503, "providers_busy").await;
    // b asked Redis (its own budget allowed the call) and fell back.
    assert!(
        b.metrics()
            .await
            .contains("spark_redis_fallback_total{op=\"shaping\"}")
    );
}

#[tokio::test]
async fn the_shared_budget_scripts_charge_refund_and_push_out_in_redis() {
    use spark_gateway::shaping::shared::{Budget, Shared, SharedBudgets};
    use std::time::Duration;
    let redis = TestRedis::start().await;
    let metrics = std::sync::Arc::new(spark_gateway::telemetry::Metrics::new().unwrap());
    let backend = spark_gateway::redis::RedisBackend::connect(
        &secrecy::SecretString::from(redis.url()),
        Duration::from_secs(1),
        metrics,
    )
    .unwrap();
    for _ in 0..100 {
        if backend.healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 6,000 tokens a minute: 10 ms a token, 100 at once.
    let tokens = Budget {
        interval: Duration::from_millis(10),
        burst: 100,
    };
    let shared = SharedBudgets::new(backend, "test", None, Some(tokens));
    assert_eq!(shared.take(1_000).await.unwrap(), Shared::Taken);
    let wait = |s: Shared| match s {
        Shared::Wait(d) => d,
        Shared::Taken => panic!("taken"),
    };
    // Ten seconds of debt less a burst's headroom for one token.
    let w = wait(shared.take(1).await.unwrap());
    assert!(
        w > Duration::from_millis(8_900) && w <= Duration::from_millis(9_010),
        "{w:?}"
    );
    // The call used 100 tokens: 9 s refunded.
    shared.adjust_tokens(-900).await.unwrap();
    let w = wait(shared.take(100).await.unwrap());
    assert!(
        w > Duration::from_millis(900) && w <= Duration::from_secs(1),
        "{w:?}"
    );
    // The provider says nothing is left for 30 s.
    shared
        .push_out(true, Duration::from_secs(30))
        .await
        .unwrap();
    let w = wait(shared.take(100).await.unwrap());
    assert!(w > Duration::from_secs(29), "{w:?}");
}

#[tokio::test]
async fn a_bare_429_with_retry_after_closes_the_lane_until_then() {
    let app = spawn_app_with(&[
        ("SPARK_PROVIDER_ORDER", "openai,anthropic"),
        ("SPARK_PROVIDER_LIMITS", "openai=600rpm"),
        ("SPARK_QUEUE_TIMEOUT", "100ms"),
        ("SPARK_CACHE_TTL", "0s"),
    ])
    .await;
    // OpenAI refuses with a 429 and no rate-limit headers, only retry-after.
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "30")
                .set_body_json(json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})),
        )
        .mount(&app.openai)
        .await;
    both_providers_answer(&app).await;
    let body = json!({"prompt": "Create a door"});
    assert_eq!(
        app.post_generate(&body).await.headers()["x-provider"],
        "anthropic"
    );
    assert_eq!(
        app.post_generate(&body).await.headers()["x-provider"],
        "anthropic"
    );
    // The second request did not go to OpenAI to collect another 429.
    let to_openai = app.openai.received_requests().await.unwrap().len();
    assert_eq!(to_openai, 1);
}
