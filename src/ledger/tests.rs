use super::*;
use prometheus::Opts;

fn metrics() -> LedgerMetrics {
    LedgerMetrics {
        cost: CounterVec::new(Opts::new("c", "c"), &["provider", "model"]).unwrap(),
        unpriced: IntCounter::new("u", "u").unwrap(),
        queue_depth: IntGauge::new("q", "q").unwrap(),
        dropped: IntCounter::new("d", "d").unwrap(),
        db_up: IntGauge::new("up", "up").unwrap(),
    }
}

fn usage(model: &str, cached: bool) -> Usage<'_> {
    Usage {
        request_id: "req-1",
        key_id: None,
        user_id: "alice",
        route: "generate",
        provider: "anthropic",
        model,
        engine: "unity",
        input_tokens: 1_000,
        output_tokens: 2_000,
        cached,
        status: "ok",
        latency_ms: 12,
    }
}

fn sqlite() -> Store {
    let dir = std::env::temp_dir().join(format!("spark-ledger-{}", uuid::Uuid::new_v4().simple()));
    Store::open(&crate::store::default_url(&dir)).unwrap()
}

#[tokio::test]
async fn rows_are_priced_queued_and_all_written_by_close() {
    let store = sqlite();
    let m = metrics();
    let ledger = Ledger::start(Some(store.clone()), PriceTable::default(), 100, m.clone());
    let cost = ledger.record(&usage("claude-sonnet-4-5-20250929", false));
    assert_eq!(cost, 33_000_000);
    assert_eq!(ledger.record(&usage("claude-sonnet-4-5", true)), 0);
    assert_eq!(ledger.record(&usage("house-model", false)), 0);
    assert_eq!(m.unpriced.get(), 1);
    let spent = m
        .cost
        .with_label_values(&["anthropic", "claude-sonnet-4-5"])
        .get();
    assert!((spent - 0.033).abs() < 1e-12);
    ledger.audit(Entry::new("master", "cache.purge"));
    assert_eq!(ledger.close(Duration::from_secs(10)).await, 0);
    assert_eq!(store.usage_count().await.unwrap(), 3);
    assert_eq!(store.verify_audit().await.unwrap(), Ok(1));
    assert_eq!(ledger.status().queue_depth, 0);
    assert!(!ledger.degraded());
}

#[tokio::test]
async fn a_down_database_holds_rows_up_to_the_bound_and_counts_the_rest() {
    // Nothing listens on port 1: every attempt fails at once.
    let store = Store::open("postgres://postgres@127.0.0.1:1/none").unwrap();
    let m = metrics();
    let ledger = Ledger::start(Some(store), PriceTable::default(), 5, m.clone());
    for _ in 0..8 {
        ledger.record(&usage("gpt-4o", false));
    }
    let status = ledger.status();
    assert_eq!(status.queue_depth, 5);
    assert_eq!(status.dropped, 3);
    assert_eq!(m.dropped.get(), 3);
    // The writer notices the outage on its first attempt.
    for _ in 0..200 {
        if ledger.degraded() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ledger.degraded());
    assert_eq!(m.db_up.get(), 0);
    // Closing cannot write them: it says how many are lost instead of waiting for ever.
    assert_eq!(ledger.close(Duration::from_millis(300)).await, 5);
}

#[tokio::test]
async fn without_a_database_costs_are_counted_and_nothing_is_queued() {
    let m = metrics();
    let ledger = Ledger::start(None, PriceTable::default(), 5, m.clone());
    for _ in 0..10 {
        ledger.record(&usage("gpt-4o", false));
    }
    assert_eq!(ledger.status().backend, "off");
    assert_eq!(ledger.status().queue_depth, 0);
    assert_eq!(m.dropped.get(), 0);
    assert!(m.cost.with_label_values(&["anthropic", "gpt-4o"]).get() > 0.0);
    assert!(!ledger.degraded());
}

#[tokio::test]
async fn failed_authentications_become_one_entry_per_address_and_minute() {
    let store = sqlite();
    let ledger = Ledger::start(Some(store.clone()), PriceTable::default(), 100, metrics());
    let a: IpAddr = "10.0.0.1".parse().unwrap();
    let b: IpAddr = "10.0.0.2".parse().unwrap();
    for _ in 0..7 {
        ledger.auth_failed(a);
    }
    ledger.auth_failed(b);
    ledger.close(Duration::from_secs(10)).await;
    let (rows, _) = store
        .list_audit(10, None, Some("auth.failures"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let for_a = rows
        .iter()
        .find(|r| r.client_address.as_deref() == Some("10.0.0.1"))
        .unwrap();
    assert!(for_a.details.contains("\"count\":7"));
}

#[test]
fn the_address_map_is_bounded() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ledger = Ledger::start(Some(sqlite()), PriceTable::default(), 10, metrics());
        for i in 0..(MAX_FAILING_ADDRESSES as u32 + 500) {
            ledger.auth_failed(IpAddr::from(i.to_be_bytes()));
        }
        let f = ledger.0.failures.lock().unwrap();
        assert_eq!(f.len(), MAX_FAILING_ADDRESSES + 1);
        assert_eq!(f.get(&None), Some(&500));
    });
}
