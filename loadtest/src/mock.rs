//! `spark-loadtest mock-upstream`: a fast stand-in for Anthropic and OpenAI that speaks their
//! wire formats, so the gateway can be loaded without a provider, a key or a network.
//!
//! `POST /v1/messages` answers as the Anthropic Messages API and `POST /v1/chat/completions` as
//! OpenAI Chat Completions, both plain and streaming (`"stream": true`: Anthropic's named events,
//! OpenAI's `data:` chunks ending in `[DONE]`). `--latency`/`--jitter` delay every answer,
//! `--error-rate`/`--error-status` fail a share of them with the provider's own error body (529
//! is Anthropic's `overloaded_error`). `--rpm-limit` enforces a provider's per-minute request
//! limit over a sliding minute: calls past it get the provider's 429 `rate_limit_error` with
//! `retry-after`, as an organisation over its quota does. `GET /stats` counts what arrived (`POST /stats/reset`
//! zeroes it) and `GET /ping` is the trivial route the benchmarks use as the bare baseline: the
//! same server, listener and HTTP stack with no work behind it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde_json::{Value, json};

/// How the mock behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MockConfig {
    /// Added before every provider answer.
    pub latency: Duration,
    /// A further uniformly random delay in `0..=jitter`.
    pub jitter: Duration,
    /// The share of provider calls answered with `error_status`, in `[0, 1]`.
    pub error_rate: f64,
    pub error_status: StatusCode,
    /// Provider calls accepted in any sliding minute; more get 429. `None`: no limit.
    pub rpm_limit: Option<u32>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            error_rate: 0.0,
            error_status: StatusCode::INTERNAL_SERVER_ERROR,
            rpm_limit: None,
        }
    }
}

/// What `/stats` reports.
#[derive(Debug, Default)]
pub struct MockStats {
    requests: AtomicU64,
    anthropic: AtomicU64,
    openai: AtomicU64,
    streamed: AtomicU64,
    injected_errors: AtomicU64,
    rejected: AtomicU64,
    rate_limited: AtomicU64,
}

impl MockStats {
    fn snapshot(&self) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "requests": n(&self.requests),
            "anthropic": n(&self.anthropic),
            "openai": n(&self.openai),
            "streamed": n(&self.streamed),
            "injectedErrors": n(&self.injected_errors),
            "rejected": n(&self.rejected),
            "rateLimited": n(&self.rate_limited),
        })
    }

    fn reset(&self) {
        for c in [
            &self.requests,
            &self.anthropic,
            &self.openai,
            &self.streamed,
            &self.injected_errors,
            &self.rejected,
            &self.rate_limited,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Provider calls received, both APIs together.
    pub fn provider_calls(&self) -> u64 {
        self.anthropic.load(Ordering::Relaxed) + self.openai.load(Ordering::Relaxed)
    }
}

struct Mock {
    cfg: MockConfig,
    stats: Arc<MockStats>,
    /// When each call of the last minute was accepted (with `rpm_limit`).
    window: std::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>,
}

impl Mock {
    /// With `rpm_limit`: accepts the call if fewer than the limit were accepted in the last
    /// minute, else says how long until the oldest of them leaves the window.
    fn admit(&self) -> Result<(), Duration> {
        let Some(limit) = self.cfg.rpm_limit else {
            return Ok(());
        };
        let now = tokio::time::Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            let oldest = window.front().copied().unwrap_or(now);
            return Err(Duration::from_secs(60).saturating_sub(now.duration_since(oldest)));
        }
        window.push_back(now);
        Ok(())
    }
}

/// The answer every call gets: a short Unity script in a fence, as a model writes it.
const ANSWER: &str = "Here is the door script.\n\n```csharp\nusing UnityEngine;\n\npublic class AutoDoor : MonoBehaviour\n{\n    [SerializeField] private float openAngle = 90f;\n    [SerializeField] private float closeDelay = 3f;\n\n    private void OnTriggerEnter(Collider other)\n    {\n        if (other.CompareTag(\"Player\"))\n        {\n            transform.localRotation = Quaternion.Euler(0f, openAngle, 0f);\n            Invoke(nameof(Close), closeDelay);\n        }\n    }\n\n    private void Close()\n    {\n        transform.localRotation = Quaternion.identity;\n    }\n}\n```\n";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Anthropic,
    OpenAi,
}

/// The router, and the counters it updates.
pub fn router(cfg: MockConfig) -> (Router, Arc<MockStats>) {
    let stats = Arc::new(MockStats::default());
    let mock = Arc::new(Mock {
        cfg,
        stats: Arc::clone(&stats),
        window: std::sync::Mutex::new(std::collections::VecDeque::new()),
    });
    let router = Router::new()
        .route("/v1/messages", post(anthropic))
        .route("/v1/messages/count_tokens", post(anthropic_count))
        .route("/v1/chat/completions", post(openai))
        .route("/stats", get(stats_get))
        .route("/stats/reset", post(stats_reset))
        .route("/ping", get(ping))
        .with_state(mock);
    (router, stats)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: MockConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, _) = router(cfg);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ping() -> &'static str {
    "ok"
}

async fn stats_get(State(mock): State<Arc<Mock>>) -> Response {
    axum::Json(mock.stats.snapshot()).into_response()
}

async fn stats_reset(State(mock): State<Arc<Mock>>) -> StatusCode {
    mock.stats.reset();
    StatusCode::NO_CONTENT
}

async fn anthropic(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    mock.stats.anthropic.fetch_add(1, Ordering::Relaxed);
    let authed = headers.contains_key("x-api-key") && headers.contains_key("anthropic-version");
    handle(&mock, Api::Anthropic, authed, &body).await
}

/// Anthropic's `count_tokens`: the input tokens of the body's system text and messages, about
/// four characters a token. Not counted as a provider call: it generates nothing.
async fn anthropic_count(headers: HeaderMap, body: Bytes) -> Response {
    if !(headers.contains_key("x-api-key") && headers.contains_key("anthropic-version")) {
        return error(
            Api::Anthropic,
            StatusCode::UNAUTHORIZED,
            "missing or malformed API key",
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(Api::Anthropic, StatusCode::BAD_REQUEST, "body is not JSON");
    };
    let text_len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let chars = text_len(&v["system"])
        + v["messages"]
            .as_array()
            .map_or(0, |m| m.iter().map(|m| text_len(&m["content"])).sum());
    axum::Json(json!({"input_tokens": (chars as u64).div_ceil(4).max(1)})).into_response()
}

async fn openai(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    mock.stats.openai.fetch_add(1, Ordering::Relaxed);
    let authed = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
    handle(&mock, Api::OpenAi, authed, &body).await
}

/// What a provider needs from a request body, checked the way the real APIs check it.
struct Call {
    model: String,
    stream: bool,
    include_usage: bool,
    input_tokens: u64,
}

fn parse_call(api: Api, body: &[u8]) -> Result<Call, &'static str> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not valid JSON")?;
    let model = v["model"].as_str().ok_or("model: field required")?;
    let messages = v["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or("messages: at least one message is required")?;
    if api == Api::Anthropic && v["max_tokens"].as_u64().is_none() {
        return Err("max_tokens: field required");
    }
    let chars: usize = messages
        .iter()
        .map(|m| match &m["content"] {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        })
        .sum::<usize>()
        + v["system"].as_str().map_or(0, str::len);
    Ok(Call {
        model: model.to_owned(),
        stream: v["stream"].as_bool().unwrap_or(false),
        include_usage: v["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false),
        input_tokens: (chars as u64).div_ceil(4).max(1),
    })
}

async fn handle(mock: &Mock, api: Api, authed: bool, body: &[u8]) -> Response {
    mock.stats.requests.fetch_add(1, Ordering::Relaxed);
    if !authed {
        mock.stats.rejected.fetch_add(1, Ordering::Relaxed);
        return error(
            api,
            StatusCode::UNAUTHORIZED,
            "missing or malformed API key",
        );
    }
    let call = match parse_call(api, body) {
        Ok(call) => call,
        Err(why) => {
            mock.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return error(api, StatusCode::BAD_REQUEST, why);
        }
    };
    let (delay, fail) = {
        let mut rng = rand::rng();
        let jitter = if mock.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            mock.cfg.jitter.mul_f64(rng.random::<f64>())
        };
        let fail = mock.cfg.error_rate > 0.0 && rng.random::<f64>() < mock.cfg.error_rate;
        (mock.cfg.latency + jitter, fail)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fail {
        mock.stats.injected_errors.fetch_add(1, Ordering::Relaxed);
        return error(api, mock.cfg.error_status, "injected by mock-upstream");
    }
    if let Err(wait) = mock.admit() {
        mock.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut resp = error(
            api,
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded (--rpm-limit)",
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return resp;
    }
    if call.stream {
        mock.stats.streamed.fetch_add(1, Ordering::Relaxed);
        let body = match api {
            Api::Anthropic => anthropic_stream(&call),
            Api::OpenAi => openai_stream(&call),
        };
        return (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            body,
        )
            .into_response();
    }
    let body = match api {
        Api::Anthropic => anthropic_message(&call),
        Api::OpenAi => openai_completion(&call),
    };
    axum::Json(body).into_response()
}

fn output_tokens() -> u64 {
    (ANSWER.len() as u64).div_ceil(4)
}

fn id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::rng().random::<u64>())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn anthropic_message(call: &Call) -> Value {
    json!({
        "id": id("msg_mock"),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": call.input_tokens, "output_tokens": output_tokens()}
    })
}

fn openai_completion(call: &Call) -> Value {
    let out = output_tokens();
    json!({
        "id": id("chatcmpl-mock"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": call.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": call.input_tokens,
            "completion_tokens": out,
            "total_tokens": call.input_tokens + out
        }
    })
}

/// The answer in pieces of about 48 bytes, cut on character boundaries, as deltas arrive.
fn pieces() -> impl Iterator<Item = &'static str> {
    let mut rest = ANSWER;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(48);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

fn anthropic_stream(call: &Call) -> String {
    let mut out = String::with_capacity(4096);
    let mut event = |name: &str, data: Value| {
        out.push_str("event: ");
        out.push_str(name);
        out.push_str("\ndata: ");
        out.push_str(&data.to_string());
        out.push_str("\n\n");
    };
    event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id("msg_mock"), "type": "message", "role": "assistant", "model": call.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": call.input_tokens, "output_tokens": 1}
        }}),
    );
    event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    event("ping", json!({"type": "ping"}));
    for piece in pieces() {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        );
    }
    event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": output_tokens()}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    out
}

fn openai_stream(call: &Call) -> String {
    let id = id("chatcmpl-mock");
    let created = unix_now();
    let mut out = String::with_capacity(4096);
    let mut chunk = |choices: Value, usage: Value| {
        let data = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": call.model,
            "choices": choices, "usage": usage
        });
        out.push_str("data: ");
        out.push_str(&data.to_string());
        out.push_str("\n\n");
    };
    chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
        Value::Null,
    );
    for piece in pieces() {
        chunk(
            json!([{"index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}]),
            Value::Null,
        );
    }
    chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        Value::Null,
    );
    if call.include_usage {
        let out_tokens = output_tokens();
        chunk(
            json!([]),
            json!({"prompt_tokens": call.input_tokens, "completion_tokens": out_tokens,
                   "total_tokens": call.input_tokens + out_tokens}),
        );
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// The provider's own error body for `status`.
fn error(api: Api, status: StatusCode, message: &str) -> Response {
    let body = match api {
        Api::Anthropic => {
            let kind = match status.as_u16() {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Api::OpenAi => {
            let kind = match status.as_u16() {
                400 | 404 | 413 => "invalid_request_error",
                401 | 403 => "authentication_error",
                429 => "rate_limit_exceeded",
                _ => "server_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
    };
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(stream: bool, include_usage: bool) -> Call {
        Call {
            model: "m".into(),
            stream,
            include_usage,
            input_tokens: 3,
        }
    }

    fn events(body: &str) -> Vec<(Option<String>, Value)> {
        body.split("\n\n")
            .filter(|e| !e.is_empty() && !e.contains("[DONE]"))
            .map(|e| {
                let name = e
                    .lines()
                    .find_map(|l| l.strip_prefix("event: "))
                    .map(str::to_owned);
                let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                (name, serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_rpm_limit_is_a_sliding_minute() {
        let mock = Mock {
            cfg: MockConfig {
                rpm_limit: Some(3),
                ..MockConfig::default()
            },
            stats: Arc::default(),
            window: std::sync::Mutex::default(),
        };
        for _ in 0..3 {
            assert_eq!(mock.admit(), Ok(()));
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        // Three in the last 30 s: the first leaves the window 30 s from now.
        assert_eq!(mock.admit(), Err(Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(mock.admit(), Ok(()));
        assert!(mock.admit().is_err());
        let unlimited = Mock {
            cfg: MockConfig::default(),
            stats: Arc::default(),
            window: std::sync::Mutex::default(),
        };
        assert!((0..1000).all(|_| unlimited.admit().is_ok()));
    }

    #[test]
    fn the_anthropic_stream_is_the_documented_event_sequence_and_spells_the_answer() {
        let body = anthropic_stream(&call(true, false));
        let evs = events(&body);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
        assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
        assert_eq!(
            names[names.len() - 3..],
            ["content_block_stop", "message_delta", "message_stop"]
        );
        let text: String = evs
            .iter()
            .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
            .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(text, ANSWER);
        // Each event's data names its own type, as Anthropic's do.
        assert!(evs.iter().all(|(n, d)| d["type"] == n.as_deref().unwrap()));
    }

    #[test]
    fn the_openai_stream_ends_with_done_and_carries_usage_only_when_asked() {
        let with = openai_stream(&call(true, true));
        assert!(with.ends_with("data: [DONE]\n\n"));
        let evs = events(&with);
        let text: String = evs
            .iter()
            .filter_map(|(_, d)| d["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, ANSWER);
        assert_eq!(
            evs.last().unwrap().1["usage"]["completion_tokens"],
            output_tokens()
        );
        let without = openai_stream(&call(true, false));
        assert!(events(&without).iter().all(|(_, d)| d["usage"].is_null()));
    }

    #[test]
    fn requests_missing_what_the_real_api_requires_are_rejected() {
        assert!(parse_call(Api::Anthropic, b"not json").is_err());
        assert!(
            parse_call(
                Api::Anthropic,
                br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#
            )
            .is_err()
        );
        assert!(parse_call(Api::OpenAi, br#"{"model":"m","messages":[]}"#).is_err());
        let ok = parse_call(
            Api::OpenAi,
            br#"{"model":"gpt","messages":[{"role":"user","content":"abcdefgh"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(ok.stream && ok.include_usage);
        assert_eq!(ok.input_tokens, 2);
    }

    #[test]
    fn injected_errors_use_each_providers_error_shape() {
        let a = error(Api::Anthropic, StatusCode::from_u16(529).unwrap(), "x");
        assert_eq!(a.status().as_u16(), 529);
        let o = error(Api::OpenAi, StatusCode::TOO_MANY_REQUESTS, "x");
        assert_eq!(o.headers()[header::RETRY_AFTER], "1");
    }
}
