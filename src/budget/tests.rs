use super::*;
use crate::store::usage::UsageRow;
use prometheus::Opts;

fn rejections() -> IntCounterVec {
    IntCounterVec::new(Opts::new("r", "r"), &["scope"]).unwrap()
}

fn key_limit(limit_nusd: i64, period: Period) -> Limit {
    Limit {
        scope: Scope::Key,
        id: "k1".into(),
        budget: Budget { limit_nusd, period },
    }
}

#[tokio::test]
async fn concurrent_requests_overshoot_by_at_most_one_worst_case() {
    let r = rejections();
    let budgets = Budgets::new(None, None, HashMap::new(), r.clone());
    let limit = [key_limit(1_000, Period::Total)];
    // 50 requests, each able to cost 100: ten fit.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..50 {
        match budgets.reserve(&limit, 100).await {
            Ok(res) => held.push(res),
            Err(BudgetError::Exceeded(e)) => {
                assert_eq!(e.limit_nusd, 1_000);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(held.len(), 10);
    assert_eq!(refused, 40);
    assert_eq!(r.with_label_values(&["key"]).get(), 40);
    // Each costs its worst case: the total is exactly the limit, never more than one worst
    // case above it.
    for res in held {
        budgets.settle(res, 100);
    }
    let after = budgets.reserve(&limit, 100).await.unwrap_err();
    assert!(matches!(
        after,
        BudgetError::Exceeded(Exceeded {
            spent_nusd: 1_000,
            resets_at: None,
            ..
        })
    ));
    assert_eq!(budgets.remaining(&limit).await, Some(0));
}

#[tokio::test]
async fn a_cheaper_answer_frees_what_it_did_not_use() {
    let budgets = Budgets::new(None, None, HashMap::new(), rejections());
    let limit = [key_limit(1_000, Period::Day)];
    let a = budgets.reserve(&limit, 900).await.unwrap();
    let b = budgets.reserve(&limit, 900).await.unwrap();
    // 1,800 held of 1,000: nothing more may start.
    assert!(budgets.reserve(&limit, 1).await.is_err());
    budgets.settle(a, 10);
    budgets.settle(b, 10);
    assert_eq!(budgets.remaining(&limit).await, Some(980));
    // Admission looks at what is spent and held, not at the worst case of the newcomer.
    match budgets.reserve(&limit, 10_000).await {
        Ok(r) => budgets.settle(r, 0),
        Err(e) => panic!("{e}"),
    }
}

fn row(id: &str, key: Option<&str>, user: &str, cost: i64) -> UsageRow {
    UsageRow {
        id: id.into(),
        time: now_ms(),
        request_id: id.into(),
        key_id: key.map(str::to_owned),
        user_id: user.into(),
        route: "generate",
        provider: "openai".into(),
        model: "gpt-4o".into(),
        engine: "unity".into(),
        input_tokens: 1,
        output_tokens: 1,
        cached: false,
        cost_nusd: cost,
        status: "ok".into(),
        latency_ms: 1,
    }
}

#[tokio::test]
async fn spend_is_restored_from_the_ledger_and_a_down_ledger_refuses() {
    let dir = std::env::temp_dir().join(format!("spark-budget-{}", uuid::Uuid::new_v4().simple()));
    let store = Store::open(&crate::store::default_url(&dir)).unwrap();
    store
        .insert_usage(&[
            row("a", Some("k1"), "alice", 600),
            row("b", Some("k2"), "alice", 300),
        ])
        .await
        .unwrap();
    let users = parse_user_budgets("alice=0.000001/month").unwrap();
    let budgets = Budgets::new(Some(store), None, users, rejections());
    let limits = budgets.limits(
        "alice",
        Some((
            "k1",
            Some(Budget {
                limit_nusd: 1_000,
                period: Period::Month,
            }),
        )),
    );
    assert_eq!(limits.len(), 2);
    // The header never reads the ledger: before this replica used the window it says nothing.
    assert_eq!(budgets.remaining(&limits).await, None);
    // The key spent 600 of 1,000; the user 900 of 1,000.
    let r = budgets.reserve(&limits, 50).await.unwrap();
    assert_eq!(budgets.remaining(&limits).await, Some(100));
    budgets.settle(r, 100);
    match budgets.reserve(&limits, 50).await {
        Err(BudgetError::Exceeded(e)) => {
            assert_eq!(e.scope, Scope::User);
            assert_eq!(e.spent_nusd, 1_000);
        }
        other => panic!("{other:?}"),
    }

    let down = Store::open("postgres://postgres@127.0.0.1:1/none").unwrap();
    let budgets = Budgets::new(Some(down), None, HashMap::new(), rejections());
    assert!(matches!(
        budgets.reserve(&[key_limit(1_000, Period::Month)], 1).await,
        Err(BudgetError::Unavailable(_))
    ));
    // No limit, no database needed.
    assert!(budgets.reserve(&[], 1).await.is_ok());
}

#[test]
fn user_budgets_parse_and_bad_ones_are_refused() {
    let b = parse_user_budgets("alice=10/month; bob=0.5/day").unwrap();
    assert_eq!(b["alice"].limit_nusd, 10_000_000_000);
    assert_eq!(b["bob"].period, Period::Day);
    for bad in [
        "alice",
        "alice=10",
        "alice=-1/day",
        "alice=1/week",
        "alice=x/day",
    ] {
        assert!(parse_user_budgets(bad).is_err(), "{bad}");
    }
}
