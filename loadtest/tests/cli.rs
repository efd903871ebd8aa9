//! The `spark-loadtest` binary end to end: against the gateway on its simulator (table and
//! JSON), threshold gates and their exit status, and the HTML report.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use serde_json::Value;
use spark_loadtest::mock::MockConfig;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_against_the_gateway_on_the_simulator_prints_the_table_and_valid_json() {
    let gateway = common::start_gateway().await;
    let base = [
        "run",
        "--target",
        &gateway,
        "--scenario",
        "generate-hit",
        "--rate",
        "200",
        "--requests",
        "100",
        "--warmup",
        "200ms",
        "--quiet",
    ];
    let table = common::loadtest(&base).await;
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    for needle in [
        "generate-hit",
        "requests    100",
        "p99.9",
        "200: 100",
        "errors      0",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }

    let mut json_args = base.to_vec();
    json_args[4] = "mixed";
    json_args.push("--json");
    let json = common::loadtest(&json_args).await;
    assert!(json.status.success(), "{}", stderr(&json));
    let v: Value = serde_json::from_str(&stdout(&json)).expect("stdout is one JSON document");
    assert_eq!(v["requests"], 100);
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["errorRate"], 0.0);
    assert!(v["throughputRps"].as_f64().unwrap() > 0.0);
    let l = &v["latencyMs"];
    let quantiles: Vec<f64> = ["p50", "p90", "p95", "p99", "p999", "max"]
        .iter()
        .map(|q| l[q].as_f64().unwrap())
        .collect();
    assert!(quantiles.windows(2).all(|w| w[0] <= w[1]), "{l}");
    assert!(quantiles[0] > 0.0);
    let counted: u64 = v["statusCounts"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_violated_threshold_exits_non_zero_and_a_met_one_does_not() {
    let failing = common::start_mock(MockConfig {
        error_rate: 1.0,
        error_status: axum::http::StatusCode::from_u16(529).unwrap(),
        ..MockConfig::default()
    })
    .await;
    let body =
        std::env::temp_dir().join(format!("spark-loadtest-body-{}.json", std::process::id()));
    std::fs::write(
        &body,
        r#"{"model":"m","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    let target = format!("{failing}/v1/messages");
    let args = |threshold: &'static str| {
        vec![
            "run".to_owned(),
            "--target".into(),
            target.clone(),
            "--body".into(),
            body.display().to_string(),
            "--header".into(),
            "x-api-key: sk-test".into(),
            "--header".into(),
            "anthropic-version: 2023-06-01".into(),
            "--rate".into(),
            "200".into(),
            "--requests".into(),
            "50".into(),
            "--warmup".into(),
            "0s".into(),
            "--quiet".into(),
            "--threshold".into(),
            "p99<5s".into(),
            "--threshold".into(),
            threshold.into(),
        ]
    };
    let violated = args("errors<1%");
    let violated: Vec<&str> = violated.iter().map(String::as_str).collect();
    let out = common::loadtest(&violated).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stdout(&out).contains("529: 50"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("threshold failed: errors<1% (measured 100.000%)"),
        "{}",
        stderr(&out)
    );

    let met = args("errors>=99%");
    let met: Vec<&str> = met.iter().map(String::as_str).collect();
    let out = common::loadtest(&met).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::remove_file(&body).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_is_well_formed_html_holding_both_charts() {
    let mock = common::start_mock(MockConfig::default()).await;
    let path =
        std::env::temp_dir().join(format!("spark-loadtest-report-{}.html", std::process::id()));
    let out = common::loadtest(&[
        "run",
        "--target",
        &format!("{mock}/ping"),
        "--method",
        "GET",
        "--rate",
        "400",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--quiet",
        "--report",
        path.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Strict XML parsing: every element closed and every entity valid.
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(&html, options).expect("the report is well-formed");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "html");
    let svgs: Vec<_> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "svg")
        .collect();
    let ids: Vec<&str> = svgs.iter().filter_map(|s| s.attribute("id")).collect();
    assert_eq!(ids, ["latency-over-time", "latency-histogram"]);

    // The time chart has its three series with one point per second of the run.
    let lines: Vec<_> = svgs[0]
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let points = line.attribute("points").unwrap().split(' ').count();
        assert!((2..=3).contains(&points), "{points} points");
    }
    // The histogram's bars hold every request exactly once.
    let bars: Vec<_> = svgs[1]
        .descendants()
        .filter(|n| n.tag_name().name() == "rect" && n.attribute("class") == Some("bar"))
        .collect();
    assert_eq!(bars.len(), 40);
    let counted: u64 = bars
        .iter()
        .map(|b| {
            let title = b.first_element_child().unwrap().text().unwrap();
            title.rsplit(": ").next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(counted, 800);
    // Self-contained: nothing is fetched when the page opens.
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="));
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_the_gateways_outbound_shaping_during_the_run() {
    let mock = common::start_mock(MockConfig {
        latency: std::time::Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await;
    let gateway = common::start_gateway_with(&[
        ("ANTHROPIC_API_KEY", "sk-test-key"),
        ("ANTHROPIC_BASE_URL", &mock),
        ("SPARK_PROVIDER_ORDER", "anthropic"),
        ("SPARK_CACHE_TTL", "0s"),
        // One call at a time, 100 ms each, 30 a second offered: most wait, some give up.
        ("SPARK_PROVIDER_LIMITS", "anthropic=1inflight"),
        ("SPARK_QUEUE_TIMEOUT", "150ms"),
    ])
    .await;
    let page = std::env::temp_dir().join(format!(
        "spark-loadtest-shaping-{}.html",
        std::process::id()
    ));
    let out = common::loadtest(&[
        "run",
        "--target",
        &gateway,
        "--scenario",
        "generate-miss",
        "--rate",
        "30",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--json",
        "--quiet",
        "--report",
        page.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let row = &v["shaping"]["rows"][0];
    assert_eq!(row["lane"], "anthropic");
    assert_eq!(row["class"], "interactive");
    assert!(row["waited"].as_u64().unwrap() >= 5, "{v}");
    assert!(row["meanWaitMs"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["shaping"]["rejected"]["anthropic"]["timeout"]
            .as_u64()
            .unwrap()
            >= 1,
        "{v}"
    );
    assert!(v["statusCounts"]["503"].as_u64().unwrap() >= 1, "{v}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Gateway outbound shaping"));
    std::fs::remove_file(&page).unwrap();
}
