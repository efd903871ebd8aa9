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
        budget: Budget {
            limit_nusd,
            limit_tokens: None,
            period,
        },
    }
}

fn money(nusd: i64) -> Amount {
    Amount { nusd, tokens: 0 }
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
        match budgets.reserve(&limit, money(100)).await {
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
        budgets.settle(res, money(100));
    }
    let after = budgets.reserve(&limit, money(100)).await.unwrap_err();
    assert!(matches!(
        after,
        BudgetError::Exceeded(Exceeded {
            spent_nusd: 1_000,
            resets_at: None,
            ..
        })
    ));
    assert_eq!(budgets.remaining(&limit).await.map(|r| r.nusd), Some(0));
}

#[tokio::test]
async fn a_cheaper_answer_frees_what_it_did_not_use() {
    let budgets = Budgets::new(None, None, HashMap::new(), rejections());
    let limit = [key_limit(1_000, Period::Day)];
    let a = budgets.reserve(&limit, money(900)).await.unwrap();
    let b = budgets.reserve(&limit, money(900)).await.unwrap();
    // 1,800 held of 1,000: nothing more may start.
    assert!(budgets.reserve(&limit, money(1)).await.is_err());
    budgets.settle(a, money(10));
    budgets.settle(b, money(10));
    assert_eq!(budgets.remaining(&limit).await.map(|r| r.nusd), Some(980));
    // Admission looks at what is spent and held, not at the worst case of the newcomer.
    match budgets.reserve(&limit, money(10_000)).await {
        Ok(r) => budgets.settle(r, money(0)),
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
                limit_tokens: None,
                period: Period::Month,
            }),
        )),
        None,
    );
    assert_eq!(limits.len(), 2);
    // The header never reads the ledger: before this replica used the window it says nothing.
    assert_eq!(budgets.remaining(&limits).await.map(|r| r.nusd), None);
    // The key spent 600 of 1,000; the user 900 of 1,000.
    let r = budgets.reserve(&limits, money(50)).await.unwrap();
    assert_eq!(budgets.remaining(&limits).await.map(|r| r.nusd), Some(100));
    budgets.settle(r, money(100));
    match budgets.reserve(&limits, money(50)).await {
        Err(BudgetError::Exceeded(e)) => {
            assert_eq!(e.scope, Scope::User);
            assert_eq!(e.spent_nusd, 1_000);
        }
        other => panic!("{other:?}"),
    }

    let down = Store::open("postgres://postgres@127.0.0.1:1/none").unwrap();
    let budgets = Budgets::new(Some(down), None, HashMap::new(), rejections());
    assert!(matches!(
        budgets
            .reserve(&[key_limit(1_000, Period::Month)], money(1))
            .await,
        Err(BudgetError::Unavailable(_))
    ));
    // No limit, no database needed.
    assert!(budgets.reserve(&[], money(1)).await.is_ok());
}

#[test]
fn user_budgets_parse_and_bad_ones_are_refused() {
    let b = parse_user_budgets("alice=10/month; bob=0.5/day,tokens=200000").unwrap();
    assert_eq!(b["alice"].limit_nusd, 10_000_000_000);
    assert_eq!(b["alice"].limit_tokens, None);
    assert_eq!(b["bob"].period, Period::Day);
    assert_eq!(b["bob"].limit_tokens, Some(200_000));
    for bad in [
        "alice",
        "alice=1/day,tokens=0",
        "alice=1/day,tokens=x",
        "alice=1/day,200",
        "alice=10",
        "alice=-1/day",
        "alice=1/week",
        "alice=x/day",
    ] {
        assert!(parse_user_budgets(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_token_limit_refuses_on_tokens_while_money_is_left() {
    let budgets = Budgets::new(None, None, HashMap::new(), rejections());
    let limit = [Limit {
        scope: Scope::Key,
        id: "k1".into(),
        budget: Budget {
            limit_nusd: 1_000_000,
            limit_tokens: Some(1_000),
            period: Period::Day,
        },
    }];
    let worst = Amount {
        nusd: 10,
        tokens: 400,
    };
    // Two worst cases of 400 tokens are held (800 < 1,000), the third is admitted too
    // (admission looks at what is held, 800), a fourth is refused by tokens alone.
    let a = budgets.reserve(&limit, worst).await.unwrap();
    let b = budgets.reserve(&limit, worst).await.unwrap();
    let c = budgets.reserve(&limit, worst).await.unwrap();
    match budgets.reserve(&limit, worst).await {
        Err(BudgetError::Exceeded(e)) => {
            assert!(e.by_tokens);
            assert_eq!(e.limit_tokens, Some(1_000));
            assert_eq!(e.spent_tokens, 0);
            assert_eq!(e.spent_nusd, 0);
        }
        other => panic!("{other:?}"),
    }
    // Each used 300 tokens: 900 spent, 100 left, and money nearly untouched.
    for r in [a, b, c] {
        budgets.settle(
            r,
            Amount {
                nusd: 5,
                tokens: 300,
            },
        );
    }
    assert_eq!(
        budgets.remaining(&limit).await,
        Some(Remaining {
            nusd: 999_985,
            tokens: Some(100),
        })
    );
    let d = budgets.reserve(&limit, worst).await.unwrap();
    budgets.settle(
        d,
        Amount {
            nusd: 1,
            tokens: 200,
        },
    );
    match budgets.reserve(&limit, worst).await {
        Err(BudgetError::Exceeded(e)) => {
            assert!(e.by_tokens);
            assert_eq!(e.spent_tokens, 1_100);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tokens_are_restored_from_the_ledger() {
    let dir = std::env::temp_dir().join(format!("spark-budget-{}", uuid::Uuid::new_v4().simple()));
    let store = Store::open(&crate::store::default_url(&dir)).unwrap();
    // Each row is 1 input and 1 output token.
    store
        .insert_usage(&[
            row("a", Some("k1"), "alice", 1),
            row("b", Some("k1"), "alice", 1),
        ])
        .await
        .unwrap();
    let budgets = Budgets::new(Some(store), None, HashMap::new(), rejections());
    let limit = [Limit {
        scope: Scope::Key,
        id: "k1".into(),
        budget: Budget {
            limit_nusd: 1_000,
            limit_tokens: Some(5),
            period: Period::Total,
        },
    }];
    let r = budgets
        .reserve(&limit, Amount { nusd: 1, tokens: 1 })
        .await
        .unwrap();
    budgets.settle(r, Amount::default());
    assert_eq!(
        budgets.remaining(&limit).await,
        Some(Remaining {
            nusd: 998,
            tokens: Some(1),
        })
    );
}

#[test]
fn a_group_tier_budget_applies_unless_the_user_has_its_own() {
    let users = parse_user_budgets("alice=1/day").unwrap();
    let budgets = Budgets::new(None, None, users, rejections());
    let tier = Budget {
        limit_nusd: 20_000_000_000,
        limit_tokens: None,
        period: Period::Month,
    };
    let limits = budgets.limits("bob", None, Some(tier));
    assert_eq!(limits.len(), 1);
    assert_eq!(limits[0].budget, tier);
    assert_eq!(limits[0].scope, Scope::User);
    // SPARK_USER_BUDGETS names alice: her own budget, not the tier's.
    let limits = budgets.limits("alice", None, Some(tier));
    assert_eq!(limits[0].budget.period, Period::Day);
    assert!(budgets.limits("carol", None, None).is_empty());
}
