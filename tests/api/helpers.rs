//! `spawn_app`: the real router on 127.0.0.1:0 with wiremock servers standing in for Anthropic and
//! OpenAI, configured through a map (never the process environment).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[path = "../support/db.rs"]
pub mod db;

use serde_json::{Value, json};
use spark_gateway::config::Config;
use wiremock::MockServer;

pub const MASTER_KEY: &str = "master-test-key-0123456789";
pub const ALICE_KEY: &str = "user-alice-alicesecret0123456789";
pub const BOB_KEY: &str = "user-bob-bobsecret-0123456789xyz";
pub const ANTHROPIC_KEY: &str = "sk-ant-test-upstream-key-ABCDEF";
pub const OPENAI_KEY: &str = "sk-openai-test-upstream-key-GHIJKL";
/// The key replicas sharing a Redis sign their cache values with.
pub const SHARED_HMAC_KEY: &str = "shared-cache-hmac-key-0123456789abcdef";

pub struct TestApp {
    pub address: String,
    /// The operations listener's base URL, when the app was started with one.
    pub ops_address: Option<String>,
    pub client: reqwest::Client,
    pub anthropic: MockServer,
    pub openai: MockServer,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// The Prometheus exposition, as text.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        resp.text().await.expect("metrics body")
    }

    /// `GET path` with `key` in `X-API-Key` (none when `None`).
    pub async fn get_as(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        req.send().await.expect("GET")
    }

    /// `GET path` with `key`, its JSON body (whatever the status).
    pub async fn get_json(&self, path: &str, key: &str) -> Value {
        self.get_as(path, Some(key))
            .await
            .json()
            .await
            .expect("a JSON body")
    }

    /// `/api/spark/health`: status code and body.
    pub async fn health(&self) -> (u16, Value) {
        let resp = self
            .client
            .get(self.url("/api/spark/health"))
            .send()
            .await
            .expect("health");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("health body"))
    }

    /// POSTs an OpenAI chat body with the given key as a Bearer token.
    pub async fn chat(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request failed")
    }

    /// POSTs a generate body with Alice's key.
    pub async fn post_generate(&self, body: &Value) -> reqwest::Response {
        self.post_generate_as(ALICE_KEY, body).await
    }

    /// POSTs a generate body with the given key.
    pub async fn post_generate_as(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/spark/generate"))
            .header("x-api-key", key)
            .json(body)
            .send()
            .await
            .expect("request failed")
    }
}

/// `TEST_LOG=1` shows the gateways' logs (at `RUST_LOG`, default debug) while tests run; without
/// it tests print nothing. Installed once for the whole test binary, and kept for its life.
fn init_test_log() {
    static LOGS: std::sync::OnceLock<Option<spark_gateway::telemetry::LogGuard>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        std::env::var_os("TEST_LOG").map(|_| {
            let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "debug".to_owned());
            spark_gateway::telemetry::init(
                spark_gateway::telemetry::LogFormat::Pretty,
                &filter,
                None,
            )
        })
    });
}

/// The default test configuration, with `overrides` applied (an empty value removes a variable).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn(overrides, false).await
}

/// Like [`spawn_app_with`], with a second listener for the operational routes
/// (`SPARK_OPS_BIND`).
pub async fn spawn_app_with_ops(overrides: &[(&str, &str)]) -> TestApp {
    spawn(overrides, true).await
}

async fn spawn(overrides: &[(&str, &str)], with_ops: bool) -> TestApp {
    init_test_log();
    let anthropic = MockServer::start().await;
    let openai = MockServer::start().await;
    let mut env: BTreeMap<String, String> = [
        ("SPARK_BIND", "127.0.0.1:0".to_owned()),
        ("SPARK_MASTER_API_KEY", MASTER_KEY.to_owned()),
        ("SPARK_API_KEYS", format!("{ALICE_KEY},{BOB_KEY}")),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.to_owned()),
        ("ANTHROPIC_BASE_URL", anthropic.uri()),
        ("OPENAI_API_KEY", OPENAI_KEY.to_owned()),
        ("OPENAI_BASE_URL", format!("{}/v1", openai.uri())),
        ("SPARK_PROVIDER_ORDER", "anthropic,openai".to_owned()),
        // Tests that are not about limits must never meet one.
        ("SPARK_RATE_LIMIT_GENERATE", "100000/min".to_owned()),
        ("SPARK_RATE_LIMIT_EXPORT", "100000/min".to_owned()),
        // A database of its own per gateway: tests never share ledger rows or keys.
        ("SPARK_DATABASE_URL", db::sqlite_url()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in overrides {
        if v.is_empty() {
            env.remove(*k);
        } else {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
    }
    let ops = if with_ops {
        let ops = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ops");
        env.insert(
            "SPARK_OPS_BIND".to_owned(),
            ops.local_addr().expect("addr").to_string(),
        );
        Some(ops)
    } else {
        None
    };
    let ops_address = ops
        .as_ref()
        .map(|o| format!("http://{}", o.local_addr().expect("addr")));
    let config = Config::from_source(&env).expect("test config is valid");
    let state = spark_gateway::build_state(config).expect("state builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    spark_gateway::telemetry::spawn_named(
        "test-gateway",
        spark_gateway::serve_with_ops(listener, ops, state, std::future::pending()),
    );
    TestApp {
        address,
        ops_address,
        client: reqwest::Client::new(),
        anthropic,
        openai,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A Messages API answer holding `text`, as Anthropic sends it.
pub fn anthropic_answer(text: &str) -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 321, "output_tokens": 654}
    })
}

/// Both mock providers answer every generation with [`UNITY_ANSWER`] in their own format.
pub async fn both_providers_answer(app: &TestApp) {
    use wiremock::matchers::path;
    use wiremock::{Mock, ResponseTemplate};
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(anthropic_answer(UNITY_ANSWER)))
        .mount(&app.anthropic)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openai_answer(UNITY_ANSWER)))
        .mount(&app.openai)
        .await;
}

/// A chat completion holding `text`, as OpenAI sends it.
pub fn openai_answer(text: &str) -> Value {
    json!({
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1_731_000_000,
        "model": "gpt-4.1-2025-04-14",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 111, "completion_tokens": 222, "total_tokens": 333}
    })
}

pub const UNITY_ANSWER: &str = "Here is the door script.\n\n```csharp\nusing UnityEngine;\n\npublic class AutoDoor : MonoBehaviour\n{\n    [SerializeField] private float openAngle = 90f;\n}\n```\n";

pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// Asserts the API.md error shape and returns the body.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    let request_id = resp
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["requestId"], request_id.as_str());
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    body
}

/// A `redis-server` of the test's own on a free port, killed when dropped.
pub struct TestRedis {
    port: u16,
    child: Option<Child>,
}

impl TestRedis {
    /// A redis-server of the test's own on a free port. A missing `redis-server` fails the test:
    /// a Redis test that passes without Redis proves nothing (`.ci/run` installs it).
    pub async fn start() -> TestRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = TestRedis { port, child: None };
        assert!(
            r.spawn().await,
            "redis-server could not be started; install it (.ci/run does)"
        );
        r
    }

    pub async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the server: a stopped Redis accepts
    /// connections and never answers, the stall a dead process does not show.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The keys matching `pattern`.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut c = self.connection().await;
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut c)
            .await
            .unwrap()
    }

    /// Waits (bounded) until at least `n` keys match `pattern`.
    pub async fn wait_for_keys(&self, pattern: &str, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let keys = self.keys(pattern).await;
            if keys.len() >= n {
                return keys;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} keys match {pattern}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (bounded) until the gateway's health says `want` for the limiter.
pub async fn wait_for_redis(app: &TestApp, ok: bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let h: Value = app.health().await.1;
        if h["checks"]["rateLimiter"]["ok"] == ok {
            return h;
        }
        last = h;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rate limiter ok never became {ok}: {last}");
}

/// Two gateways sharing `redis` (same cache signing key), each connected before it is returned.
pub async fn two_replicas(redis: &TestRedis) -> (TestApp, TestApp) {
    let url = redis.url();
    let config = [
        ("REDIS_URL", url.as_str()),
        ("SPARK_CACHE_TTL", "1h"),
        ("SPARK_CACHE_HMAC_KEY", SHARED_HMAC_KEY),
    ];
    let a = spawn_app_with(&config).await;
    let b = spawn_app_with(&config).await;
    wait_for_redis(&a, true).await;
    wait_for_redis(&b, true).await;
    (a, b)
}
