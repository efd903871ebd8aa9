//! The ledger and managed keys with real processes: a PostgreSQL of the test's own stopped under
//! load and started again, SIGTERM flushing the queue, and two gateway processes sharing
//! PostgreSQL and Redis (revocation and budgets across replicas). Bounded in time and count;
//! every process started here is ended here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "support/pg.rs"]
mod pg;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_spark-gateway");
const MASTER: &str = "master-chaos-0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway {
    child: Child,
    base: String,
}

impl Gateway {
    async fn start(env: &[(&str, String)]) -> Gateway {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SPARK_BIND", format!("127.0.0.1:{port}"))
            .env("SPARK_MASTER_API_KEY", MASTER)
            .env("SPARK_SIMULATOR_LATENCY", "5ms")
            .env("SPARK_RATE_LIMIT_GENERATE", "1000000/min")
            .env("SPARK_SHUTDOWN_DELAY", "0s")
            .env("SPARK_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let gw = Gateway {
            child: cmd.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client
                .get(format!("{}/livez", gw.base))
                .send()
                .await
                .is_ok()
            {
                return gw;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the gateway did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a key through `gw` (retrying while the database is being migrated).
async fn issue(gw: &Gateway, body: &Value) -> (String, String) {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let resp = client
            .post(gw.url("/api/admin/keys"))
            .header("x-api-key", MASTER)
            .json(body)
            .send()
            .await
            .unwrap();
        if resp.status() == 201 {
            let v: Value = resp.json().await.unwrap();
            return (
                v["id"].as_str().unwrap().to_owned(),
                v["key"].as_str().unwrap().to_owned(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no key could be created");
}

async fn generate(client: &reqwest::Client, gw: &Gateway, key: &str, prompt: &str) -> u16 {
    client
        .post(gw.url("/api/spark/generate"))
        .header("x-api-key", key)
        .json(&json!({"prompt": prompt, "engine": "unity"}))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn rows(url: &str) -> i64 {
    let Ok(mut conn) = sqlx::PgConnection::connect(url).await else {
        return -1;
    };
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM usage_records")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(-1)
}

async fn rows_reaching(url: &str, n: i64) -> i64 {
    let mut last = -1;
    for _ in 0..300 {
        last = rows(url).await;
        if last == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_fails_no_request_and_loses_no_row() {
    let pg = pg::TestPostgres::start();
    let gw = Gateway::start(&[("SPARK_DATABASE_URL", pg.url())]).await;
    let (_, key) = issue(&gw, &json!({"userId": "load"})).await;
    let client = reqwest::Client::new();

    // Four workers for six seconds; the database is down from 1.5 s to 4 s.
    let stop_at = Instant::now() + Duration::from_secs(6);
    let mut workers = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        let url = gw.url("/api/spark/generate");
        let key = key.clone();
        workers.push(spark_gateway::telemetry::spawn_named(
            "load-worker",
            async move {
                let mut statuses = Vec::new();
                let mut i = 0;
                while Instant::now() < stop_at {
                    let status = client
                        .post(&url)
                        .header("x-api-key", &key)
                        .json(&json!({"prompt": format!("door {w}-{i}"), "engine": "unity"}))
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16());
                    statuses.push(status);
                    i += 1;
                }
                statuses
            },
        ));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    pg.down();
    let mut degraded = false;
    for _ in 0..100 {
        let health: Value = client
            .get(gw.url("/api/spark/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["status"] == "degraded" && health["checks"]["database"]["ok"] == false {
            degraded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        degraded,
        "health never said degraded while the database was down"
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    pg.up();
    let mut served = 0i64;
    for w in workers {
        let statuses = w.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "a request failed: {:?}",
            statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
        );
        served += statuses.len() as i64;
    }
    assert!(served > 50, "too little load to prove anything: {served}");
    assert_eq!(rows_reaching(&pg.url(), served).await, served);

    // SIGTERM with rows still queued (the writer waits up to a second): they are written
    // before the process exits.
    for i in 0..20 {
        assert_eq!(
            generate(&client, &gw, &key, &format!("crate {i}")).await,
            200
        );
    }
    let status = gw.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(rows(&pg.url()).await, served + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_revocations_and_budgets() {
    let pg = pg::TestPostgres::start();
    let redis = helpers::TestRedis::start().await;
    // The simulator priced at $1,000 per million tokens: a few hundred tokens cost ~$0.5.
    let prices = std::env::temp_dir().join(format!(
        "spark-prices-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(
        &prices,
        r#"{"spark-simulator-1": {"inputPerMillion": 1000, "outputPerMillion": 1000}}"#,
    )
    .unwrap();
    let env = [
        ("SPARK_DATABASE_URL", pg.url()),
        ("REDIS_URL", redis.url()),
        ("SPARK_PRICES_FILE", prices.display().to_string()),
        ("SPARK_CACHE_TTL", "0".to_owned()),
    ];
    let a = Gateway::start(&env).await;
    let b = Gateway::start(&env).await;
    let client = reqwest::Client::new();

    // A key made on A works on B once B's poll has seen it (about a second).
    let limit = 2.0;
    let (id, key) = issue(
        &a,
        &json!({"userId": "shared", "budget": {"limitUsd": limit, "period": "day"}}),
    )
    .await;
    let seen = Instant::now();
    while generate(&client, &b, &key, "warm-up on b").await != 200 {
        assert!(
            seen.elapsed() < Duration::from_secs(5),
            "B never accepted the key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Alternate between the replicas until the budget refuses: with spend shared, the two
    // together stay under the limit plus one request.
    let mut refused = false;
    for i in 0..40 {
        let gw = if i % 2 == 0 { &a } else { &b };
        match generate(&client, gw, &key, &format!("barrel {i}")).await {
            200 => {}
            429 => {
                refused = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused, "the budget never refused");
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    // Wait for both replicas' rows, then compare the spend with the limit.
    let mut spent_max = (0i64, 0i64);
    for _ in 0..50 {
        spent_max = sqlx::query_as::<_, (i64, i64)>(
            "SELECT CAST(COALESCE(SUM(cost_nusd), 0) AS BIGINT), CAST(COALESCE(MAX(cost_nusd), 0) AS BIGINT) FROM usage_records",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if spent_max.0 >= (limit * 1e9) as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (spent, biggest) = spent_max;
    assert!(spent >= (limit * 1e9) as i64, "spent {spent}");
    assert!(
        spent < (limit * 1e9) as i64 + biggest,
        "spent {spent}, one call {biggest}"
    );

    // Revoked on A: refused by B within 5 s.
    let del = client
        .delete(a.url(&format!("/api/admin/keys/{id}")))
        .header("x-api-key", MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let revoked = Instant::now();
    loop {
        if generate(&client, &b, &key, "after revocation").await == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "B still accepts a revoked key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(prices);
}
