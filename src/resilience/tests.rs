//! The router on tokio's paused clock, with fake providers: fallback, cool-downs and probes,
//! refused keys, and attempts cut by the deadline. No sleeps and no sockets, so the timings
//! asserted are exact.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::*;
use crate::engine::Engine;
use crate::providers::{Completion, StreamEvent, Usage};

/// What a fake provider does on its next calls: each entry is used once, the last one forever.
#[derive(Clone)]
enum Answer {
    Ok,
    Status(u16),
    /// Sleeps this long, then answers 200.
    Slow(Duration),
}

struct Fake {
    id: ProviderId,
    models: Vec<String>,
    script: Mutex<Vec<Answer>>,
    calls: AtomicUsize,
    /// When each call arrived.
    times: Mutex<Vec<Instant>>,
}

impl Fake {
    fn new(id: ProviderId, script: &[Answer]) -> Arc<Self> {
        Arc::new(Fake {
            id,
            models: vec!["m".into()],
            script: Mutex::new(script.to_vec()),
            calls: AtomicUsize::new(0),
            times: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn next(&self) -> Answer {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.times.lock().unwrap().push(Instant::now());
        let mut script = self.script.lock().unwrap();
        if script.len() > 1 {
            script.remove(0)
        } else {
            script[0].clone()
        }
    }
}

#[async_trait]
impl Provider for Fake {
    fn id(&self) -> ProviderId {
        self.id
    }
    fn models(&self) -> &[String] {
        &self.models
    }
    async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ProviderError> {
        let answer = self.next();
        if let Answer::Slow(d) = answer {
            tokio::time::sleep(d).await;
        }
        match answer {
            Answer::Ok | Answer::Slow(_) => Ok(Completion {
                text: "ok".into(),
                model: "m".into(),
                usage: Usage::default(),
                truncated: false,
                stop_sequence: None,
            }),
            Answer::Status(status) => Err(ProviderError::Status {
                provider: self.id,
                status,
                kind: "test".into(),
                retry_after: None,
            }),
        }
    }
    /// One delta, then nothing for ever: a stream that is still running.
    async fn stream(&self, _: &CompletionRequest) -> Result<CompletionStream, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let first = futures_util::stream::once(async { Ok(StreamEvent::Delta("a".into())) });
        Ok(Box::pin(first.chain(futures_util::stream::pending())))
    }
}

const A: ProviderId = ProviderId::Anthropic;
const O: ProviderId = ProviderId::OpenAi;

fn router(a: &Arc<Fake>, o: &Arc<Fake>) -> (ProviderRouter, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new().unwrap());
    let errors = Arc::new(ErrorTracker::new(10, metrics.errors.clone(), None));
    let breaker = BreakerConfig {
        consecutive_failures: 3,
        open_base: Duration::from_secs(5),
        open_max: Duration::from_secs(60),
        half_open_probes: 1,
        ..BreakerConfig::default()
    };
    let retry = RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    };
    let providers: Vec<Arc<dyn Provider>> = vec![a.clone(), o.clone()];
    let r = ProviderRouter::new(
        providers,
        &breaker,
        retry,
        Duration::from_secs(20),
        Arc::clone(&metrics),
        errors,
    );
    (r, metrics)
}

fn plan() -> Vec<(ProviderId, String)> {
    vec![(A, "m".into()), (O, "m".into())]
}

fn ticket() -> Ticket {
    Ticket {
        caller: "tester".into(),
        class: crate::shaping::Class::Interactive,
    }
}

/// The router with `SPARK_PROVIDER_LIMITS` rules and a 5 s queue timeout.
fn shaped(r: ProviderRouter, rules: &str, metrics: &Arc<Metrics>) -> ProviderRouter {
    let rules = crate::shaping::limits::parse(rules).unwrap();
    r.with_shaper(Arc::new(Shaper::new(
        &rules,
        Duration::from_secs(5),
        1_000,
        Vec::new(),
        metrics,
        None,
    )))
}

fn base() -> CompletionRequest {
    CompletionRequest {
        model: String::new(),
        system: "s".into(),
        prompt: "p".into(),
        max_tokens: 10,
        temperature: None,
        stop: Vec::new(),
        engine: Engine::Unity,
        timeout: Duration::from_secs(30),
    }
}

async fn ask(r: &ProviderRouter) -> Result<ProviderId, RouteError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    r.complete(
        &plan(),
        &base(),
        &ticket(),
        deadline,
        &mut Duration::default(),
    )
    .await
    .map(|(id, _)| id)
}

fn circuit(r: &ProviderRouter, id: ProviderId) -> CircuitState {
    r.breaker(id).unwrap().snapshot().state
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_sends_traffic_to_the_fallback_and_spares_the_primary() {
    let (a, o) = (
        Fake::new(A, &[Answer::Status(500)]),
        Fake::new(O, &[Answer::Ok]),
    );
    let (r, _) = router(&a, &o);
    for _ in 0..3 {
        assert_eq!(ask(&r).await.unwrap(), O);
    }
    assert_eq!(circuit(&r, A), CircuitState::Open);
    for _ in 0..5 {
        assert_eq!(ask(&r).await.unwrap(), O);
    }
    assert_eq!(a.calls(), 3, "an open circuit is not called");
}

#[tokio::test(start_paused = true)]
async fn after_the_cool_down_one_probe_reaches_the_primary_and_success_closes() {
    let a = Fake::new(
        A,
        &[
            Answer::Status(500),
            Answer::Status(500),
            Answer::Status(500),
            Answer::Ok,
        ],
    );
    let o = Fake::new(O, &[Answer::Ok]);
    let (r, metrics) = router(&a, &o);
    for _ in 0..3 {
        ask(&r).await.unwrap();
    }
    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert_eq!(circuit(&r, A), CircuitState::Open);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(circuit(&r, A), CircuitState::HalfOpen);
    assert_eq!(ask(&r).await.unwrap(), A, "the probe succeeds");
    assert_eq!(circuit(&r, A), CircuitState::Closed);
    let m = metrics.render().unwrap();
    for to in ["open", "half_open", "closed"] {
        let line = format!(
            "spark_circuit_breaker_transitions_total{{provider=\"anthropic\",to=\"{to}\"}} 1"
        );
        assert!(m.contains(&line), "{line}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_a_doubled_cool_down() {
    let (a, o) = (
        Fake::new(A, &[Answer::Status(503)]),
        Fake::new(O, &[Answer::Ok]),
    );
    let (r, _) = router(&a, &o);
    for _ in 0..3 {
        ask(&r).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        ask(&r).await.unwrap(),
        O,
        "the probe failed; the fallback answered"
    );
    assert_eq!(a.calls(), 4);
    assert_eq!(circuit(&r, A), CircuitState::Open);
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert_eq!(
        circuit(&r, A),
        CircuitState::Open,
        "the second cool-down is 10 s"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(circuit(&r, A), CircuitState::HalfOpen);
}

/// Issue 16, finding 4: a provider that refuses our key is skipped at once for the fallback,
/// counts as a failure, and is reported misconfigured until it answers again.
#[tokio::test(start_paused = true)]
async fn a_refused_key_falls_back_at_once_and_marks_the_provider_misconfigured() {
    for status in [401, 403, 404] {
        let a = Fake::new(
            A,
            &[Answer::Status(status), Answer::Status(status), Answer::Ok],
        );
        let o = Fake::new(O, &[Answer::Ok]);
        let (r, metrics) = router(&a, &o);
        assert_eq!(ask(&r).await.unwrap(), O, "{status}");
        assert_eq!(a.calls(), 1, "not retried on the same provider");
        assert!(r.misconfigured(A));
        assert!(
            metrics
                .render()
                .unwrap()
                .contains("spark_provider_misconfigured{provider=\"anthropic\"} 1")
        );
        assert_eq!(r.breaker(A).unwrap().snapshot().consecutive_failures, 1);
        ask(&r).await.unwrap();
        // The key works again: the flag clears on the first success.
        assert_eq!(ask(&r).await.unwrap(), A);
        assert!(!r.misconfigured(A));
    }
}

/// Issue 16, finding 5: when the first provider used most of the deadline, the fallback's
/// shortened attempt timing out says nothing about the fallback: its breaker does not move.
#[tokio::test(start_paused = true)]
async fn an_attempt_cut_short_by_the_deadline_is_neutral_to_the_breaker() {
    let a = Fake::new(A, &[Answer::Status(500)]);
    let o = Fake::new(O, &[Answer::Slow(Duration::from_secs(60))]);
    let (r, _) = router(&a, &o);
    // 25 s of the 30 s deadline are already gone: the fallback gets 5 s, not 20.
    let deadline = Instant::now() + Duration::from_secs(5);
    let result = r
        .complete(
            &plan(),
            &base(),
            &ticket(),
            deadline,
            &mut Duration::default(),
        )
        .await;
    assert!(matches!(result, Err(RouteError::Deadline)), "{result:?}");
    let snap = r.breaker(O).unwrap().snapshot();
    assert_eq!(
        snap.consecutive_failures, 0,
        "a deadline-cut attempt is neutral"
    );
    assert_eq!(snap.failure_rate, 0.0);
}

#[test]
fn backoff_is_jittered_under_the_ceiling_and_honours_retry_after() {
    let p = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(300),
    };
    for attempt in 0..6 {
        let d = p.backoff(attempt, None);
        let ceiling =
            Duration::from_millis(100 * 2u64.pow(attempt)).min(Duration::from_millis(300));
        assert!(d <= ceiling, "{attempt}: {d:?}");
    }
    assert!(p.backoff(0, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
}

/// Issue 16, finding 6: a streaming probe closes the circuit on its first event instead of holding
/// the only half-open slot for the whole stream.
#[tokio::test(start_paused = true)]
async fn a_stream_probe_is_settled_by_its_first_event() {
    let a = Fake::new(A, &[Answer::Status(500)]);
    let o = Fake::new(O, &[Answer::Ok]);
    let (r, _) = router(&a, &o);
    for _ in 0..3 {
        ask(&r).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(circuit(&r, A), CircuitState::HalfOpen);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (id, _running) = r
        .stream(
            &[(A, "m".into())],
            &base(),
            &ticket(),
            deadline,
            &mut Duration::default(),
        )
        .await
        .unwrap();
    assert_eq!(id, A);
    assert_eq!(
        circuit(&r, A),
        CircuitState::Closed,
        "closed while the probe's stream is still running"
    );
}

#[tokio::test(start_paused = true)]
async fn a_provider_at_its_rate_gets_at_most_that_many_calls_a_minute_and_the_rest_fall_back() {
    let a = Fake::new(A, &[Answer::Ok]);
    let o = Fake::new(O, &[Answer::Ok]);
    let (r, metrics) = router(&a, &o);
    let r = Arc::new(shaped(r, "anthropic=60rpm", &metrics));
    // 300 requests a minute for two minutes.
    let mut requests = Vec::new();
    for _ in 0..600 {
        let r = Arc::clone(&r);
        requests.push(crate::telemetry::spawn_named("offered", async move {
            ask(&r).await
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for req in requests {
        req.await.unwrap().unwrap();
    }
    let times = a.times.lock().unwrap().clone();
    for (i, start) in times.iter().enumerate() {
        let in_minute = times[i..]
            .iter()
            .take_while(|t| **t < *start + Duration::from_secs(60))
            .count();
        assert!(
            in_minute <= 60,
            "{in_minute} calls to A in the minute from call {i}"
        );
    }
    assert!(a.calls() >= 115, "A's capacity is used: {}", a.calls());
    assert_eq!(
        a.calls() + o.calls(),
        600,
        "every request was answered once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_busy_lane_waits_the_queue_timeout_then_falls_back_then_answers_busy() {
    let a = Fake::new(A, &[Answer::Ok]);
    let o = Fake::new(O, &[Answer::Ok]);
    let (r, metrics) = router(&a, &o);
    let r = shaped(r, "anthropic=1rpm;openai=1rpm", &metrics);
    let t0 = Instant::now();
    assert_eq!(ask(&r).await.unwrap(), A);
    assert_eq!(Instant::now(), t0, "room: no wait");
    // A is spent for a minute: this one waits 5 s in A's line, then O has room.
    assert_eq!(ask(&r).await.unwrap(), O);
    assert_eq!(Instant::now(), t0 + Duration::from_secs(5));
    // Both spent: 5 s more in A's line, O has no room at once: busy, retry when A refills.
    match ask(&r).await {
        Err(RouteError::Busy { retry_after }) => {
            assert_eq!(retry_after, Duration::from_secs(50));
        }
        other => panic!("expected busy, got {other:?}"),
    }
    assert_eq!(
        (a.calls(), o.calls()),
        (1, 1),
        "no call went out to collect a 429"
    );
}
