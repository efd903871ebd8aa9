//! Drives the load: the open model on a fixed timeline, or the closed model with a fixed number
//! of workers, and records every measured request.
//!
//! The open model is what capacity planning needs: requests are due at `start + i / rate` whether
//! or not the server kept up, and each one's latency runs from when it was *due*, so a server
//! that stalls shows the queueing its users would feel (the coordinated-omission trap of closed
//! loops). The timeline is kept by a dedicated OS thread with `std::thread::sleep`, not a tokio
//! timer: tokio's timer wheel ticks in whole milliseconds, which would add up to a millisecond to
//! every measured latency, an error as large as the gateway overhead we want to see. How late
//! the thread dispatched is itself recorded (`schedulerLagMs`), so a saturated generator shows.
//!
//! When `max_inflight` requests are outstanding the scheduler waits for one to finish; the wait
//! is still counted in the latencies of the requests it delays.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use crate::scenario::{Prepared, RequestFactory};
use crate::stats::{Outcome, Recorder};

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadModel {
    /// `rate` requests per second on a fixed timeline.
    Open { rate: f64 },
    /// `concurrency` workers, each sending its next request when the last one finished.
    Closed { concurrency: usize },
}

/// When measurement ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    Requests(u64),
}

pub struct RunConfig {
    pub factory: RequestFactory,
    pub model: LoadModel,
    pub stop: Stop,
    /// Load offered before measurement starts, with its results thrown away: connections are
    /// open, caches are warm and the JIT-free but allocation-happy first second is gone.
    pub warmup: Duration,
    pub timeout: Duration,
    pub max_inflight: usize,
    /// Sent with every request: the API key and any `--header`.
    pub headers: HeaderMap,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the rate must be a positive number of requests per second")]
    BadRate,
    #[error("the concurrency and the in-flight limit must be at least 1")]
    BadConcurrency,
    #[error("could not build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("the scheduler thread failed: {0}")]
    Scheduler(String),
}

/// What a run shares with its progress display and its caller while it runs.
pub struct Live {
    pub recorder: Mutex<Recorder>,
    /// Measured requests sent so far.
    pub sent: AtomicU64,
    /// Set to end the run early (Ctrl-C): what was measured is kept.
    pub cancel: AtomicBool,
}

impl Live {
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Live {
            recorder: Mutex::new(Recorder::new()?),
            sent: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
        })
    }

    pub fn with_recorder<T>(&self, f: impl FnOnce(&Recorder) -> T) -> T {
        f(&self.recorder.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn record(&self, started: Duration, latency: Duration, outcome: Outcome, bytes: u64) {
        self.recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(started, latency, outcome, bytes);
    }

    fn record_lag(&self, lag: Duration) {
        self.recorder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record_lag(lag);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

fn client(cfg: &RunConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("spark-loadtest/", env!("CARGO_PKG_VERSION")))
        .default_headers(cfg.headers.clone())
        .pool_max_idle_per_host(cfg.max_inflight)
        .tcp_nodelay(true)
        // A proxy from the environment would measure the proxy, and could send the load off
        // this machine.
        .no_proxy()
        .build()
}

/// Sends one request and reads its body to the end.
async fn send(client: &reqwest::Client, p: Prepared, timeout: Duration) -> (Outcome, u64) {
    let mut rb = client.request(p.method, p.url).timeout(timeout);
    if let Some(body) = p.body {
        rb = rb
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
    }
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            Outcome::Timeout
        } else if e.is_connect() {
            Outcome::Connect
        } else {
            Outcome::Transport
        }
    };
    match rb.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.bytes().await {
                Ok(b) => (Outcome::Status(status), b.len() as u64),
                Err(e) => (classify(e), 0),
            }
        }
        Err(e) => (classify(e), 0),
    }
}

/// Runs the load to its end (or to `live.cancel`) and returns what was measured.
pub async fn run(cfg: RunConfig, live: Arc<Live>) -> Result<Recorder, RunError> {
    if cfg.max_inflight == 0 {
        return Err(RunError::BadConcurrency);
    }
    let client = client(&cfg)?;
    match cfg.model {
        LoadModel::Open { rate } => {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(RunError::BadRate);
            }
            run_open(cfg, rate, client, Arc::clone(&live)).await?;
        }
        LoadModel::Closed { concurrency } => {
            if concurrency == 0 {
                return Err(RunError::BadConcurrency);
            }
            run_closed(cfg, concurrency, client, Arc::clone(&live)).await;
        }
    }
    Ok(live.with_recorder(Recorder::clone))
}

async fn run_open(
    cfg: RunConfig,
    rate: f64,
    client: reqwest::Client,
    live: Arc<Live>,
) -> Result<(), RunError> {
    let handle = tokio::runtime::Handle::current();
    let permits = u32::try_from(cfg.max_inflight).unwrap_or(u32::MAX);
    let inflight = Arc::new(Semaphore::new(permits as usize));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let scheduler = std::thread::Builder::new()
        .name("spark-loadtest-scheduler".to_owned())
        .spawn(move || {
            let mut rng = rand::rng();
            // A short lead so the first requests are not late while the thread settles.
            let start = Instant::now() + Duration::from_millis(5);
            let measure_start = start + cfg.warmup;
            let mut measured = 0u64;
            for i in 0u64.. {
                if live.cancelled() {
                    break;
                }
                let offset = Duration::from_secs_f64(i as f64 / rate);
                let is_measured = offset >= cfg.warmup;
                match cfg.stop {
                    Stop::After(d) if offset >= cfg.warmup + d => break,
                    Stop::Requests(n) if is_measured && measured >= n => break,
                    _ => {}
                }
                let due = start + offset;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let Ok(permit) = handle.block_on(Arc::clone(&inflight).acquire_owned()) else {
                    break;
                };
                let prepared = cfg.factory.make(i, rng.random::<f64>());
                if is_measured {
                    measured += 1;
                    live.sent.fetch_add(1, Ordering::Relaxed);
                    live.record_lag(Instant::now().saturating_duration_since(due));
                }
                let client = client.clone();
                let live = Arc::clone(&live);
                let timeout = cfg.timeout;
                handle.spawn(async move {
                    let (outcome, bytes) = send(&client, prepared, timeout).await;
                    if is_measured {
                        let latency = Instant::now().saturating_duration_since(due);
                        live.record(due - measure_start, latency, outcome, bytes);
                    }
                    drop(permit);
                });
            }
            // Every request has finished once all the permits are back.
            let drained = handle.block_on(inflight.acquire_many(permits));
            drop(drained);
            let _ = done_tx.send(());
        })
        .map_err(|e| RunError::Scheduler(e.to_string()))?;
    let finished = done_rx.await;
    let joined = tokio::task::spawn_blocking(move || scheduler.join())
        .await
        .map_err(|e| RunError::Scheduler(e.to_string()))?;
    if joined.is_err() || finished.is_err() {
        return Err(RunError::Scheduler(
            "it stopped before the run ended".into(),
        ));
    }
    Ok(())
}

async fn run_closed(cfg: RunConfig, concurrency: usize, client: reqwest::Client, live: Arc<Live>) {
    let start = Instant::now();
    let measure_start = start + cfg.warmup;
    let cfg = Arc::new(cfg);
    let tickets = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (cfg, client, live, tickets) = (
            Arc::clone(&cfg),
            client.clone(),
            Arc::clone(&live),
            Arc::clone(&tickets),
        );
        workers.spawn(async move {
            let mut seq = worker as u64;
            loop {
                if live.cancelled() {
                    break;
                }
                let started = Instant::now();
                let is_measured = started >= measure_start;
                match cfg.stop {
                    Stop::After(d) if started >= measure_start + d => break,
                    Stop::Requests(n)
                        if is_measured && tickets.fetch_add(1, Ordering::Relaxed) >= n =>
                    {
                        break;
                    }
                    _ => {}
                }
                if is_measured {
                    live.sent.fetch_add(1, Ordering::Relaxed);
                }
                let roll = rand::rng().random::<f64>();
                let prepared = cfg.factory.make(seq, roll);
                seq += concurrency as u64;
                let (outcome, bytes) = send(&client, prepared, cfg.timeout).await;
                if is_measured {
                    live.record(started - measure_start, started.elapsed(), outcome, bytes);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
}
