//! Issue 16, finding 3: streams and slow bodies inside the in-flight budget, and streams bounded
//! in time and size.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::streaming::{read_events, slow_upstream};

#[tokio::test]
async fn a_stream_holds_its_in_flight_slot_until_it_ends() {
    let upstream =
        slow_upstream(Arc::new(AtomicBool::new(false)), Duration::from_millis(100)).await;
    let app = spawn_app_with(&[
        ("ANTHROPIC_BASE_URL", upstream.as_str()),
        ("SPARK_CACHE_TTL", "0"),
        ("SPARK_MAX_INFLIGHT", "1"),
    ])
    .await;
    let body = |prompt: &str| json!({"prompt": prompt, "provider": "anthropic", "stream": true});
    let mut first = app.post_generate(&body("the first long answer")).await;
    assert_eq!(first.status(), 200);
    assert!(
        first.chunk().await.unwrap().is_some(),
        "the stream is flowing"
    );
    for prompt in ["a second", "a third"] {
        let refused = app.post_generate(&body(prompt)).await;
        assert_error(refused, 503, "overloaded").await;
    }
    drop(first);
    // The slot comes back when the body is dropped; bounded wait for the server to notice.
    let mut served = false;
    for _ in 0..50 {
        let resp = app
            .post_generate(&json!({"prompt": "after", "provider": "simulator"}))
            .await;
        if resp.status() == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served,
        "the slot was released when the stream's body was dropped"
    );
}

#[tokio::test]
async fn a_body_trickled_byte_by_byte_gets_408_and_frees_its_slot() {
    let app = spawn_app_with(&[
        ("SPARK_MAX_INFLIGHT", "1"),
        ("SPARK_BODY_READ_TIMEOUT", "500ms"),
    ])
    .await;
    // One byte, then nothing: the body never completes.
    let trickle =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{"))])
            .chain(futures_util::stream::pending());
    let started = Instant::now();
    let slow = app
        .client
        .post(app.url("/api/spark/generate"))
        .header("x-api-key", ALICE_KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(trickle))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let body: Value = slow.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    let resp = app
        .post_generate(&json!({"prompt": "a door", "provider": "simulator"}))
        .await;
    assert_eq!(resp.status(), 200, "the slot is free again");
}

#[tokio::test]
async fn a_stream_ends_with_an_error_event_at_the_maximum_duration() {
    let upstream =
        slow_upstream(Arc::new(AtomicBool::new(false)), Duration::from_millis(100)).await;
    let app = spawn_app_with(&[
        ("ANTHROPIC_BASE_URL", upstream.as_str()),
        ("SPARK_CACHE_TTL", "0"),
        ("SPARK_MAX_STREAM_DURATION", "1s"),
    ])
    .await;
    let started = Instant::now();
    let resp = app
        .post_generate(&json!({"prompt": "a long answer", "provider": "anthropic", "stream": true}))
        .await;
    let events = read_events(resp).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "10 s of ticks were cut"
    );
    assert!(events.len() > 2, "some deltas came through first");
    let (event, err) = events.last().unwrap();
    assert_eq!(event, "error");
    assert_eq!(err["error"]["code"], "upstream_error");
}

/// An upstream that sends 48 MiB of `data:` lines without the blank line that would end the
/// event: the gateway refuses the event at its bound and its memory stays flat.
#[tokio::test]
async fn an_endless_upstream_event_ends_the_stream_without_growing_memory() {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            let line = bytes::Bytes::from(format!("data: {}\n", "x".repeat(1023)));
            let body = futures_util::stream::iter(
                (0..48 * 1024).map(move |_| Ok::<_, std::io::Error>(line.clone())),
            );
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/v1", listener.local_addr().unwrap());
    spark_gateway::telemetry::spawn_named("test-endless-upstream", async move {
        axum::serve(listener, app).await.unwrap()
    });
    let gateway = spawn_app_with(&[
        ("OPENAI_BASE_URL", upstream.as_str()),
        ("SPARK_PROVIDER_ORDER", "openai"),
        ("SPARK_CACHE_TTL", "0"),
    ])
    .await;
    let before = rss_bytes();
    let resp = gateway
        .post_generate(&json!({"prompt": "a door", "provider": "openai", "stream": true}))
        .await;
    // The first event never forms, so the walk's fallback check fails before any byte went out.
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!(
        status == 502 || text.contains("event: error"),
        "{status}: {text}"
    );
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 20 << 20, "RSS grew by {} MiB", grown >> 20);
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
