//! One limiter check, memory and Redis, and the memory 1,000,000 distinct keys hold.
//!
//! Run: `cargo bench --bench ratelimit` (Redis at `REDIS_URL`, default redis://127.0.0.1:6379/;
//! the Redis case is skipped with a message when none answers). The baseline in the same run is
//! one `HashMap<String, u64>` lookup of a present key, the floor of any keyed check.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmarks fail loudly"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::SecretString;
use spark_gateway::ratelimit::redis::RedisLimiter;
use spark_gateway::ratelimit::{LimitKey, Limiter, MemoryLimiter, Quota, Quotas, RouteClass};
use spark_gateway::redis::RedisBackend;
use spark_gateway::telemetry::Metrics;

fn quotas(q: &str) -> Quotas {
    Quotas {
        generate: Quota::parse(q).unwrap(),
        export: Quota::parse(q).unwrap(),
        openai: Quota::parse(q).unwrap(),
        anthropic: Quota::parse(q).unwrap(),
        overrides: HashMap::new(),
        master_exempt: true,
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Prints the memory a million distinct keys take, and what `retain_recent` gives back.
fn million_keys() {
    let limiter = MemoryLimiter::new(quotas("1000/sec,burst=1"));
    let keys: Vec<LimitKey> = (0..1_000_000)
        .map(|i| LimitKey::User(format!("user{i:07}")))
        .collect();
    let before = rss_bytes();
    for k in &keys {
        black_box(limiter.decide(RouteClass::Generate, k));
    }
    let after = rss_bytes();
    println!(
        "memory limiter: {} keys held, RSS grew by {:.1} MiB ({:.0} bytes per key)",
        limiter.keys(),
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / 1e6
    );
    // One interval (1 ms) later every bucket is full again: upkeep forgets them all.
    std::thread::sleep(Duration::from_millis(5));
    limiter.retain_recent();
    println!(
        "after retain_recent: {} keys held, RSS {:.1} MiB above the start",
        limiter.keys(),
        rss_bytes().saturating_sub(before) as f64 / (1 << 20) as f64
    );
}

fn bench(c: &mut Criterion) {
    million_keys();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("limiter_check");

    let memory = MemoryLimiter::new(quotas("1000000000/sec"));
    let key = LimitKey::User("alice".into());
    group.bench_function("memory_same_key", |b| {
        b.iter(|| memory.decide(RouteClass::Generate, black_box(&key)))
    });
    let many: Vec<LimitKey> = (0..100_000)
        .map(|i| LimitKey::User(format!("u{i}")))
        .collect();
    let mut i = 0usize;
    group.bench_function("memory_100k_keys_round_robin", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            memory.decide(RouteClass::Generate, black_box(&many[i]))
        })
    });

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let redis = rt.block_on(async {
        let metrics = Arc::new(Metrics::new().unwrap());
        let backend = RedisBackend::connect(
            &SecretString::from(url.clone()),
            Duration::from_millis(100),
            metrics,
        )
        .unwrap();
        for _ in 0..50 {
            if backend.healthy() {
                return Some(RedisLimiter::new(backend, quotas("1000000000/sec")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    });
    match redis {
        Some(limiter) => {
            group.bench_function("redis_same_key", |b| {
                b.iter(|| rt.block_on(limiter.check(RouteClass::Generate, black_box(&key))))
            });
        }
        None => println!("skipped redis_same_key: no Redis answers at {url}"),
    }

    let map: HashMap<String, u64> = (0..100_000).map(|i| (format!("user:u{i}"), i)).collect();
    let probe = "user:u4242".to_owned();
    group.bench_function("baseline_hashmap_lookup", |b| {
        b.iter(|| map.get(black_box(&probe)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
