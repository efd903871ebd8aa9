//! The command line: `spark-loadtest run …` and `spark-loadtest mock-upstream …`, parsed with
//! clap and turned into the runner's and the mock's configuration. Kept in the library so the
//! parsing rules (what conflicts with what, what a bad value says) are unit-tested.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Parser, Subcommand};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::mock::{self, MockConfig};
use crate::output::RunOutput;
use crate::progress;
use crate::report::{self, ReportData};
use crate::rss::RssWatch;
use crate::runner::{self, Live, LoadModel, RunConfig, Stop};
use crate::scenario::{Mix, RequestFactory, Scenario, Workload};
use crate::shaping::{self, ShapingReport};
use crate::threshold::Threshold;

/// Exit status when a threshold fails (1 is any other failure, 2 a usage error).
pub const EXIT_THRESHOLD_FAILED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "spark-loadtest",
    version,
    about = "Load generator and mock LLM upstream for sizing Spark Gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offer load to a gateway (or any URL) and report latency, throughput and errors.
    Run(Box<RunArgs>),
    /// Serve the Anthropic Messages and OpenAI Chat Completions APIs, fast and fake.
    MockUpstream(MockArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 10s, 500ms, 2m)"))
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.trim_end_matches("/s").parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err("expected a positive number of requests per second, e.g. 1000".into()),
    }
}

fn header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| "expected 'Name: value'".to_owned())?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| e.to_string())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?;
    Ok((name, value))
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err("expected a share between 0 and 1, e.g. 0.05".into()),
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("model").required(true).args(["rate", "concurrency"])))]
#[command(group(ArgGroup::new("what").args(["scenario", "body"])))]
pub struct RunArgs {
    /// The gateway base URL for a scenario; the full URL for a custom request (--body/--method).
    #[arg(long)]
    pub target: String,
    /// generate-hit, generate-miss, export, health or mixed.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Weights for `--scenario mixed`.
    #[arg(long, default_value_t = Mix::default().to_string())]
    pub mix: String,
    /// A custom JSON body, POSTed to --target as given.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    /// The method of a custom request (default POST with --body, GET without).
    #[arg(long, conflicts_with = "scenario")]
    pub method: Option<String>,
    /// Open model: requests per second on a fixed schedule, latency from each one's due time.
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Closed model: this many workers, each waiting for its answer before the next request.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long to measure (after the warm-up).
    #[arg(long, value_parser = duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// How many requests to measure (after the warm-up).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Load offered first and not measured.
    #[arg(long, value_parser = duration, default_value = "1s")]
    pub warmup: Duration,
    /// Per-request limit; a request that takes longer counts as an error (`timeout`).
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub timeout: Duration,
    /// The most requests outstanding at once; the open model waits (and counts the wait) beyond it.
    #[arg(long, default_value_t = 4096)]
    pub max_inflight: usize,
    /// What makes `generate-miss` prompts unique across runs (random unless given). Fix it to
    /// send the same prompts in every run: the sanitizer's work depends on the prompt's text,
    /// so instruction counts of two builds compare only over the same prompts.
    #[arg(long)]
    pub nonce: Option<u64>,
    /// Sent as X-API-Key.
    #[arg(long, env = "SPARK_LOADTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// An extra request header, 'Name: value'; repeatable.
    #[arg(long = "header", value_parser = header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Print one JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// A pass/fail gate such as 'p99<50ms' or 'errors<1%'; repeatable. Exit status 3 when one fails.
    #[arg(long = "threshold")]
    pub thresholds: Vec<Threshold>,
    /// Write a self-contained HTML report with latency charts.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Sample this process's resident memory during measurement and report the peak.
    #[arg(long, value_name = "PID")]
    pub watch_pid: Option<u32>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct MockArgs {
    /// 0 picks a free port; the address is printed on stdout either way.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Delay before every provider answer.
    #[arg(long, value_parser = duration, default_value = "0ms")]
    pub latency: Duration,
    /// A further random delay between zero and this.
    #[arg(long, value_parser = duration, default_value = "0ms")]
    pub jitter: Duration,
    /// The share of provider calls that fail, 0 to 1.
    #[arg(long, value_parser = fraction, default_value_t = 0.0)]
    pub error_rate: f64,
    /// The status of an injected failure (529 is Anthropic's overloaded).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(400..=599))]
    pub error_status: u16,
    /// Provider calls accepted in any sliding minute; more are answered 429.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm_limit: Option<u32>,
}

fn method(name: &str) -> anyhow::Result<Method> {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("bad method {name:?}"))
}

impl RunArgs {
    fn workload(&self) -> anyhow::Result<Workload> {
        if let Some(path) = &self.body {
            let body = std::fs::read(path)
                .with_context(|| format!("could not read the body file {}", path.display()))?;
            serde_json::from_slice::<serde_json::Value>(&body)
                .with_context(|| format!("{} is not valid JSON", path.display()))?;
            return Ok(Workload::Custom {
                method: method(self.method.as_deref().unwrap_or("POST"))?,
                body: Some(body.into()),
            });
        }
        match (self.scenario.as_deref(), self.method.as_deref()) {
            (Some("mixed"), _) => Ok(Workload::Mixed(self.mix.parse()?)),
            (Some(name), _) => Ok(Workload::One(name.parse::<Scenario>()?)),
            (None, Some(m)) => Ok(Workload::Custom {
                method: method(m)?,
                body: None,
            }),
            (None, None) => bail!(
                "say what to send: --scenario NAME, --body FILE, or --method GET for a bare URL"
            ),
        }
    }

    fn headers(&self) -> anyhow::Result<HeaderMap> {
        let mut map = HeaderMap::new();
        if let Some(key) = &self.api_key {
            let mut value =
                HeaderValue::from_str(key).context("the API key is not a valid header value")?;
            value.set_sensitive(true);
            map.insert(HeaderName::from_static("x-api-key"), value);
        }
        for (name, value) in &self.headers {
            map.append(name.clone(), value.clone());
        }
        Ok(map)
    }

    /// The runner's configuration, every argument checked.
    pub fn config(&self) -> anyhow::Result<RunConfig> {
        let url = reqwest::Url::parse(&self.target)
            .with_context(|| format!("--target {:?} is not a URL", self.target))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("--target must be an http:// or https:// URL");
        }
        let model = match (self.rate, self.concurrency) {
            (Some(rate), _) => LoadModel::Open { rate },
            (None, Some(0)) => bail!("--concurrency must be at least 1"),
            (None, Some(concurrency)) => LoadModel::Closed { concurrency },
            (None, None) => bail!("choose --rate (open model) or --concurrency (closed model)"),
        };
        let stop = match (self.duration, self.requests) {
            (_, Some(0)) => bail!("--requests must be at least 1"),
            (_, Some(n)) => Stop::Requests(n),
            (Some(d), None) if d.is_zero() => bail!("--duration must be longer than zero"),
            (Some(d), None) => Stop::After(d),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        if self.max_inflight == 0 {
            bail!("--max-inflight must be at least 1");
        }
        Ok(RunConfig {
            factory: RequestFactory::new(
                &self.target,
                self.workload()?,
                self.nonce.unwrap_or_else(rand::random),
            ),
            model,
            stop,
            warmup: self.warmup,
            timeout: self.timeout,
            max_inflight: self.max_inflight,
            headers: self.headers()?,
        })
    }
}

/// `spark-loadtest run`: the exit status says whether every threshold held.
pub async fn run(args: Box<RunArgs>) -> anyhow::Result<ExitCode> {
    let cfg = args.config()?;
    let (model, stop, warmup) = (cfg.model, cfg.stop, cfg.warmup);
    let workload = cfg.factory.workload().to_string();
    let live = Arc::new(Live::new()?);

    let ctrl_c = {
        let live = Arc::clone(&live);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing the requests in flight");
                live.cancel.store(true, Ordering::Relaxed);
            }
        })
    };
    let shown = progress::spawn(
        progress::Mode::detect(
            args.quiet || args.json && !std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ),
        Arc::clone(&live),
        stop,
        warmup,
    );
    // Memory is sampled over the measured window only: start-up and warm-up are not the load.
    let rss = match args.watch_pid {
        Some(pid) => {
            let live = Arc::clone(&live);
            Some(tokio::spawn(async move {
                while live.sent.load(Ordering::Relaxed) == 0 && !live.cancel.load(Ordering::Relaxed)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                RssWatch::start(pid, Duration::from_millis(100))
            }))
        }
        None => None,
    };

    // A gateway's own account of its outbound shaping, from its metrics around the run (only
    // for the gateway scenarios; a custom URL is not a gateway).
    let metrics_client = reqwest::Client::new();
    let gateway_before = match args.body {
        None => shaping::scrape(&metrics_client, &args.target).await,
        Some(_) => None,
    };
    let result = runner::run(cfg, Arc::clone(&live)).await;
    let shaping = match &gateway_before {
        Some(before) => shaping::scrape(&metrics_client, &args.target)
            .await
            .map(|after| ShapingReport::between(before, &after))
            .filter(|r| !r.is_empty()),
        None => None,
    };
    ctrl_c.abort();
    if let Some((tx, task)) = shown {
        let _ = tx.send(());
        let _ = task.await;
    }
    let peak_rss_bytes = match (rss, args.watch_pid) {
        (Some(watch), Some(pid)) => match watch.await {
            Ok(watch) => watch.finish(pid).await,
            Err(_) => None,
        },
        _ => None,
    };
    let recorder = result?;

    let summary = recorder.summary();
    let thresholds = args.thresholds.iter().map(|t| t.check(&summary)).collect();
    let output = RunOutput {
        target: args.target.clone(),
        workload,
        model: model.into(),
        warmup_seconds: warmup.as_secs_f64(),
        summary,
        peak_rss_bytes,
        shaping,
        thresholds,
    };
    if let Some(path) = &args.report {
        let page = report::render(&ReportData {
            output: &output,
            timeline: recorder.timeline(),
            distribution: recorder.distribution(40),
        });
        std::fs::write(path, page)
            .with_context(|| format!("could not write the report to {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        print!("{}", output.table());
    }
    if output.thresholds_passed() {
        Ok(ExitCode::SUCCESS)
    } else {
        for v in output.thresholds.iter().filter(|v| !v.passed) {
            eprintln!(
                "threshold failed: {} (measured {})",
                v.threshold, v.measured
            );
        }
        Ok(ExitCode::from(EXIT_THRESHOLD_FAILED))
    }
}

/// `spark-loadtest mock-upstream`: serves until Ctrl-C or SIGTERM.
pub async fn mock_upstream(args: MockArgs) -> anyhow::Result<ExitCode> {
    let cfg = MockConfig {
        latency: args.latency,
        jitter: args.jitter,
        error_rate: args.error_rate,
        error_status: axum::http::StatusCode::from_u16(args.error_status)
            .context("--error-status is not an HTTP status")?,
        rpm_limit: args.rpm_limit,
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port))
        .await
        .with_context(|| format!("could not listen on {}:{}", args.bind, args.port))?;
    let addr = listener.local_addr()?;
    // Scripts read this line to learn the port when --port 0 chose it.
    println!("mock-upstream listening on http://{addr}");
    mock::serve(listener, cfg, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["spark-loadtest", "run"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Run(a) => *a,
            Command::MockUpstream(_) => unreachable!("parsed run"),
        })
    }

    /// A valid open-model health run, plus `extra`.
    fn health(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut args = vec![
            "--target",
            "http://h",
            "--scenario",
            "health",
            "--rate",
            "1",
        ];
        args.extend_from_slice(extra);
        parse(&args)
    }

    #[test]
    fn a_model_is_required_and_only_one() {
        assert!(parse(&["--target", "http://h", "--scenario", "health"]).is_err());
        assert!(health(&["--concurrency", "2"]).is_err());
        let a = parse(&[
            "--target",
            "http://h",
            "--scenario",
            "health",
            "--rate",
            "250/s",
        ])
        .unwrap();
        assert_eq!(a.config().unwrap().model, LoadModel::Open { rate: 250.0 });
    }

    #[test]
    fn stop_defaults_to_ten_seconds_and_takes_a_count_or_a_duration() {
        let cfg = health(&[]).unwrap().config().unwrap();
        assert_eq!(cfg.stop, Stop::After(Duration::from_secs(10)));
        let counted = health(&["--requests", "500"]).unwrap().config().unwrap();
        assert_eq!(counted.stop, Stop::Requests(500));
        assert!(health(&["--requests", "500", "--duration", "5s"]).is_err());
        assert!(health(&["--requests", "0"]).unwrap().config().is_err());
        assert!(health(&["--duration", "0s"]).unwrap().config().is_err());
    }

    #[test]
    fn scenario_and_custom_body_exclude_each_other_and_names_are_checked() {
        assert!(health(&["--body", "x.json"]).is_err());
        let bad = parse(&["--target", "http://h", "--scenario", "nope", "--rate", "1"]).unwrap();
        assert!(bad.config().is_err());
        let none = parse(&["--target", "http://h", "--rate", "1"]).unwrap();
        assert!(none.config().is_err());
        let get = parse(&[
            "--target",
            "http://h/ping",
            "--method",
            "get",
            "--rate",
            "1",
        ])
        .unwrap();
        assert!(matches!(
            get.config().unwrap().factory.workload(),
            Workload::Custom { method, body: None } if *method == Method::GET
        ));
    }

    #[test]
    fn a_custom_body_must_be_json() {
        let dir = std::env::temp_dir().join(format!("spark-loadtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let a = parse(&[
            "--target",
            "http://h/x",
            "--body",
            bad.to_str().unwrap(),
            "--rate",
            "1",
        ])
        .unwrap();
        let err = a.config().err().unwrap().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn thresholds_targets_and_headers_are_validated_at_parse_time() {
        assert!(health(&["--threshold", "p99<fast"]).is_err());
        assert!(health(&["--header", "nocolon"]).is_err());
        assert!(
            parse(&[
                "--target",
                "http://h",
                "--scenario",
                "health",
                "--rate",
                "-3"
            ])
            .is_err()
        );
        let ftp = parse(&["--target", "ftp://h", "--scenario", "health", "--rate", "1"]).unwrap();
        assert!(ftp.config().is_err());
    }

    #[test]
    fn the_api_key_travels_as_a_sensitive_header() {
        let a = health(&[
            "--api-key",
            "user-a-0123456789abcdef",
            "--header",
            "X-Trace: 1",
        ])
        .unwrap();
        let cfg = a.config().unwrap();
        let key = cfg.headers.get("x-api-key").unwrap();
        assert!(key.is_sensitive());
        assert_eq!(cfg.headers.get("x-trace").unwrap(), "1");
    }

    #[test]
    fn a_given_nonce_sends_the_same_miss_prompts_in_every_run() {
        let body = |extra: &[&str]| {
            let mut args = vec![
                "--target",
                "http://h",
                "--scenario",
                "generate-miss",
                "--rate",
                "1",
            ];
            args.extend_from_slice(extra);
            let cfg = parse(&args).unwrap().config().unwrap();
            cfg.factory.make(3, 0.5).body
        };
        assert_eq!(body(&["--nonce", "42"]), body(&["--nonce", "42"]));
        assert_ne!(body(&["--nonce", "42"]), body(&["--nonce", "43"]));
        assert!(parse(&["--target", "http://h", "--rate", "1", "--nonce", "x"]).is_err());
    }

    #[test]
    fn mock_options_are_checked() {
        let parse_mock = |args: &[&str]| {
            let mut argv = vec!["spark-loadtest", "mock-upstream"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
        };
        assert!(parse_mock(&["--error-rate", "1.5"]).is_err());
        assert!(parse_mock(&["--error-status", "200"]).is_err());
        assert!(parse_mock(&["--latency", "fast"]).is_err());
        assert!(parse_mock(&["--port", "0", "--latency", "20ms", "--error-status", "529"]).is_ok());
    }
}
