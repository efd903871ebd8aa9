//! The open model's latency accounting, checked against servers whose delay is known.
//!
//! Tolerances, not timings, decide: a fixed-delay server must measure at least its delay and not
//! much more; a server that can only take half the offered rate must show the queue building up
//! (latency from the *due* time), where a closed loop against the same server would not.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use reqwest::Method;
use reqwest::header::HeaderMap;
use spark_loadtest::mock::MockConfig;
use spark_loadtest::runner::{self, Live, LoadModel, RunConfig, Stop};
use spark_loadtest::scenario::{RequestFactory, Workload};
use spark_loadtest::stats::Summary;

const DELAY: Duration = Duration::from_millis(25);

fn config(url: &str, body: Option<&'static str>, model: LoadModel, stop: Stop) -> RunConfig {
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", "sk-test-upstream".parse().unwrap());
    headers.insert("anthropic-version", "2023-06-01".parse().unwrap());
    RunConfig {
        factory: RequestFactory::new(
            url,
            Workload::Custom {
                method,
                body: body.map(|b| b.as_bytes().to_vec().into()),
            },
            0,
        ),
        model,
        stop,
        warmup: Duration::from_millis(200),
        timeout: Duration::from_secs(10),
        max_inflight: 1000,
        headers,
    }
}

async fn run(cfg: RunConfig) -> Summary {
    let live = Arc::new(Live::new().unwrap());
    runner::run(cfg, live).await.unwrap().summary()
}

const MESSAGES: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"a door"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_fixed_delay_the_measured_p50_is_the_delay_within_tolerance() {
    let mock = start_mock_with_delay().await;
    let s = run(config(
        &format!("{mock}/v1/messages"),
        Some(MESSAGES),
        LoadModel::Open { rate: 100.0 },
        Stop::Requests(100),
    ))
    .await;
    assert_eq!(s.requests, 100);
    assert_eq!(s.errors, 0, "{:?}", s.status_counts);
    let p50 = s.latency_ms.p50;
    let delay = DELAY.as_secs_f64() * 1000.0;
    // Never below the delay (the clock starts at the due time, before the server sleeps), and
    // above it only by loopback, timer and scheduling overhead.
    assert!(
        p50 >= delay,
        "p50 {p50} ms is below the server's {delay} ms"
    );
    assert!(p50 <= delay + 15.0, "p50 {p50} ms is far above {delay} ms");
    // 100 requests at 100/s take a second; the throughput says the schedule was kept.
    assert!(
        (s.throughput_rps - 100.0).abs() < 15.0,
        "{}",
        s.throughput_rps
    );
}

async fn start_mock_with_delay() -> String {
    common::start_mock(MockConfig {
        latency: DELAY,
        ..MockConfig::default()
    })
    .await
}

/// A server that answers one request at a time, each after `DELAY`: 40 per second at most.
async fn start_serial_server() -> String {
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let app = Router::new().route(
        "/",
        get(move || {
            let lock = Arc::clone(&lock);
            async move {
                let _one_at_a_time = lock.lock().await;
                tokio::time::sleep(DELAY).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_counts_queueing_that_a_closed_loop_hides() {
    let serial = start_serial_server().await;
    // Offered 80/s for a second against a capacity of 40/s: by the end the backlog is about
    // 40 requests, a second of waiting. Latency from the due time must show that.
    let open = run(config(
        &serial,
        None,
        LoadModel::Open { rate: 80.0 },
        Stop::Requests(80),
    ))
    .await;
    // One worker never queues: each request waits only for its own answer.
    let closed = run(config(
        &serial,
        None,
        LoadModel::Closed { concurrency: 1 },
        Stop::Requests(20),
    ))
    .await;
    let delay = DELAY.as_secs_f64() * 1000.0;
    assert_eq!(open.errors + closed.errors, 0);
    assert!(
        closed.latency_ms.p50 < 2.0 * delay,
        "closed p50 {}",
        closed.latency_ms.p50
    );
    assert!(
        open.latency_ms.p50 > 8.0 * delay,
        "open p50 {} ms does not show the queue",
        open.latency_ms.p50
    );
    // The last requests waited for roughly the whole backlog.
    assert!(
        open.latency_ms.max > 20.0 * delay,
        "{}",
        open.latency_ms.max
    );
}
