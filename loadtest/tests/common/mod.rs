//! Servers the load-test tests aim at: the mock upstream on a free port, and the real gateway
//! router on the built-in simulator (auth off on loopback, limits out of the way).

#![allow(dead_code, reason = "each test binary uses part of this")]

use std::collections::BTreeMap;
use std::process::Output;

use spark_loadtest::mock::{self, MockConfig};

/// Starts the mock upstream; returns its base URL.
pub async fn start_mock(cfg: MockConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock::serve(listener, cfg, std::future::pending()));
    url
}

/// Starts the gateway on the simulator; returns its base URL.
pub async fn start_gateway() -> String {
    start_gateway_with(&[]).await
}

/// Starts the gateway with `extra` variables on top of the simulator set-up.
pub async fn start_gateway_with(extra: &[(&str, &str)]) -> String {
    let env: BTreeMap<String, String> = [
        ("SPARK_BIND", "127.0.0.1:0"),
        ("SPARK_RATE_LIMIT_GENERATE", "1000000/min"),
        ("SPARK_RATE_LIMIT_EXPORT", "1000000/min"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    // The ledger on, in a SQLite file of this gateway's own.
    let mut env = env;
    env.entry("SPARK_DATA_DIR".to_owned()).or_insert_with(|| {
        std::env::temp_dir()
            .join(format!(
                "spark-loadtest-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ))
            .display()
            .to_string()
    });
    let config = spark_gateway::config::Config::from_source(&env).unwrap();
    let state = spark_gateway::build_state(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(spark_gateway::serve(
        listener,
        state,
        std::future::pending(),
    ));
    url
}

/// Runs the `spark-loadtest` binary to completion.
pub async fn loadtest(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_spark-loadtest"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}
