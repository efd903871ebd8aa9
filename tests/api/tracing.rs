//! Distributed traces, black-box: the real binary exports OTLP/HTTP to a collector run here (an
//! axum route decoding the protobuf), with mock providers on 127.0.0.1.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::helpers::{ALICE_KEY, ANTHROPIC_KEY, OPENAI_KEY, UNITY_ANSWER, openai_answer};

const BIN: &str = env!("CARGO_BIN_EXE_spark-gateway");
const MARKER: &str = "TRACE-PROMPT-MARKER-7731";
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

/// An OTLP/HTTP traces receiver. `hold`, when set, keeps every export request waiting until
/// the test releases it (a collector that has stopped answering).
struct Collector {
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    release: Arc<tokio::sync::Semaphore>,
}

async fn collector(hold: bool) -> Collector {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(tokio::sync::Semaphore::new(if hold { 0 } else { 1 << 20 }));
    let app = {
        let (bodies, release) = (Arc::clone(&bodies), Arc::clone(&release));
        axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let (bodies, release) = (Arc::clone(&bodies), Arc::clone(&release));
                async move {
                    let _permit = release.acquire().await.unwrap();
                    // Anything but a valid OTLP protobuf body fails the test where it is read.
                    ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
                    bodies.lock().unwrap().push(body.to_vec());
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    spark_gateway::telemetry::spawn_named("test-collector", async move {
        axum::serve(listener, app).await
    });
    Collector {
        url,
        bodies,
        release,
    }
}

impl Collector {
    fn spans(&self) -> Vec<Span> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                ExportTraceServiceRequest::decode(b.as_slice())
                    .unwrap()
                    .resource_spans
            })
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }

    /// Waits for the span named `name` (the request's, which ends last).
    async fn wait_for(&self, name: &str) -> Vec<Span> {
        let started = Instant::now();
        loop {
            let spans = self.spans();
            if spans.iter().any(|s| s.name == name) {
                return spans;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no span {name:?} reached the collector; got {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn raw(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }
}

/// The gateway binary, killed (by its own PID) when dropped.
struct Gateway {
    child: Child,
    base: String,
    stderr: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

async fn gateway(
    collector: &Collector,
    anthropic: &MockServer,
    openai: &MockServer,
    extra: &[(&str, &str)],
) -> Gateway {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stderr = std::env::temp_dir().join(format!("spark-trace-test-{port}.log"));
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SPARK_BIND", format!("127.0.0.1:{port}"))
        .env("SPARK_API_KEYS", ALICE_KEY)
        .env("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        .env("ANTHROPIC_BASE_URL", anthropic.uri())
        .env("OPENAI_API_KEY", OPENAI_KEY)
        .env("OPENAI_BASE_URL", format!("{}/v1", openai.uri()))
        .env("SPARK_PROVIDER_ORDER", "anthropic,openai")
        .env("SPARK_LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20collector-token-XYZ",
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "50");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let gw = Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
        stderr,
    };
    let started = Instant::now();
    while reqwest::get(format!("{}/livez", gw.base)).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the gateway did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw
}

/// Anthropic fails with a 500, OpenAI answers: the request falls back.
async fn failing_anthropic_answering_openai() -> (MockServer, MockServer) {
    let anthropic = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
        ))
        .mount(&anthropic)
        .await;
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer(UNITY_ANSWER)))
        .mount(&openai)
        .await;
    (anthropic, openai)
}

async fn generate(gw: &Gateway, traceparent: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/spark/generate", gw.base))
        .header("x-api-key", ALICE_KEY)
        .json(&json!({"prompt": format!("Create a sliding door {MARKER}"), "engine": "unity"}));
    if let Some(tp) = traceparent {
        req = req
            .header("traceparent", tp)
            .header("tracestate", "vendor=abc");
    }
    req.send().await.unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(span, key) {
        Some(AnyValue::StringValue(s)) => s,
        other => panic!("{}: {key} is {other:?}", span.name),
    }
}

fn int_attr(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(AnyValue::IntValue(i)) => *i,
        other => panic!("{}: {key} is {other:?}", span.name),
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "exactly one span {name:?}");
    found[0]
}

#[tokio::test]
async fn a_generate_call_with_a_fallback_exports_its_span_tree_and_continues_the_client_trace() {
    let collector = collector(false).await;
    let (anthropic, openai) = failing_anthropic_answering_openai().await;
    let gw = gateway(&collector, &anthropic, &openai, &[]).await;

    let resp = generate(&gw, Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-provider"], "openai");

    let spans: Vec<Span> = collector
        .wait_for("POST /api/spark/generate")
        .await
        .into_iter()
        .filter(|s| hex(&s.trace_id) == CLIENT_TRACE)
        .collect();
    // The whole request is in the client's trace, and nothing else is (the readiness polls
    // before it are traces of their own).
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "POST /api/spark/generate",
            "auth",
            "chat claude-sonnet-4-5",
            "chat gpt-4.1",
            "generate",
            "rate_limit",
            "sanitize"
        ]
    );
    let request = one(&spans, "POST /api/spark/generate");
    assert_eq!(
        hex(&request.parent_span_id),
        CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(int_attr(request, "http.response.status_code"), 200);

    // The steps hang off the request; the attempts off the generation step, in order.
    let child_of = |s: &Span, parent: &Span| s.parent_span_id == parent.span_id;
    for step in ["auth", "rate_limit", "sanitize", "generate"] {
        assert!(
            child_of(one(&spans, step), request),
            "{step} is a child of the request"
        );
    }
    let generation = one(&spans, "generate");
    assert_eq!(str_attr(generation, "cache"), "miss");
    let claude = one(&spans, "chat claude-sonnet-4-5");
    let gpt = one(&spans, "chat gpt-4.1");
    for (attempt, system) in [(claude, "anthropic"), (gpt, "openai")] {
        assert!(
            child_of(attempt, generation),
            "{} is a child of generate",
            attempt.name
        );
        assert_eq!(attempt.kind, 3, "a client span");
        assert_eq!(str_attr(attempt, "gen_ai.system"), system);
        assert_eq!(str_attr(attempt, "gen_ai.operation.name"), "chat");
        assert_eq!(int_attr(attempt, "spark.retry"), 0);
    }
    assert!(
        claude.end_time_unix_nano <= gpt.start_time_unix_nano,
        "fallback comes after"
    );
    assert_eq!(int_attr(claude, "http.response.status_code"), 500);
    assert_eq!(str_attr(claude, "error.type"), "server_error");
    assert_eq!(claude.status.as_ref().unwrap().code, 2, "status error");
    assert_eq!(str_attr(gpt, "gen_ai.response.model"), "gpt-4.1-2025-04-14");
    assert!(int_attr(gpt, "gen_ai.usage.input_tokens") > 0);
    assert!(int_attr(gpt, "gen_ai.usage.output_tokens") > 0);

    // Nothing the caller wrote and no key reaches the collector.
    let raw = String::from_utf8_lossy(&collector.raw()).into_owned();
    for secret in [
        MARKER,
        ALICE_KEY,
        ANTHROPIC_KEY,
        OPENAI_KEY,
        "collector-token-XYZ",
    ] {
        assert!(
            !raw.contains(secret),
            "{secret} leaked into the exported spans"
        );
    }

    // Each provider got the attempt's context: the client's trace, the attempt's span id.
    for (mock, attempt) in [(&anthropic, claude), (&openai, gpt)] {
        let received = mock.received_requests().await.unwrap();
        let tp = received[0].headers["traceparent"].to_str().unwrap();
        assert_eq!(
            tp,
            format!("00-{CLIENT_TRACE}-{}-01", hex(&attempt.span_id))
        );
        assert_eq!(received[0].headers["tracestate"], "vendor=abc");
    }

    // The request's log line carries the trace id.
    let log = std::fs::read_to_string(&gw.stderr).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("request finished") && l.contains("/api/spark/generate"))
        .expect("a request line");
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["trace_id"], CLIENT_TRACE, "{line}");
}

#[tokio::test]
async fn an_untrusted_client_context_starts_a_new_trace_linked_to_it() {
    let collector = collector(false).await;
    let (anthropic, openai) = failing_anthropic_answering_openai().await;
    let gw = gateway(
        &collector,
        &anthropic,
        &openai,
        &[("SPARK_OTEL_TRUST_CLIENT_CONTEXT", "false")],
    )
    .await;
    assert_eq!(
        generate(&gw, Some(&format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")))
            .await
            .status(),
        200
    );
    let spans = collector.wait_for("POST /api/spark/generate").await;
    let request = one(&spans, "POST /api/spark/generate");
    assert_ne!(hex(&request.trace_id), CLIENT_TRACE);
    assert!(request.parent_span_id.is_empty(), "a root span");
    assert_eq!(request.links.len(), 1);
    assert_eq!(hex(&request.links[0].trace_id), CLIENT_TRACE);
    assert_eq!(hex(&request.links[0].span_id), CLIENT_SPAN);
    let tp = openai.received_requests().await.unwrap()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        tp.contains(&hex(&request.trace_id)),
        "the provider sees our trace, not the client's"
    );

    // A malformed traceparent is ignored, never an error.
    assert_eq!(generate(&gw, Some("00-zz-not-a-trace")).await.status(), 200);
}

#[tokio::test]
async fn a_stalled_collector_costs_dropped_spans_not_requests() {
    let collector = collector(true).await;
    let (anthropic, openai) = failing_anthropic_answering_openai().await;
    let gw = gateway(
        &collector,
        &anthropic,
        &openai,
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "2"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1"),
            ("SPARK_CACHE_TTL", "0s"),
        ],
    )
    .await;
    // The collector holds every export it receives: these requests are answered while it does,
    // so none of them waits on the export.
    for _ in 0..5 {
        assert_eq!(generate(&gw, None).await.status(), 200);
    }
    let metrics = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spark_otel_spans_total{outcome=\"dropped\"} "))
        .and_then(|v| v.parse().ok())
        .expect("the dropped-span counter");
    // Each request ends at least 7 spans; the queue holds 2 and one export is in flight.
    assert!(dropped >= 5 * 7 - 3, "dropped {dropped}");
    assert_eq!(collector.spans().len(), 0, "nothing was accepted yet");
    collector.release.add_permits(1 << 20);
}

#[tokio::test]
async fn spans_still_queued_at_sigterm_are_exported_before_exit() {
    let collector = collector(false).await;
    let (anthropic, openai) = failing_anthropic_answering_openai().await;
    // A partial batch would wait ten minutes: only the shutdown flush can send it.
    let mut gw = gateway(
        &collector,
        &anthropic,
        &openai,
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    )
    .await;
    assert_eq!(generate(&gw, None).await.status(), 200);
    assert!(collector.spans().is_empty());
    let term = Command::new("kill")
        .args(["-TERM", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the gateway did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    let spans = collector.spans();
    assert!(
        spans.iter().any(|s| s.name == "POST /api/spark/generate"),
        "the request's spans were flushed: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_streamed_attempt_says_when_its_first_token_came() {
    let collector = collector(false).await;
    let anthropic = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(super::streaming::anthropic_sse(UNITY_ANSWER, false)),
        )
        .mount(&anthropic)
        .await;
    let openai = MockServer::start().await;
    let gw = gateway(&collector, &anthropic, &openai, &[]).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/spark/generate", gw.base))
        .header("x-api-key", ALICE_KEY)
        .json(&json!({"prompt": format!("Create a lever {MARKER}"), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = super::streaming::read_events(resp).await;
    assert!(events.iter().any(|(e, _)| e == "done"), "{events:?}");

    let spans = collector.wait_for("POST /api/spark/generate").await;
    let request = one(&spans, "POST /api/spark/generate");
    let attempt = one(&spans, "chat claude-sonnet-4-5");
    assert_eq!(
        attempt.trace_id, request.trace_id,
        "the streamed attempt is in the request's trace"
    );
    assert_eq!(
        attempt.parent_span_id, request.span_id,
        "under the request, not a task's span"
    );
    match attr(attempt, "spark.time_to_first_token_ms") {
        Some(AnyValue::DoubleValue(ms)) => assert!(*ms > 0.0),
        other => panic!("time to first token is {other:?}"),
    }
    assert!(!String::from_utf8_lossy(&collector.raw()).contains(MARKER));
}
