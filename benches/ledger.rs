//! The ledger writer's throughput: usage rows inserted per second, in the batches the writer
//! uses (1,000 rows a statement), on PostgreSQL and SQLite.
//!
//! Run: `cargo bench --bench ledger` (PostgreSQL at `SPARK_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; each run works in a fresh schema). The baseline in
//! the same run is the naive writer: one row per statement, the same rows. Criterion reports
//! elements per second. After the groups it prints the writer's own CPU per row (this process's
//! user + system time over twenty 1,000-row batches, from `/proc/self/stat`): what a flush costs
//! the gateway, apart from the database server's work.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmarks fail loudly"
)]

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spark_gateway::store::Store;
use spark_gateway::store::usage::UsageRow;
use sqlx::Connection;

static NEXT: AtomicU64 = AtomicU64::new(0);

fn rows(n: usize) -> Vec<UsageRow> {
    (0..n)
        .map(|_| {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            UsageRow {
                id: format!("row-{i}-{}", std::process::id()),
                time: 1_764_547_200_000 + i as i64,
                request_id: format!("req-{i}"),
                key_id: Some("k0a1b2c3d4e5".into()),
                user_id: "bench".into(),
                route: "generate",
                provider: "anthropic".into(),
                model: "claude-sonnet-4-5-20250929".into(),
                engine: "unity".into(),
                input_tokens: 321,
                output_tokens: 654,
                cached: false,
                cost_nusd: 10_773_000,
                status: "ok".into(),
                latency_ms: 812,
            }
        })
        .collect()
}

fn postgres_url(rt: &tokio::runtime::Runtime) -> String {
    let base = std::env::var("SPARK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("bench_{}", std::process::id());
    rt.block_on(async {
        let mut c = sqlx::PgConnection::connect(&base)
            .await
            .expect("PostgreSQL is needed by this benchmark");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut c)
            .await
            .unwrap();
    });
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// User + system CPU seconds of this process so far (Linux).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

fn writer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The pools start tasks of their own: they are opened on the runtime.
    let _runtime = rt.enter();
    let sqlite_dir =
        std::env::temp_dir().join(format!("spark-ledger-bench-{}", std::process::id()));
    let backends = [
        ("postgres", Store::open(&postgres_url(&rt)).unwrap()),
        (
            "sqlite",
            Store::open(&spark_gateway::store::default_url(&sqlite_dir)).unwrap(),
        ),
    ];
    let mut group = c.benchmark_group("ledger_writer");
    group.sample_size(10);
    for (name, store) in &backends {
        rt.block_on(store.migrate()).unwrap();
        group.throughput(Throughput::Elements(5_000));
        group.bench_function(format!("{name}/batched_5000_rows"), |b| {
            b.iter_batched(
                || rows(5_000),
                |batch| rt.block_on(store.insert_usage(&batch)).unwrap(),
                criterion::BatchSize::LargeInput,
            );
        });
        group.throughput(Throughput::Elements(200));
        group.bench_function(
            format!("{name}/baseline_one_row_per_statement_200_rows"),
            |b| {
                b.iter_batched(
                    || rows(200),
                    |batch| {
                        rt.block_on(async {
                            for row in batch.chunks(1) {
                                store.insert_usage(row).await.unwrap();
                            }
                        });
                    },
                    criterion::BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
    for (name, store) in &backends {
        let batches: Vec<Vec<UsageRow>> = (0..20).map(|_| rows(1_000)).collect();
        let (cpu0, wall0) = (process_cpu_seconds(), std::time::Instant::now());
        for batch in &batches {
            rt.block_on(store.insert_usage(batch)).unwrap();
        }
        let n = 20_000.0;
        match (cpu0, process_cpu_seconds()) {
            (Some(a), Some(b)) => println!(
                "ledger_writer/{name}: {:.1} µs of this process's CPU per row, {:.1} µs wall per row",
                (b - a) / n * 1e6,
                wall0.elapsed().as_secs_f64() / n * 1e6
            ),
            _ => println!("ledger_writer/{name}: /proc/self/stat unreadable, no CPU figure"),
        }
    }
    let _ = std::fs::remove_dir_all(sqlite_dir);
}

criterion_group!(benches, writer);
criterion_main!(benches);
