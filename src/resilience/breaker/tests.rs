//! The breaker facade: trips on failures in a row and on the failure rate, cool-downs,
//! half-open probes, resets and stale probes.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn cfg() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        failure_rate: 0.5,
        min_calls: 4,
        window: Duration::from_secs(10),
        open_base: Duration::from_secs(5),
        open_max: Duration::from_secs(30),
        half_open_probes: 1,
    }
}

fn fail(b: &Arc<Breaker>, n: usize) {
    for _ in 0..n {
        b.try_acquire().unwrap().failure();
    }
}

#[tokio::test(start_paused = true)]
async fn trips_after_consecutive_failures_and_refuses_with_the_time_left() {
    let b = Arc::new(Breaker::new(cfg(), None));
    fail(&b, 2);
    assert_eq!(b.snapshot().state, CircuitState::Closed);
    fail(&b, 1);
    assert_eq!(b.snapshot().state, CircuitState::Open);
    tokio::time::advance(Duration::from_secs(2)).await;
    let r = b.try_acquire().err().unwrap();
    assert_eq!(r.retry_after, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn trips_on_failure_rate_once_the_minimum_calls_are_in_the_window() {
    let b = Arc::new(Breaker::new(cfg(), None));
    // fail, ok, fail, ok: never 3 in a row, but 2 of 4 = 50%.
    for failed in [true, false, true] {
        let p = b.try_acquire().unwrap();
        if failed { p.failure() } else { p.success() }
    }
    assert_eq!(b.snapshot().state, CircuitState::Closed);
    b.try_acquire().unwrap().success();
    assert_eq!(
        b.snapshot().state,
        CircuitState::Closed,
        "2 of 4 with the last a success"
    );
    b.try_acquire().unwrap().failure();
    assert_eq!(b.snapshot().state, CircuitState::Open, "3 of 5 failed");
}

#[tokio::test(start_paused = true)]
async fn old_calls_leave_the_window() {
    let b = Arc::new(Breaker::new(cfg(), None));
    for _ in 0..3 {
        b.try_acquire().unwrap().success();
    }
    b.try_acquire().unwrap().failure();
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(b.snapshot().failure_rate, 0.0);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_the_configured_probes_and_success_closes() {
    let b = Arc::new(Breaker::new(
        BreakerConfig {
            half_open_probes: 2,
            ..cfg()
        },
        None,
    ));
    fail(&b, 3);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        b.snapshot().state,
        CircuitState::HalfOpen,
        "visible without a call"
    );
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert!(
        b.try_acquire().is_err(),
        "a third caller is refused while two probes run"
    );
    p1.success();
    assert_eq!(b.snapshot().state, CircuitState::Closed);
    p2.success();
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_a_longer_cool_down_up_to_the_cap() {
    let b = Arc::new(Breaker::new(cfg(), None));
    fail(&b, 3);
    let mut expected = [5, 10, 20, 30, 30].into_iter();
    let first = expected.next().unwrap();
    assert_eq!(b.snapshot().open_for, Some(Duration::from_secs(first)));
    for secs in expected {
        tokio::time::advance(b.available_in()).await;
        b.try_acquire().unwrap().failure();
        assert_eq!(b.snapshot().open_for, Some(Duration::from_secs(secs)));
    }
    // A success resets the growth.
    tokio::time::advance(b.available_in()).await;
    b.try_acquire().unwrap().success();
    fail(&b, 3);
    assert_eq!(b.snapshot().open_for, Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn dropped_and_neutral_permits_free_the_probe_slot_without_deciding() {
    let b = Arc::new(Breaker::new(cfg(), None));
    fail(&b, 3);
    tokio::time::advance(Duration::from_secs(5)).await;
    drop(b.try_acquire().unwrap());
    b.try_acquire().unwrap().neutral();
    assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn transitions_are_reported_once_each_and_reset_closes() {
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    let b = Arc::new(Breaker::new(
        cfg(),
        Some(Arc::new(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
        })),
    ));
    fail(&b, 3);
    assert!(b.try_acquire().is_err());
    assert_eq!(
        b.snapshot().state,
        CircuitState::Open,
        "reading again is not a new transition"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    b.reset();
    assert_eq!(b.snapshot().state, CircuitState::Closed);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_probe_from_an_earlier_half_open_period_cannot_decide_a_later_one() {
    let b = Arc::new(Breaker::new(
        BreakerConfig {
            consecutive_failures: 1,
            half_open_probes: 2,
            open_base: Duration::from_secs(5),
            ..BreakerConfig::default()
        },
        None,
    ));
    b.try_acquire().unwrap().failure();
    tokio::time::advance(Duration::from_secs(5)).await;
    let stale = b.try_acquire().unwrap();
    let failing = b.try_acquire().unwrap();
    assert!(stale.is_probe() && failing.is_probe());
    failing.failure();
    assert_eq!(b.snapshot().state, CircuitState::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
    let current = b.try_acquire().unwrap();
    // The probe of the first period answers late: it must not close the second one.
    stale.success();
    assert_eq!(b.snapshot().state, CircuitState::HalfOpen);
    // Nor free a slot of it: one probe of this period is out, one slot is left.
    let second = b.try_acquire().unwrap();
    assert!(
        b.try_acquire().is_err(),
        "both slots of this period are taken"
    );
    drop(second);
    current.success();
    assert_eq!(b.snapshot().state, CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_reset_makes_outstanding_probes_stale() {
    let b = Arc::new(Breaker::new(
        BreakerConfig {
            consecutive_failures: 1,
            ..BreakerConfig::default()
        },
        None,
    ));
    b.try_acquire().unwrap().failure();
    tokio::time::advance(Duration::from_secs(5)).await;
    let probe = b.try_acquire().unwrap();
    b.reset();
    probe.failure();
    assert_eq!(
        b.snapshot().state,
        CircuitState::Closed,
        "a stale probe cannot trip"
    );
}
