//! Step 2 for a streaming request: a cache hit as one delta, or one upstream stream shared by
//! every concurrent identical request (a *flight*).
//!
//! The first request for a key leads: a task it spawns opens the upstream stream through the
//! router (falling back only before the first event), records every event in the flight's log
//! and wakes the subscribers. Every request for the same key that arrives while the flight is in
//! the air subscribes to it instead of calling a provider: it reads the log from the start (a
//! late joiner first gets what was already streamed) and then follows live. The task finishes the
//! answer (extract, name, store, count) once for everyone. When every subscriber has gone the task
//! stops, so a client that hangs up does not keep paying for an answer nobody reads.
//!
//! Bounds: the accumulated text is capped ([`MAX_STREAM_TEXT`]), silence between two events
//! longer than the upstream timeout ends the stream, and so does `SPARK_MAX_STREAM_DURATION`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::Instrument;

use super::meter::{Metering, Outcome};
use super::outcome::{build_generation, record_failure, record_success, since};
use super::{GenerateError, GenerateRequest, GenerateService, Generation, route_error};
use crate::budget::{Amount, Reservation};
use crate::cache::{CacheKey, CacheResult, ResponseCache};
use crate::providers::{
    Completion, CompletionStream, ProviderError, ProviderId, StreamEvent, Usage,
};
use crate::resilience::{ProviderRouter, RouteError};
use crate::telemetry::Metrics;

/// The most text one stream may accumulate: the non-stream body cap. A provider (or something
/// posing as one) that never stops cannot grow the gateway's memory without bound.
pub const MAX_STREAM_TEXT: usize = 8 << 20;

/// One item of a streamed generation.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Delta(String),
    Done(Box<Generation>),
    Error(GenerateError),
}

pub type GenerationStream = std::pin::Pin<Box<dyn futures_util::Stream<Item = StreamItem> + Send>>;

/// The streams in the air, by cache key.
#[derive(Default)]
pub(super) struct Flights(Mutex<HashMap<CacheKey, Arc<Flight>>>);

impl Flights {
    /// The flight for `key` and whether the caller leads it (created it).
    fn join(&self, key: CacheKey) -> (Arc<Flight>, bool) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(&key) {
            return (Arc::clone(f), false);
        }
        let f = Arc::new(Flight::default());
        map.insert(key, Arc::clone(&f));
        (f, true)
    }

    /// Lands a flight: later requests start their own (or find the cached answer).
    fn land(&self, key: &CacheKey, flight: &Arc<Flight>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }

    #[cfg(test)]
    pub(super) fn in_air(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }
}

struct Flight {
    log: Mutex<Log>,
    /// Bumped after every change of the log; subscribers wait on it.
    changed: watch::Sender<()>,
}

impl Default for Flight {
    fn default() -> Self {
        Flight {
            log: Mutex::new(Log::default()),
            changed: watch::channel(()).0,
        }
    }
}

#[derive(Default)]
struct Log {
    /// Set once: the provider that accepted the stream, or why none did.
    opened: Option<Result<ProviderId, GenerateError>>,
    items: Vec<StreamItem>,
    ended: bool,
}

impl Flight {
    fn update(&self, f: impl FnOnce(&mut Log)) {
        {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut log);
        }
        self.changed.send_replace(());
    }

    fn read<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        f(&log)
    }

    /// Waits for the opening outcome.
    async fn opened(&self) -> Result<ProviderId, GenerateError> {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(outcome) = self.read(|log| log.opened.clone()) {
                return outcome;
            }
            if rx.changed().await.is_err() {
                return Err(GenerateError::Deadline(Duration::ZERO));
            }
        }
    }

    /// The log from its start, then live, as a stream. Holding it counts as a subscriber.
    fn subscribe(self: Arc<Self>) -> GenerationStream {
        let rx = self.changed.subscribe();
        Box::pin(futures_util::stream::unfold(
            (self, rx, 0usize),
            |(flight, mut rx, next)| async move {
                loop {
                    let (item, ended) =
                        flight.read(|log| (log.items.get(next).cloned(), log.ended));
                    if let Some(item) = item {
                        return Some((item, (flight, rx, next + 1)));
                    }
                    if ended || rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        ))
    }
}

/// What the flight's task needs, owned.
struct Pilot {
    router: Arc<ProviderRouter>,
    cache: Arc<ResponseCache<Generation>>,
    metrics: Arc<Metrics>,
    flights: Arc<Flights>,
    flight: Arc<Flight>,
    req: GenerateRequest,
    base: crate::providers::CompletionRequest,
    deadline: Duration,
    idle: Duration,
    max_stream: Duration,
    started: Instant,
    result: CacheResult,
    /// The leader's metering and reservation, taken by the one place the flight ends.
    meter: Mutex<Option<(Metering, Reservation)>>,
}

impl GenerateService {
    /// The streaming twin of [`GenerateService::generate`]. An error before the first event is
    /// returned here (and becomes an ordinary error response); one after it ends the stream with
    /// [`StreamItem::Error`].
    pub async fn generate_stream(
        &self,
        req: &GenerateRequest,
        read_cache: bool,
        started: Instant,
    ) -> Result<(GenerationStream, ProviderId, CacheResult), GenerateError> {
        // Checked for this request before it can join another's flight (see `generate`).
        let reservation = self.reserve(req).await?;
        let hit = if read_cache {
            self.cache
                .lookup(&req.cache_key, |g| g.fits(req))
                .instrument(tracing::debug_span!("cache_lookup"))
                .await
        } else {
            None
        };
        if let Some(hit) = hit {
            let mut g = (*hit).clone();
            self.count_hit(&g, started);
            g.cached = true;
            g.latency_ms = since(started);
            self.release(reservation);
            if let Some(m) = &self.metering {
                m.cached(req, &g, g.latency_ms);
            }
            let provider = g.provider;
            // The stored answer, whole, as one delta: the model's text, like a live stream.
            let text = if g.answer.is_empty() {
                g.code.clone()
            } else {
                g.answer.clone()
            };
            let items = vec![StreamItem::Delta(text), StreamItem::Done(Box::new(g))];
            return Ok((
                Box::pin(futures_util::stream::iter(items)),
                provider,
                CacheResult::Hit,
            ));
        }
        let result = if !self.cache.enabled() || !read_cache {
            CacheResult::Bypass
        } else {
            CacheResult::Miss
        };
        // Sharing a stream is the cache's single-flight: a request that bypasses the cache (cache
        // off, or `Cache-Control: no-cache`) gets a stream of its own.
        let (flight, leads) = if result == CacheResult::Miss {
            self.flights.join(req.cache_key)
        } else {
            (Arc::new(Flight::default()), true)
        };
        // Subscribe before the task can end, so a fast stream is not missed.
        let mut stream = Arc::clone(&flight).subscribe();
        let meter = match (&self.metering, reservation) {
            (Some(m), Some(r)) if leads => Some((m.clone(), r)),
            (_, r) => {
                self.release(r);
                None
            }
        };
        if !leads && let Some(m) = self.metering.clone() {
            // A follower paid nothing: its row is a cached one, written when its answer is whole.
            let req = req.clone();
            stream = Box::pin(stream.inspect(move |item| {
                if let StreamItem::Done(g) = item {
                    m.cached(&req, g, g.latency_ms);
                }
            }));
        }
        if leads {
            let pilot = Pilot {
                router: Arc::clone(&self.router),
                cache: Arc::clone(&self.cache),
                metrics: Arc::clone(&self.metrics),
                flights: Arc::clone(&self.flights),
                flight: Arc::clone(&flight),
                req: req.clone(),
                base: self.base_request(req),
                deadline: self.limits.request_deadline,
                idle: self.limits.stream_idle,
                max_stream: self.limits.max_stream,
                started,
                result,
                meter: Mutex::new(meter),
            };
            // The flight runs in the leading request's span, so its provider attempts are that
            // request's children in a trace (a task's span is not exported).
            crate::telemetry::spawn_named(
                "stream-flight",
                pilot.fly().instrument(tracing::Span::current()),
            );
        }
        let provider = flight.opened().await?;
        Ok((stream, provider, result))
    }
}

impl Drop for Pilot {
    /// A flight that ended some other way (its task cancelled at shutdown) gives its
    /// reservation back rather than holding it until the window ends.
    fn drop(&mut self) {
        if let Some((m, r)) = self.meter.get_mut().ok().and_then(Option::take) {
            m.budgets.settle(r, Amount::default());
        }
    }
}

impl Pilot {
    async fn fly(self) {
        let ends_at = tokio::time::Instant::from_std(self.started) + self.deadline;
        let mut upstream_wait = Duration::ZERO;
        let opened = tokio::time::timeout_at(
            ends_at,
            self.router.stream(
                &self.req.plan,
                &self.base,
                &self.req.ticket,
                ends_at,
                &mut upstream_wait,
            ),
        )
        .await
        .unwrap_or(Err(RouteError::Deadline));
        let (provider, upstream) = match opened {
            Ok(ok) => ok,
            Err(e) => {
                let e = route_error(e, self.deadline);
                record_failure(&self.metrics, self.req.engine, &e);
                let provider = match &e {
                    GenerateError::Provider(p) => Some(p.provider()),
                    _ => None,
                };
                self.settle(provider, "", Usage::default(), e.code());
                self.flight.update(|log| {
                    log.opened = Some(Err(e));
                    log.ended = true;
                });
                self.flights.land(&self.req.cache_key, &self.flight);
                return;
            }
        };
        self.flight.update(|log| log.opened = Some(Ok(provider)));
        self.relay(provider, upstream).await;
        self.flights.land(&self.req.cache_key, &self.flight);
    }

    /// Copies the upstream's events into the flight's log until it finishes, fails, goes silent,
    /// grows past the cap, or nobody listens any more.
    async fn relay(&self, provider: ProviderId, mut upstream: CompletionStream) {
        let mut text = String::new();
        let ends_at = tokio::time::Instant::now() + self.max_stream;
        loop {
            if self.flight.changed.receiver_count() == 0 {
                tracing::debug!("every subscriber left; the upstream stream is dropped");
                // What was generated until then was paid for: the gateway's estimate of it.
                self.settle(
                    Some(provider),
                    "",
                    Metering::estimate(&self.req, &text),
                    "cancelled",
                );
                self.flight.update(|log| log.ended = true);
                return;
            }
            // A stream that goes silent is ended: the deadline no longer applies once the first
            // byte went out, so silence is what bounds a hung upstream.
            // A stream may not last past SPARK_MAX_STREAM_DURATION either, however lively.
            let left = ends_at.saturating_duration_since(tokio::time::Instant::now());
            let next = match tokio::time::timeout(self.idle.min(left), upstream.next()).await {
                Ok(next) => next,
                Err(_) if left <= self.idle => Some(Err(ProviderError::Malformed {
                    provider,
                    reason: "the stream lasted longer than SPARK_MAX_STREAM_DURATION".into(),
                })),
                Err(_) => Some(Err(ProviderError::Timeout {
                    provider,
                    timeout: self.idle,
                })),
            };
            let item = match next {
                Some(Ok(StreamEvent::Delta(t))) if text.len() + t.len() > MAX_STREAM_TEXT => self
                    .fail(GenerateError::Provider(ProviderError::Malformed {
                        provider,
                        reason: "the stream exceeded the answer size limit".into(),
                    })),
                Some(Ok(StreamEvent::Delta(t))) => {
                    text.push_str(&t);
                    self.flight
                        .update(|log| log.items.push(StreamItem::Delta(t)));
                    continue;
                }
                Some(Ok(StreamEvent::Finished {
                    model,
                    usage,
                    truncated,
                    stop_sequence,
                })) => {
                    let completion = Completion {
                        text: std::mem::take(&mut text),
                        model,
                        usage,
                        truncated,
                        stop_sequence,
                    };
                    record_success(
                        &self.metrics,
                        provider,
                        self.req.engine,
                        usage,
                        self.started,
                    );
                    self.settle(Some(provider), &completion.model, usage, "ok");
                    let g = build_generation(&self.req, provider, completion, self.started);
                    // Stored before the flight lands, so no request falls between the two.
                    self.cache
                        .store_fresh(self.req.cache_key, g.clone(), self.result)
                        .await;
                    StreamItem::Done(Box::new(g))
                }
                Some(Err(e)) => self.fail(GenerateError::Provider(e)),
                None => self.fail(GenerateError::Provider(ProviderError::Malformed {
                    provider,
                    reason: "the stream ended without finishing".into(),
                })),
            };
            if let StreamItem::Error(e) = &item {
                self.settle(
                    Some(provider),
                    "",
                    Metering::estimate(&self.req, &text),
                    e.code(),
                );
            }
            self.flight.update(|log| {
                log.items.push(item);
                log.ended = true;
            });
            return;
        }
    }

    /// Ends the leader's metering once: a ledger row when the flight reached `provider`, and the
    /// reservation settled (released when it did not). `model` empty: the plan's model for it.
    fn settle(&self, provider: Option<ProviderId>, model: &str, usage: Usage, status: &str) {
        let Some((m, reservation)) = self.meter.lock().ok().and_then(|mut g| g.take()) else {
            return;
        };
        let Some(provider) = provider else {
            m.budgets.settle(reservation, Amount::default());
            return;
        };
        let model = if model.is_empty() {
            self.req.model_for(provider)
        } else {
            model
        };
        m.finish(
            &self.req,
            reservation,
            &Outcome {
                provider,
                model,
                usage,
                status,
                latency_ms: since(self.started),
            },
        );
    }

    fn fail(&self, e: GenerateError) -> StreamItem {
        record_failure(&self.metrics, self.req.engine, &e);
        StreamItem::Error(e)
    }
}
