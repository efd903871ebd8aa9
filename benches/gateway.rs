//! One whole request through the real router in process, on a cache hit and on a simulator miss,
//! and the cache-hit lookup alone; a trivial route (`/livez`) through the same router is the
//! baseline in the same run.
//!
//! Run: `cargo bench --bench gateway`. No socket is involved (`tower::ServiceExt::oneshot`), so
//! these are the gateway's own CPU costs per request: middleware, auth, limiter, sanitizer,
//! cache, JSON. The load tables in BENCHMARKS.md add the network on top.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmarks fail loudly"
)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use criterion::{Criterion, criterion_group, criterion_main};
use sha2::Digest;
use spark_gateway::cache::{CacheConfig, CacheScope, ResponseCache};
use spark_gateway::config::Config;
use spark_gateway::engine::Engine;
use spark_gateway::generate::Generation;
use spark_gateway::providers::{ProviderId, Usage};
use spark_gateway::telemetry::Metrics;
use tower::ServiceExt;

const MASTER: &str = "bench-master-key-0123456789";
const PROMPT: &str = r#"{"prompt":"Create a door that opens when the player walks near it and closes after three seconds","engine":"unity"}"#;

fn router(cache_ttl: &str) -> Router {
    let env: BTreeMap<String, String> = [
        ("SPARK_BIND", "127.0.0.1:0"),
        ("SPARK_MASTER_API_KEY", MASTER),
        ("SPARK_CACHE_TTL", cache_ttl),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // The default set-up: the ledger on, in a SQLite file of the bench's own.
    let mut env = env;
    env.insert(
        "SPARK_DATA_DIR".to_owned(),
        std::env::temp_dir()
            .join(format!("spark-bench-{}", std::process::id()))
            .display()
            .to_string(),
    );
    let config = Config::from_source(&env).unwrap();
    spark_gateway::app(spark_gateway::build_state(config).unwrap())
}

fn request(method: &str, uri: &str, body: Option<&'static str>) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-api-key", MASTER)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, Body::from))
        .unwrap();
    // What axum::serve adds for a real connection; the limiter and the logs read it.
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    req
}

/// Sends one request and reads the whole body, as a client would.
async fn call(app: &Router, req: Request<Body>) -> usize {
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .len()
}

fn whole_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The state starts background tasks (the ledger writer), so it is built on the runtime.
    let _runtime = rt.enter();
    let cached = router("1h");
    let uncached = router("0s");
    // Fill the cache so every measured generate is a hit.
    rt.block_on(call(
        &cached,
        request("POST", "/api/spark/generate", Some(PROMPT)),
    ));

    let mut group = c.benchmark_group("router_oneshot");
    group.bench_function("baseline_livez", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(call(&cached, request("GET", "/livez", None)).await) })
    });
    group.bench_function("generate_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                call(
                    &cached,
                    request("POST", "/api/spark/generate", Some(PROMPT)),
                )
                .await,
            )
        })
    });
    group.bench_function("generate_simulator_miss", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                call(
                    &uncached,
                    request("POST", "/api/spark/generate", Some(PROMPT)),
                )
                .await,
            )
        })
    });
    group.finish();
}

fn cache_hit_lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = ResponseCache::new(
        &CacheConfig {
            ttl: std::time::Duration::from_secs(3600),
            max_bytes: 64 * 1024 * 1024,
            scope: CacheScope::Global,
            hmac_key: None,
        },
        Arc::new(Metrics::new().unwrap()),
        None,
    );
    let generation = Generation {
        id: "gen_bench".into(),
        code: "using UnityEngine;\npublic class AutoDoor : MonoBehaviour {}\n".repeat(20),
        engine: Engine::Unity,
        script_name: "AutoDoor".into(),
        file_name: "AutoDoor.cs".into(),
        provider: ProviderId::Simulator,
        model: "simulator-1".into(),
        cached: false,
        usage: Usage {
            input_tokens: 20,
            output_tokens: 300,
        },
        warnings: Vec::new(),
        latency_ms: 1,
        answer: String::new(),
        truncated: false,
        stop_sequence: None,
        rendered: Default::default(),
    };
    // The key is computed once per request during validation (a SHA-256 of what is sent
    // upstream); this measures the lookup on the hit path.
    let key: [u8; 32] =
        sha2::Sha256::digest(b"Create a door that opens when the player walks near it").into();
    rt.block_on(async {
        cache
            .get_or_generate(key, true, |_| true, || async { Ok::<_, ()>(generation) })
            .await
            .unwrap()
    });
    c.bench_function("cache/hit_lookup (get)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(cache.lookup(black_box(&key), |_| true).await.unwrap()) })
    });
}

criterion_group!(benches, whole_request, cache_hit_lookup);
criterion_main!(benches);
