//! The `spark-gateway` binary: parses the command line and hands over to the library.

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spark_gateway::config::{Config, EnvSource};
use spark_gateway::sanitize::{self, Policy};

/// jemalloc instead of glibc's malloc, chosen by the binary so that every way of running it gets
/// it, with its options compiled in (`.cargo/config.toml`: two arenas); glibc's could only be set
/// by an environment variable (`MALLOC_ARENA_MAX`) that a deployment could forget. Against the
/// same code on glibc, alternating (BENCHMARKS.md, "The allocator, a fourth time"): about 0.8× the
/// CPU per cache hit and 0.9× per miss, less memory per open client connection, ~2 MiB more idle.
/// The library and its tests keep the system allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "spark-gateway",
    version,
    about = "LLM code-generation gateway for game tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default). Configuration comes from the environment.
    Serve,
    /// Validate and print the effective configuration with secrets redacted; exit 1 on error.
    CheckConfig,
    /// Read a prompt on stdin and print the sanitizer's report.
    Sanitize {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Read one JSON string per line and print one JSON report per line.
        #[arg(long, conflicts_with = "json")]
        jsonl: bool,
    },
    /// Apply the database migrations (SPARK_DATABASE_URL) and exit; `serve` also applies them.
    Migrate,
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Exit 0 when the gateway's /livez answers 200.
    Healthcheck {
        /// Base URL of the gateway (default: from SPARK_BIND).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain from the first row to the last: exit 0, or 1 naming the first row
    /// whose chain breaks.
    Verify,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::CheckConfig => check_config(),
        Command::Sanitize { json, jsonl } => sanitize_cmd(json, jsonl),
        Command::Migrate => with_store(|store| async move {
            store.migrate().await.map_err(|e| e.to_string())?;
            println!("migrations applied ({} database)", store.backend().as_str());
            Ok(ExitCode::SUCCESS)
        }),
        Command::Audit {
            command: AuditCommand::Verify,
        } => with_store(|store| async move {
            match store.verify_audit().await.map_err(|e| e.to_string())? {
                Ok(rows) => {
                    println!("audit trail intact: {rows} rows");
                    Ok(ExitCode::SUCCESS)
                }
                Err(broken) => {
                    println!("audit trail broken at row {}: {}", broken.id, broken.why);
                    Ok(ExitCode::FAILURE)
                }
            }
        }),
        Command::Healthcheck { url } => healthcheck(url),
    }
}

fn serve() -> ExitCode {
    // Logging first, so even a configuration error is written in the requested format. The
    // trace pipeline, when configured, is a layer of the same subscriber, so it is built from
    // the configuration before the subscriber is installed. The guard is held to the end of
    // `serve`: its drop flushes the lines still queued for the writer thread.
    let (format, filter) = Config::logging(&EnvSource);
    let config = Config::from_env();
    let pipeline = config
        .as_ref()
        .ok()
        .and_then(|c| c.trace.as_ref())
        .map(spark_gateway::telemetry::trace::pipeline)
        .transpose();
    let (tracer, export, pipeline_error) = match pipeline {
        Ok(Some((tracer, export))) => (Some(tracer), Some(export), None),
        Ok(None) => (None, None, None),
        Err(why) => (None, None, Some(why)),
    };
    let _logs = spark_gateway::telemetry::init(format, &filter, tracer);
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(problems = ?e.problems, "invalid configuration; not starting");
            return ExitCode::FAILURE;
        }
    };
    if let Some(why) = pipeline_error {
        // The operator asked for traces: starting without them would hide that they are lost.
        tracing::error!(error = %why, "cannot set up trace export; not starting");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, export)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway stopped with an error");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: Config,
    export: Option<spark_gateway::telemetry::trace::SpanExport>,
) -> anyhow::Result<()> {
    // Span export runs beside the server and is flushed after it: the last requests' spans end
    // when the server has drained, and go out before the process exits.
    let (stop_export, export_stopped) = tokio::sync::oneshot::channel::<()>();
    let export_timeout = config
        .trace
        .as_ref()
        .map_or(Duration::ZERO, |t| t.timeout + Duration::from_secs(1));
    let exporter = export.map(|export| {
        if let Some(t) = &config.trace {
            tracing::info!(endpoint = %t.endpoint, sampler = ?t.sampler, "exporting traces over OTLP/HTTP");
        }
        spark_gateway::telemetry::spawn_named(
            "span-export",
            export.run(async {
                let _ = export_stopped.await;
            }),
        )
    });
    let result = serve_until_signal(config).await;
    if let Some(exporter) = exporter {
        let _ = stop_export.send(());
        if tokio::time::timeout(export_timeout, exporter)
            .await
            .is_err()
        {
            tracing::warn!("the last spans could not be exported before exit");
        }
    }
    result
}

async fn serve_until_signal(config: Config) -> anyhow::Result<()> {
    if !config.auth_enabled() {
        tracing::warn!(
            bind = %config.bind,
            "AUTHENTICATION IS OFF: no SPARK_MASTER_API_KEY or SPARK_API_KEYS is set; serving on loopback only"
        );
    }
    for w in config.warnings() {
        tracing::warn!(warning = %w, "configuration warning");
    }
    if config.anthropic.is_none() && config.openai.is_none() {
        tracing::warn!(
            "no provider key is set (ANTHROPIC_API_KEY, OPENAI_API_KEY): the built-in simulator answers every request"
        );
    }
    // A TLS pair that does not load stops the gateway before it says it listens.
    if let Some(files) = &config.tls {
        spark_gateway::api::tls::Certificates::check(files)
            .map_err(|e| anyhow::anyhow!("SPARK_TLS_CERT/SPARK_TLS_KEY: {e}"))?;
    }
    let bind = config.bind;
    let (delay, grace) = (config.shutdown_delay, config.shutdown_grace);
    let state = spark_gateway::build_state(config)?;
    let listener = tokio::net::TcpListener::bind(bind).await?;
    tracing::info!(address = %listener.local_addr()?, version = env!("CARGO_PKG_VERSION"), "spark-gateway listening");
    let ops = match state.config().ops_bind {
        Some(addr) => {
            let ops = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(address = %ops.local_addr()?, "operations listener (metrics, probes, health)");
            Some(ops)
        }
        None => None,
    };

    reload_keys_on_sighup(state.clone());
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = spark_gateway::telemetry::spawn_named(
        "server",
        spark_gateway::serve_with_ops(listener, ops, state.clone(), async {
            let _ = stopped.await;
        }),
    );
    tokio::select! {
        result = &mut server => {
            // The server ended without a signal: that is an error (the listener failed).
            result??;
            return Ok(());
        }
        () = shutdown_signal() => {}
    }
    // Readiness turns 503 at once; keep accepting for the delay so load balancers notice, then
    // stop accepting and let in-flight requests finish within the grace period.
    state.start_draining();
    tracing::info!(delay = ?delay, grace = ?grace, "draining: readiness is 503");
    tokio::time::sleep(delay).await;
    let _ = stop_accepting.send(());
    let served = tokio::time::timeout(grace, server).await;
    // The last requests' ledger rows are queued by now: write them before exiting. A database
    // that does not answer within the grace period costs those rows, and says how many.
    let lost = state.ledger().close(grace).await;
    match served {
        Ok(result) => {
            result??;
            if lost > 0 {
                anyhow::bail!("{lost} usage rows could not be written before exit");
            }
            tracing::info!("spark-gateway stopped");
            Ok(())
        }
        Err(_) => {
            anyhow::bail!("requests were still in flight when the {grace:?} grace period ended")
        }
    }
}

/// SIGHUP re-reads `SPARK_API_KEYS_FILE` at once (it is also watched for changes).
fn reload_keys_on_sighup(state: spark_gateway::AppState) {
    #[cfg(unix)]
    spark_gateway::telemetry::spawn_named("sighup", async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            // The ring logs a refusal itself; success is worth a line of its own here.
            let ring = state.clone();
            if let Ok(Ok(reloaded)) =
                tokio::task::spawn_blocking(move || ring.reload_key_file(true)).await
            {
                tracing::info!(?reloaded, "API keys reloaded on SIGHUP");
            }
        }
    });
    #[cfg(not(unix))]
    let _ = state;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Runs a database command against `SPARK_DATABASE_URL` (or the default SQLite file). Errors
/// go to stderr with exit 2, so `audit verify`'s 1 means a broken chain and nothing else.
fn with_store<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce(spark_gateway::store::Store) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, String>>,
{
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let url = match &config.database {
        spark_gateway::config::Database::Off => {
            eprintln!("SPARK_DATABASE_URL=none: there is no database");
            return ExitCode::from(2);
        }
        spark_gateway::config::Database::Url(url) => url.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("could not start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        use secrecy::ExposeSecret;
        let store = match spark_gateway::store::Store::open(url.expose_secret()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let code = f(store.clone()).await.unwrap_or_else(|e| {
            eprintln!("{e}");
            ExitCode::from(2)
        });
        store.close().await;
        code
    })
}

fn check_config() -> ExitCode {
    match Config::from_env() {
        Ok(c) => {
            let mut out = std::io::stdout().lock();
            for (name, value) in c.redacted() {
                let _ = writeln!(out, "{name}={value}");
            }
            for w in c.warnings() {
                eprintln!("warning: {w}");
            }
            // The TLS pair is read as serving would read it: a pair that would stop the
            // gateway fails the check too.
            if let Some(files) = &c.tls
                && let Err(e) = spark_gateway::api::tls::Certificates::check(files)
            {
                eprintln!("SPARK_TLS_CERT/SPARK_TLS_KEY: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn report_json(text: &str, policy: &Policy) -> serde_json::Value {
    let normalized = sanitize::normalize(text);
    let chars = normalized.chars().count();
    let report = sanitize::assess(text, &normalized);
    serde_json::json!({
        "flagged": report.flagged(policy.threshold) || chars > policy.max_chars,
        "riskScore": report.risk_score,
        "categories": report.categories,
        "chars": chars,
        "model": model_json(text),
    })
}

/// What the learned stage made of `text`: its score on the rules' scale (0.5 at the threshold
/// chosen on the development set; counted from `learned::MIN_EVIDENCE`), its log-odds and the
/// words of the deciding window that pushed hardest towards injection. The command line only:
/// the features are the prompt's own words, so nothing here reaches a log.
fn model_json(text: &str) -> serde_json::Value {
    let Some(model) = sanitize::model() else {
        return serde_json::Value::Null;
    };
    let view = sanitize::model_view(text);
    let logit = model.logit(&view);
    let score = model.evidence(logit);
    let features: Vec<_> = model
        .explain(&view, 5)
        .into_iter()
        .map(|(feature, weight)| serde_json::json!({ "feature": feature, "weight": weight }))
        .collect();
    serde_json::json!({
        "score": score,
        "counted": score >= sanitize::learned::MIN_EVIDENCE,
        "logit": logit,
        "features": features,
    })
}

/// The default policy, or the one the environment configures when it is valid.
fn policy_from_env() -> Policy {
    Config::from_env().map(|c| c.sanitizer).unwrap_or_default()
}

fn sanitize_cmd(json: bool, jsonl: bool) -> ExitCode {
    let policy = policy_from_env();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    if jsonl {
        for (n, line) in stdin.lock().lines().enumerate() {
            let Ok(line) = line else {
                eprintln!("line {}: not valid UTF-8", n + 1);
                return ExitCode::FAILURE;
            };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<String>(&line) {
                Ok(text) => {
                    let _ = writeln!(out, "{}", report_json(&text, &policy));
                }
                Err(e) => {
                    eprintln!("line {}: expected a JSON string: {e}", n + 1);
                    return ExitCode::FAILURE;
                }
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut text = String::new();
    if let Err(e) = stdin.lock().read_to_string(&mut text) {
        eprintln!("could not read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let report = report_json(&text, &policy);
    if json {
        let _ = writeln!(out, "{report}");
    } else {
        let _ = writeln!(
            out,
            "flagged: {}\nrisk score: {}\ncategories: {}\nchars: {}\nmodel score: {}",
            report["flagged"],
            report["riskScore"],
            report["categories"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            report["chars"],
            report["model"]["score"],
        );
    }
    ExitCode::SUCCESS
}

fn healthcheck(url: Option<String>) -> ExitCode {
    let base = url.unwrap_or_else(|| {
        let bind = Config::probe_bind(&EnvSource)
            .map_or_else(|| "127.0.0.1:8080".to_owned(), |b| b.to_string());
        // A wildcard bind is reached on loopback from inside the container.
        let bind = bind
            .replace("0.0.0.0", "127.0.0.1")
            .replace("[::]", "[::1]");
        let scheme = if Config::probe_tls(&EnvSource) {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{bind}")
    });
    let url = format!("{}/livez", base.trim_end_matches('/'));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(_) => return ExitCode::FAILURE,
    };
    let ok = runtime.block_on(async {
        // The probe runs beside the gateway and reaches it on loopback, where the certificate
        // (issued for the public name) cannot match: it checks liveness, not identity, so a
        // loopback target is not verified. Any other host is.
        let loopback = reqwest::Url::parse(&url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .is_some_and(|host| {
                host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .danger_accept_invalid_certs(loopback)
            .build()
            .ok()?;
        let resp = client.get(&url).send().await.ok()?;
        Some(resp.status().is_success())
    });
    if ok == Some(true) {
        ExitCode::SUCCESS
    } else {
        eprintln!("healthcheck failed: {url}");
        ExitCode::FAILURE
    }
}
