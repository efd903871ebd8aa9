//! The lane's promises on tokio's paused clock: the rate holds in every minute, callers get fair
//! turns, interactive overtakes batch, the line is bounded and a request that goes away leaves it.

use super::*;
use crate::telemetry::spawn_named;

fn lane(capacity: Capacity, max_queue: usize) -> Arc<Lane> {
    let rule = Rule {
        provider: ProviderId::OpenAi,
        model: None,
        capacity,
    };
    Arc::new(Lane::new(
        &rule,
        max_queue,
        Arc::new(Metrics::new().unwrap()),
        None,
    ))
}

fn ticket(caller: &str, class: Class) -> Ticket {
    Ticket {
        caller: caller.into(),
        class,
    }
}

const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Offers `per_minute` calls a minute for `minutes`, each held for `hold`; returns when each
/// admitted call was admitted and how many were refused.
async fn offer(
    lane: &Arc<Lane>,
    caller: &str,
    per_minute: u32,
    minutes: u32,
    hold: Duration,
) -> (Vec<Instant>, usize) {
    let gap = Duration::from_secs(60) / per_minute;
    let mut calls = Vec::new();
    for _ in 0..per_minute * minutes {
        let (lane, t) = (Arc::clone(lane), ticket(caller, Class::Interactive));
        calls.push(spawn_named("offered-call", async move {
            let r = lane.acquire(&t, 100, Instant::now() + QUEUE_TIMEOUT).await;
            let at = Instant::now();
            if let Ok(grant) = &r {
                tokio::time::sleep(hold).await;
                grant.settle(100);
            }
            r.map(|_| at)
        }));
        tokio::time::sleep(gap).await;
    }
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(at) => admitted.push(at),
            Err(_) => refused += 1,
        }
    }
    (admitted, refused)
}

#[tokio::test(start_paused = true)]
async fn sixty_rpm_under_three_hundred_offered_is_at_most_sixty_in_any_minute() {
    let lane = lane(
        Capacity {
            rpm: Some(60),
            ..Capacity::default()
        },
        1_000,
    );
    let (mut admitted, refused) = offer(&lane, "busy", 300, 3, Duration::from_millis(500)).await;
    admitted.sort();
    for (i, start) in admitted.iter().enumerate() {
        let in_minute = admitted[i..]
            .iter()
            .take_while(|t| **t < *start + Duration::from_secs(60))
            .count();
        assert!(in_minute <= 60, "{in_minute} calls in the minute from {i}");
    }
    // The capacity is used (about one a second for three minutes), the rest waited in vain.
    assert!(admitted.len() >= 178, "{}", admitted.len());
    assert_eq!(admitted.len() + refused, 900);
    assert_eq!(lane.snapshot().queued_interactive, 0, "nobody left in line");
}

#[tokio::test(start_paused = true)]
async fn a_light_caller_is_served_within_the_timeout_beside_a_heavy_one() {
    // One call a second; a fair share is half of that each.
    let lane = lane(
        Capacity {
            rpm: Some(60),
            ..Capacity::default()
        },
        1_000,
    );
    let heavy = {
        let lane = Arc::clone(&lane);
        spawn_named("heavy", async move {
            offer(&lane, "heavy", 300, 2, Duration::ZERO).await
        })
    };
    let (light_ok, light_refused) = offer(&lane, "light", 30, 2, Duration::ZERO).await;
    let (heavy_ok, heavy_refused) = heavy.await.unwrap();
    assert_eq!(light_refused, 0, "every light request was served");
    assert_eq!(light_ok.len(), 60);
    assert!(
        heavy_refused > 400,
        "the heavy caller absorbs the shortage: {heavy_refused}"
    );
    assert!(heavy_ok.len() >= 55, "{}", heavy_ok.len());
}

#[tokio::test(start_paused = true)]
async fn interactive_requests_overtake_queued_batch_requests() {
    let lane = lane(
        Capacity {
            inflight: Some(1),
            ..Capacity::default()
        },
        100,
    );
    let first = lane
        .acquire(&ticket("bot", Class::Batch), 100, Instant::now())
        .await
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiting = Vec::new();
    for (name, class) in [
        ("bot-1", Class::Batch),
        ("bot-2", Class::Batch),
        ("alice", Class::Interactive),
    ] {
        let (lane, order) = (Arc::clone(&lane), Arc::clone(&order));
        waiting.push(spawn_named("waiter", async move {
            let t = ticket(name, class);
            let grant = lane
                .acquire(&t, 100, Instant::now() + QUEUE_TIMEOUT)
                .await
                .unwrap();
            order.lock().unwrap().push(name);
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(grant);
        }));
        // Queued in this order.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(lane.snapshot().queued_batch, 2);
    drop(first);
    for w in waiting {
        w.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["alice", "bot-1", "bot-2"]);
}

#[tokio::test(start_paused = true)]
async fn a_full_line_refuses_at_once_and_a_request_that_goes_away_leaves_it() {
    let lane = lane(
        Capacity {
            inflight: Some(1),
            ..Capacity::default()
        },
        2,
    );
    let _held = lane
        .acquire(&ticket("a", Class::Interactive), 100, Instant::now())
        .await
        .unwrap();
    let until = Instant::now() + QUEUE_TIMEOUT;
    let (b, c) = (
        ticket("b", Class::Interactive),
        ticket("c", Class::Interactive),
    );
    let mut w1 = Box::pin(lane.acquire(&b, 100, until));
    let mut w2 = Box::pin(lane.acquire(&c, 100, until));
    // Polled once each: both are in line.
    assert!(futures_util::poll!(&mut w1).is_pending());
    assert!(futures_util::poll!(&mut w2).is_pending());
    let started = Instant::now();
    let busy = lane
        .acquire(&ticket("d", Class::Interactive), 100, until)
        .await
        .unwrap_err();
    assert!(matches!(busy, Busy::QueueFull { .. }));
    assert_eq!(Instant::now(), started, "refused without waiting");
    // Neither fits a zero wait.
    assert!(matches!(
        lane.acquire(&ticket("d", Class::Interactive), 100, Instant::now())
            .await
            .unwrap_err(),
        Busy::Timeout { .. }
    ));
    drop(w1);
    assert_eq!(lane.snapshot().queued_interactive, 1);
    // The other one times out at the limit, and leaves too.
    assert!(matches!(w2.await.unwrap_err(), Busy::Timeout { .. }));
    assert_eq!(Instant::now(), until);
    assert_eq!(lane.snapshot().queued_interactive, 0);
}

#[tokio::test(start_paused = true)]
async fn token_budgets_are_charged_by_estimate_and_settled_by_usage() {
    // 6,000 tokens a minute: 100 a second.
    let lane = lane(
        Capacity {
            tpm: Some(6_000),
            ..Capacity::default()
        },
        10,
    );
    let big = ticket("a", Class::Interactive);
    let grant = lane.acquire(&big, 1_000, Instant::now()).await.unwrap();
    // Ten seconds of tokens charged: a second call must wait.
    assert!(lane.acquire(&big, 1_000, Instant::now()).await.is_err());
    // It used 100: refunded, the next one fits after one second instead of ten.
    grant.settle(100);
    let started = Instant::now();
    lane.acquire(&big, 1_000, started + QUEUE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(Instant::now() - started, Duration::from_secs(1));
}
