//! The usage and cost ledger, and the queue the audit trail's system events share with it.
//!
//! A request never waits on the database and never fails because of it: [`Ledger::record`] prices
//! the call and puts a row on a queue; one writer task inserts rows in batches (every second, or
//! at once when 1,000 are waiting), and appends queued audit entries. While the database is down
//! rows wait, up to `SPARK_USAGE_QUEUE` (counting audit entries); only past that bound is a row
//! dropped, and each drop is counted in `spark_usage_dropped_total`. On shutdown the writer
//! drains the queue before the process exits. Health reads [`Ledger::status`].

pub mod prices;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{CounterVec, IntCounter, IntGauge};
use tokio::sync::{mpsc, watch};

use crate::store::audit::Entry;
use crate::store::usage::UsageRow;
use crate::store::{Backend, Store, now_ms};
pub use prices::{Price, PriceTable};

/// How many rows go into one insert; also how many waiting rows trigger a write before the
/// second is up.
const BATCH: usize = 1_000;
/// The writer's period: rows wait at most this long in calm times.
const PERIOD: Duration = Duration::from_secs(1);
/// Addresses whose failed authentications are counted per minute; beyond, one bucket holds
/// the rest, so a spray from many addresses cannot grow memory.
const MAX_FAILING_ADDRESSES: usize = 10_000;

/// The metrics the ledger moves.
#[derive(Clone)]
pub struct LedgerMetrics {
    /// `spark_cost_usd_total{provider,model}`; the model label is a price-table entry or `other`.
    pub cost: CounterVec,
    pub unpriced: IntCounter,
    pub queue_depth: IntGauge,
    pub dropped: IntCounter,
    pub db_up: IntGauge,
}

/// One request's usage, before pricing.
#[derive(Debug, Clone)]
pub struct Usage<'a> {
    pub request_id: &'a str,
    pub key_id: Option<&'a str>,
    pub user_id: &'a str,
    pub route: &'static str,
    pub provider: &'a str,
    pub model: &'a str,
    pub engine: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached: bool,
    /// `ok`, or the error code the request ended with.
    pub status: &'a str,
    pub latency_ms: u64,
}

enum Item {
    Usage(UsageRow),
    Audit(Entry),
}

/// What health reports about the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerStatus {
    /// `sqlite`, `postgres`, or `off` (`SPARK_DATABASE_URL=none`).
    pub backend: &'static str,
    /// The last write or ping succeeded.
    pub database_up: bool,
    pub queue_depth: usize,
    pub dropped: u64,
}

struct Shared {
    tx: mpsc::UnboundedSender<Item>,
    /// Rows queued or held by the writer and not yet written.
    depth: AtomicUsize,
    max: usize,
    up: AtomicBool,
    dropped: AtomicU64,
    backend: Option<Backend>,
    prices: PriceTable,
    metrics: LedgerMetrics,
    /// Failed authentications this minute, per address (`None`: the overflow bucket).
    failures: Mutex<HashMap<Option<IpAddr>, u64>>,
    stop: watch::Sender<bool>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A handle on the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger(Arc<Shared>);

impl Ledger {
    /// Starts the writer on the current runtime. With no store (`SPARK_DATABASE_URL=none`)
    /// nothing is queued: costs are still counted in the metrics.
    pub fn start(
        store: Option<Store>,
        prices: PriceTable,
        max: usize,
        metrics: LedgerMetrics,
    ) -> Ledger {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            tx,
            depth: AtomicUsize::new(0),
            max,
            up: AtomicBool::new(store.is_some()),
            dropped: AtomicU64::new(0),
            backend: store.as_ref().map(Store::backend),
            prices,
            metrics,
            failures: Mutex::new(HashMap::new()),
            stop,
            writer: Mutex::new(None),
        });
        shared.metrics.db_up.set(i64::from(store.is_some()));
        if let Some(store) = store {
            let handle = crate::telemetry::spawn_named(
                "ledger-writer",
                writer(Arc::clone(&shared), store, rx, stopped),
            );
            if let Ok(mut w) = shared.writer.lock() {
                *w = Some(handle);
            }
        }
        Ledger(shared)
    }

    pub fn prices(&self) -> &PriceTable {
        &self.0.prices
    }

    /// Prices a call: nano-dollars, and the price-table entry that priced it. A cached answer
    /// cost nothing; a model with no price costs 0.
    pub fn price(&self, model: &str, input: u64, output: u64) -> (i64, Option<&str>) {
        match self.0.prices.lookup(model) {
            Some((name, price)) => (price.cost_nusd(input, output), Some(name)),
            None => (0, None),
        }
    }

    /// Records one request: counts its cost and queues its row. Returns the cost in
    /// nano-dollars (0 for a cached answer). Never blocks, never fails the request.
    pub fn record(&self, u: &Usage<'_>) -> i64 {
        let cost = if u.cached {
            0
        } else {
            let (cost, entry) = self.price(u.model, u.input_tokens, u.output_tokens);
            if entry.is_none() {
                self.0.metrics.unpriced.inc();
            }
            if cost > 0 {
                self.0
                    .metrics
                    .cost
                    .with_label_values(&[u.provider, entry.unwrap_or("other")])
                    .inc_by(crate::store::usd(cost));
            }
            cost
        };
        if self.0.backend.is_some() {
            self.enqueue(Item::Usage(UsageRow {
                // Time-ordered, so the primary key index grows at its end.
                id: uuid::Uuid::now_v7().simple().to_string(),
                time: now_ms(),
                request_id: u.request_id.to_owned(),
                key_id: u.key_id.map(str::to_owned),
                user_id: u.user_id.to_owned(),
                route: u.route,
                provider: u.provider.to_owned(),
                model: u.model.to_owned(),
                engine: u.engine.to_owned(),
                input_tokens: i64::try_from(u.input_tokens).unwrap_or(i64::MAX),
                output_tokens: i64::try_from(u.output_tokens).unwrap_or(i64::MAX),
                cached: u.cached,
                cost_nusd: cost,
                status: u.status.to_owned(),
                latency_ms: i64::try_from(u.latency_ms).unwrap_or(i64::MAX),
            }));
        }
        cost
    }

    /// Queues an audit entry for the writer (system events that are not a database change of
    /// their own: cache purges, breaker resets, key-file reloads, start-up).
    pub fn audit(&self, entry: Entry) {
        if self.0.backend.is_some() {
            self.enqueue(Item::Audit(entry));
        }
    }

    /// Counts a failed authentication from `ip`; the writer turns each minute's counts into
    /// `auth.failures` audit entries.
    pub fn auth_failed(&self, ip: IpAddr) {
        if self.0.backend.is_none() {
            return;
        }
        let Ok(mut f) = self.0.failures.lock() else {
            return;
        };
        let key = if f.len() < MAX_FAILING_ADDRESSES || f.contains_key(&Some(ip)) {
            Some(ip)
        } else {
            None
        };
        *f.entry(key).or_insert(0) += 1;
    }

    fn enqueue(&self, item: Item) {
        let s = &self.0;
        if s.depth.fetch_add(1, Ordering::AcqRel) >= s.max {
            s.depth.fetch_sub(1, Ordering::AcqRel);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            s.metrics.dropped.inc();
            return;
        }
        if s.tx.send(item).is_err() {
            // The writer has stopped (shutdown): the row cannot be written any more.
            s.depth.fetch_sub(1, Ordering::AcqRel);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            s.metrics.dropped.inc();
            return;
        }
        s.metrics
            .queue_depth
            .set(i64::try_from(s.depth.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    }

    pub fn status(&self) -> LedgerStatus {
        let s = &self.0;
        LedgerStatus {
            backend: s.backend.map_or("off", Backend::as_str),
            database_up: s.up.load(Ordering::Relaxed),
            queue_depth: s.depth.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
        }
    }

    /// Whether health should say degraded: the database is configured and not answering.
    pub fn degraded(&self) -> bool {
        self.0.backend.is_some() && !self.0.up.load(Ordering::Relaxed)
    }

    /// Stops the writer after it has written everything queued, waiting at most `within`.
    /// Returns how many rows could not be written.
    pub async fn close(&self, within: Duration) -> usize {
        let _ = self.0.stop.send(true);
        let handle = self.0.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle
            && tokio::time::timeout(within, handle).await.is_err()
        {
            let left = self.0.depth.load(Ordering::Relaxed);
            tracing::error!(
                rows = left,
                "the usage ledger could not be flushed before exit; these rows are lost"
            );
            return left;
        }
        0
    }
}

/// The writer: gathers rows, writes them in batches, retries with backoff while the database
/// is down, and on stop drains everything before returning.
async fn writer(
    shared: Arc<Shared>,
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Item>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rows: Vec<UsageRow> = Vec::new();
    let mut audit: std::collections::VecDeque<Entry> = std::collections::VecDeque::new();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::ZERO;
    let mut next_try = tokio::time::Instant::now();
    let mut minute_ends = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last_ping = tokio::time::Instant::now();
    let mut stopping = false;
    let failure_log = crate::telemetry::Throttle::new(Duration::from_secs(30));
    loop {
        let mut due = false;
        // With a backlog (after an outage) and the database answering, write on without
        // waiting for the next tick or row.
        let backlog = rows.len() >= BATCH && tokio::time::Instant::now() >= next_try;
        if backlog {
            due = true;
        } else if !stopping {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => push(item, &mut rows, &mut audit),
                    None => stopping = true,
                },
                _ = tick.tick() => due = true,
                _ = stop.changed() => stopping = true,
            }
        }
        // Take what is already waiting without yielding, so a burst becomes one batch.
        while rows.len() < 5 * BATCH {
            match rx.try_recv() {
                Ok(item) => push(item, &mut rows, &mut audit),
                Err(_) => break,
            }
        }
        let now = tokio::time::Instant::now();
        if now >= minute_ends || stopping {
            minute_ends = now + Duration::from_secs(60);
            audit.extend(failure_entries(&shared));
        }
        if stopping && rows.is_empty() && audit.is_empty() && rx.is_empty() {
            return;
        }
        let write = stopping || due || rows.len() >= BATCH || !audit.is_empty();
        if !write || now < next_try {
            if stopping {
                tokio::time::sleep_until(next_try).await;
            }
            continue;
        }
        let nothing = rows.is_empty() && audit.is_empty();
        let result = if nothing {
            if now.duration_since(last_ping) < Duration::from_secs(5) && !stopping {
                continue;
            }
            last_ping = now;
            if store.ping().await {
                store.ready().await.map_err(|e| e.to_string())
            } else {
                Err("the database does not answer".to_owned())
            }
        } else {
            flush(&shared, &store, &mut rows, &mut audit).await
        };
        match result {
            Ok(()) => {
                backoff = Duration::ZERO;
                if !shared.up.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the usage ledger's database answers again; writing queued rows"
                    );
                }
                shared.metrics.db_up.set(1);
            }
            Err(why) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                next_try = tokio::time::Instant::now() + backoff;
                shared.up.store(false, Ordering::Relaxed);
                shared.metrics.db_up.set(0);
                if let Some(skipped) = failure_log.hit() {
                    tracing::error!(
                        error = %why,
                        queued = shared.depth.load(Ordering::Relaxed),
                        failed_attempts_since_last_line = skipped,
                        "the usage ledger cannot write; rows wait in the queue"
                    );
                }
            }
        }
        shared
            .metrics
            .queue_depth
            .set(i64::try_from(shared.depth.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
    }
}

fn push(item: Item, rows: &mut Vec<UsageRow>, audit: &mut std::collections::VecDeque<Entry>) {
    match item {
        Item::Usage(row) => rows.push(row),
        Item::Audit(entry) => audit.push_back(entry),
    }
}

/// Writes the audit entries (in order, each chained), then the rows. What was written leaves
/// the queue; what was not stays for the next attempt.
async fn flush(
    shared: &Shared,
    store: &Store,
    rows: &mut Vec<UsageRow>,
    audit: &mut std::collections::VecDeque<Entry>,
) -> Result<(), String> {
    while let Some(entry) = audit.front() {
        store
            .append_audit(entry.clone())
            .await
            .map_err(|e| e.to_string())?;
        audit.pop_front();
        shared.depth.fetch_sub(1, Ordering::AcqRel);
    }
    if rows.is_empty() {
        return Ok(());
    }
    let take = rows.len().min(5 * BATCH);
    store
        .insert_usage(&rows[..take])
        .await
        .map_err(|e| e.to_string())?;
    rows.drain(..take);
    shared.depth.fetch_sub(take, Ordering::AcqRel);
    Ok(())
}

/// This minute's failed authentications as audit entries, one per address, and the counts
/// reset. Failures are counted apart from the queue, so they do not take its room; the entries
/// they become do.
fn failure_entries(shared: &Shared) -> Vec<Entry> {
    let counts = match shared.failures.lock() {
        Ok(mut f) => std::mem::take(&mut *f),
        Err(_) => return Vec::new(),
    };
    let mut out = Vec::with_capacity(counts.len());
    for (ip, count) in counts {
        // Entries go through the same bound as everything else written.
        if shared.depth.fetch_add(1, Ordering::AcqRel) >= shared.max {
            shared.depth.fetch_sub(1, Ordering::AcqRel);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            shared.metrics.dropped.inc();
            continue;
        }
        let mut e = Entry::new("system", "auth.failures").details(serde_json::json!({
            "count": count,
            "windowSeconds": 60,
            "overflow": ip.is_none(),
        }));
        e.client_address = ip.map(|ip| ip.to_string());
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests;
