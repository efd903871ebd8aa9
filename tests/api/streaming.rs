//! Streaming generation (SSE): recorded-shape upstream streams replayed by wiremock, fallback
//! before the first byte, an error after it, and a client that goes away mid-stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

/// An Anthropic Messages stream, in the shape the API sends, carrying `text` in small deltas.
pub fn anthropic_sse(text: &str, fail_after_first: bool) -> String {
    let mut s = String::new();
    s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":321,\"output_tokens\":1}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
    let chars: Vec<char> = text.chars().collect();
    for (i, chunk) in chars.chunks(17).enumerate() {
        let piece: String = chunk.iter().collect();
        let data = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}});
        s.push_str(&format!("event: content_block_delta\ndata: {data}\n\n"));
        if fail_after_first && i == 0 {
            s.push_str("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
            return s;
        }
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":654}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s
}

/// An OpenAI chat completion chunk stream, ending with a usage chunk and `[DONE]`.
pub fn openai_sse(text: &str) -> String {
    let mut s = String::new();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1-2025-04-14",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    s.push_str(&format!(
        "data: {}\n\n",
        chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    ));
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(13) {
        let piece: String = piece.iter().collect();
        s.push_str(&format!(
            "data: {}\n\n",
            chunk(json!({"content": piece}), Value::Null)
        ));
    }
    s.push_str(&format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
    s.push_str(&format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1-2025-04-14",
               "choices": [], "usage": {"prompt_tokens": 111, "completion_tokens": 222, "total_tokens": 333}})
    ));
    s.push_str("data: [DONE]\n\n");
    s
}

/// The gateway's SSE answer as (event, data) pairs.
pub async fn read_events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .filter_map(|block| {
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (!data.is_empty()).then(|| (event, serde_json::from_str(&data).unwrap()))
        })
        .collect()
}

fn comparable(mut body: Value) -> Value {
    for volatile in ["id", "latencyMs", "cached"] {
        body.as_object_mut().unwrap().remove(volatile);
    }
    body
}

async fn stream_and_plain(app: &TestApp, body: Value) -> (Vec<(String, Value)>, Value) {
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = app.post_generate(&streamed).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = read_events(resp).await;
    let plain = app.post_generate(&body).await;
    assert_eq!(plain.status(), 200);
    (events, plain.json().await.unwrap())
}

fn check_stream(events: &[(String, Value)], answer: &str, plain: &Value) {
    let (last, deltas) = events.split_last().unwrap();
    assert!(deltas.iter().all(|(e, _)| e == "delta"), "{events:?}");
    let joined: String = deltas
        .iter()
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(joined, answer, "the deltas, in order, are the model's text");
    assert!(deltas.len() > 3);
    assert_eq!(last.0, "done");
    assert_eq!(
        comparable(last.1.clone()),
        comparable(plain.clone()),
        "done equals the non-streaming body"
    );
}

#[tokio::test]
async fn an_anthropic_stream_arrives_in_order_and_done_equals_the_plain_answer() {
    let app = spawn_app_with(&[("SPARK_CACHE_TTL", "0")]).await;
    Mock::given(path("/v1/messages"))
        .and(body_string_contains("\"stream\":true"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(anthropic_sse(UNITY_ANSWER, false), "text/event-stream"),
        )
        .mount(&app.anthropic)
        .await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_answer(UNITY_ANSWER)))
        .mount(&app.anthropic)
        .await;
    let (events, plain) =
        stream_and_plain(&app, json!({"prompt": "a door", "provider": "anthropic"})).await;
    check_stream(&events, UNITY_ANSWER, &plain);
    assert_eq!(
        events.last().unwrap().1["usage"],
        json!({"inputTokens": 321, "outputTokens": 654})
    );
}

#[tokio::test]
async fn an_openai_chunk_stream_arrives_in_order_and_done_equals_the_plain_answer() {
    let app = spawn_app_with(&[("SPARK_CACHE_TTL", "0")]).await;
    Mock::given(path("/v1/chat/completions"))
        .and(body_string_contains("\"stream\":true"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(openai_sse(UNITY_ANSWER), "text/event-stream"),
        )
        .mount(&app.openai)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer(UNITY_ANSWER)))
        .mount(&app.openai)
        .await;
    let (events, plain) =
        stream_and_plain(&app, json!({"prompt": "a door", "provider": "openai"})).await;
    check_stream(&events, UNITY_ANSWER, &plain);
    let sent: Value =
        serde_json::from_slice(&app.openai.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn a_failure_before_the_first_byte_falls_back_and_after_it_ends_with_an_error_event() {
    let app = spawn_app_with(&[("SPARK_CACHE_TTL", "0")]).await;
    Mock::given(path("/v1/messages"))
        .and(body_string_contains("before"))
        .respond_with(ResponseTemplate::new(529))
        .mount(&app.anthropic)
        .await;
    Mock::given(path("/v1/messages"))
        .and(body_string_contains("after"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(anthropic_sse(UNITY_ANSWER, true), "text/event-stream"),
        )
        .mount(&app.anthropic)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(openai_sse(UNITY_ANSWER), "text/event-stream"),
        )
        .mount(&app.openai)
        .await;

    let resp = app
        .post_generate(&json!({"prompt": "fail before", "stream": true}))
        .await;
    assert_eq!(
        resp.headers()["x-provider"],
        "openai",
        "fell back before any byte"
    );
    let events = read_events(resp).await;
    assert_eq!(events.last().unwrap().0, "done");

    let resp = app
        .post_generate(&json!({"prompt": "fail after", "stream": true}))
        .await;
    assert_eq!(resp.headers()["x-provider"], "anthropic");
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let events = read_events(resp).await;
    assert_eq!(events[0].0, "delta");
    let (event, err) = events.last().unwrap();
    assert_eq!(event, "error");
    assert_eq!(err["error"]["code"], "upstream_error");
    assert_eq!(err["error"]["requestId"], request_id.as_str());
    assert!(!events.iter().any(|(e, _)| e == "done"));
}

#[tokio::test]
async fn a_cache_hit_streams_the_stored_answer_as_one_delta_and_done() {
    let app = spawn_app_with(&[("SPARK_CACHE_TTL", "1h")]).await;
    let body = json!({"prompt": "Create a Unity player controller", "provider": "simulator", "stream": true});
    let first = read_events(app.post_generate(&body).await).await;
    let resp = app.post_generate(&body).await;
    assert_eq!(resp.headers()["x-cache"], "HIT");
    let second = read_events(resp).await;
    assert_eq!(second.len(), 2);
    let first_text: String = first
        .iter()
        .filter(|(e, _)| e == "delta")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        second[0].1["text"],
        first_text.as_str(),
        "the stored answer, whole"
    );
    assert_eq!(second[1].1["code"], first.last().unwrap().1["code"]);
    assert_eq!(second[1].1["cached"], true);
    // A plain request is answered from what the stream stored.
    let plain = app
        .post_generate(
            &json!({"prompt": "Create a Unity player controller", "provider": "simulator"}),
        )
        .await;
    assert_eq!(plain.headers()["x-cache"], "HIT");
}

/// A paced Anthropic stand-in (wiremock cannot pace a body): a first delta at once, then one
/// every `pace`, noting when the gateway hangs up.
pub async fn slow_upstream(closed: Arc<AtomicBool>, pace: Duration) -> String {
    use axum::response::sse::{Event, Sse};
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let app = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(move || {
            let closed = Arc::clone(&closed);
            async move {
                let guard = Guard(closed);
                let start = futures_util::stream::iter([
                    Ok::<_, std::convert::Infallible>(Event::default().event("message_start").data(
                        r#"{"type":"message_start","message":{"model":"claude-slow","usage":{"input_tokens":1}}}"#,
                    )),
                ]);
                let deltas = futures_util::stream::unfold((0u32, guard), move |(i, g)| async move {
                    if i > 0 {
                        tokio::time::sleep(pace).await;
                    }
                    (i < 100).then(|| {
                        let ev = Event::default().event("content_block_delta").data(
                            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"tick "}}"#,
                        );
                        (Ok(ev), (i + 1, g))
                    })
                });
                Sse::new(futures_util::StreamExt::chain(start, deltas))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    spark_gateway::telemetry::spawn_named("test-upstream", async move {
        axum::serve(listener, app).await.unwrap()
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_closes_the_upstream_within_a_second() {
    let closed = Arc::new(AtomicBool::new(false));
    let upstream = slow_upstream(Arc::clone(&closed), Duration::from_millis(100)).await;
    let app = spawn_app_with(&[
        ("ANTHROPIC_BASE_URL", upstream.as_str()),
        ("SPARK_CACHE_TTL", "0"),
    ])
    .await;
    let mut resp = app
        .post_generate(&json!({"prompt": "a long answer", "provider": "anthropic", "stream": true}))
        .await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("tick"));
    assert!(!closed.load(Ordering::SeqCst));
    drop(resp);
    let hung_up = Instant::now();
    while !closed.load(Ordering::SeqCst) {
        assert!(
            hung_up.elapsed() < Duration::from_secs(1),
            "the upstream stream is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stream_that_goes_silent_ends_with_an_error_event() {
    let closed = Arc::new(AtomicBool::new(false));
    let upstream = slow_upstream(Arc::clone(&closed), Duration::from_secs(30)).await;
    let app = spawn_app_with(&[
        ("ANTHROPIC_BASE_URL", upstream.as_str()),
        ("SPARK_CACHE_TTL", "0"),
        ("SPARK_UPSTREAM_TIMEOUT", "300ms"),
        ("SPARK_REQUEST_DEADLINE", "300ms"),
    ])
    .await;
    let started = Instant::now();
    let resp = app
        .post_generate(&json!({"prompt": "a long answer", "provider": "anthropic", "stream": true}))
        .await;
    assert_eq!(resp.status(), 200);
    let events = read_events(resp).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the idle limit"
    );
    assert_eq!(events[0].0, "delta");
    let (event, err) = events.last().unwrap();
    assert_eq!(event, "error");
    assert_eq!(err["error"]["code"], "upstream_error");
}
