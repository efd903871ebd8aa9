//! The store on SQLite and PostgreSQL: the same bodies run against each backend.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

#[path = "support/db.rs"]
mod db;

use spark_gateway::store::audit::Entry;
use spark_gateway::store::keys::{Budget, KeyPatch, KeyRecord, Period};
use spark_gateway::store::usage::{GroupBy, UsageRow};
use spark_gateway::store::{Store, StoreError};

fn key(id: &str, user: &str) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        digest: [7; 32],
        prefix: format!("sk-spark-{id}"),
        user_id: user.into(),
        name: "ci".into(),
        budget: Some(Budget {
            limit_tokens: Some(1_000),
            limit_nusd: 50_000_000,
            period: Period::Month,
        }),
        rate_limit: None,
        models: Some(vec!["claude-haiku-4-5".into()]),
        expires_at: None,
        created_at: 1_000,
        updated_at: 1_000,
        revoked_at: None,
    }
}

fn usage(id: &str, user: &str, model: &str, time: i64, cost: i64) -> UsageRow {
    UsageRow {
        id: id.into(),
        time,
        request_id: format!("req-{id}"),
        key_id: None,
        user_id: user.into(),
        route: "generate",
        provider: "anthropic".into(),
        model: model.into(),
        engine: "unity".into(),
        input_tokens: 10,
        output_tokens: 20,
        cached: false,
        cost_nusd: cost,
        status: "ok".into(),
        latency_ms: 3,
    }
}

#[tokio::test]
async fn keys_are_created_listed_changed_and_revoked_with_an_audit_row_each() {
    for (backend, url) in db::both().await {
        let store = Store::open(&url).unwrap();
        store.migrate().await.unwrap();
        // Migrating again is a no-op, as a second replica's start-up is.
        Store::open(&url).unwrap().migrate().await.unwrap();
        for (id, user) in [("k1", "alice"), ("k2", "bob"), ("k3", "alice")] {
            store
                .insert_key(
                    &key(id, user),
                    Entry::new("master", "key.create").target(id),
                )
                .await
                .unwrap();
        }
        let (page, more) = store.list_keys(2, None).await.unwrap();
        assert_eq!(page.len(), 2, "{backend}");
        assert!(more, "{backend}");
        let (rest, more) = store.list_keys(2, Some(&page[1].id)).await.unwrap();
        assert_eq!(rest.len(), 1, "{backend}");
        assert!(!more, "{backend}");
        assert_eq!(store.get_key("k1").await.unwrap(), key("k1", "alice"));

        let patch = KeyPatch {
            name: Some("renamed".into()),
            models: Some(None),
            ..KeyPatch::default()
        };
        let changed = store
            .update_key(
                "k1",
                &patch,
                Entry::new("master", "key.update").target("k1"),
            )
            .await
            .unwrap();
        assert_eq!(changed.name, "renamed");
        assert_eq!(changed.models, None);
        assert!(changed.updated_at > 1_000);
        let since = store.keys_changed_since(changed.updated_at).await.unwrap();
        assert_eq!(since.len(), 1, "{backend}");

        store
            .revoke_key("k2", Entry::new("master", "key.revoke").target("k2"))
            .await
            .unwrap();
        assert!(store.get_key("k2").await.unwrap().revoked_at.is_some());
        assert!(matches!(
            store
                .revoke_key("k2", Entry::new("master", "key.revoke"))
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store
                .update_key("k2", &patch, Entry::new("master", "key.update"))
                .await,
            Err(StoreError::NotFound)
        ));
        // A failed change writes no audit row: five changes, five rows.
        let (audit, _) = store.list_audit(100, None, None).await.unwrap();
        let actions: Vec<_> = audit.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "key.revoke",
                "key.update",
                "key.create",
                "key.create",
                "key.create"
            ],
            "{backend}"
        );
        assert_eq!(store.verify_audit().await.unwrap(), Ok(5), "{backend}");
        let (creates, _) = store
            .list_audit(100, None, Some("key.create"))
            .await
            .unwrap();
        assert_eq!(creates.len(), 3, "{backend}");
        store.close().await;
    }
}

#[tokio::test]
async fn concurrent_appends_from_two_pools_keep_one_chain() {
    for (backend, url) in db::both().await {
        let a = Store::open(&url).unwrap();
        let b = Store::open(&url).unwrap();
        a.migrate().await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(spark_gateway::telemetry::spawn_named(
                "append",
                async move {
                    s.append_audit(Entry::new("system", "cache.purge").target(format!("n{i}")))
                        .await
                        .unwrap();
                },
            ));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(a.verify_audit().await.unwrap(), Ok(40), "{backend}");
    }
}

#[tokio::test]
async fn usage_rows_are_summed_per_group_and_never_counted_twice() {
    for (backend, url) in db::both().await {
        let store = Store::open(&url).unwrap();
        let day = 86_400_000;
        let rows = vec![
            usage("a", "alice", "m1", 10 * day + 5, 1_000),
            usage("b", "alice", "m2", 10 * day + 6, 2_000),
            usage("c", "bob", "m1", 11 * day, 4_000),
            usage("d", "bob", "m1", 12 * day, 8_000),
        ];
        store.insert_usage(&rows).await.unwrap();
        // The same batch again (a retry after a lost commit answer) adds nothing.
        store.insert_usage(&rows).await.unwrap();
        assert_eq!(store.usage_count().await.unwrap(), 4, "{backend}");
        let by_model = store
            .usage_sums(0, 12 * day, GroupBy::Model, None)
            .await
            .unwrap();
        assert_eq!(by_model.len(), 2, "{backend}");
        assert_eq!(by_model[0].group, "m1");
        assert_eq!(by_model[0].requests, 2);
        assert_eq!(by_model[0].cost_nusd, 5_000);
        assert_eq!(by_model[0].input_tokens, 20);
        let by_day = store
            .usage_sums(0, i64::MAX, GroupBy::Day, Some("bob"))
            .await
            .unwrap();
        let days: Vec<_> = by_day.iter().map(|s| s.group.as_str()).collect();
        assert_eq!(days, ["11", "12"], "{backend}");
        // A large batch goes in as several statements.
        let many: Vec<_> = (0..2_500)
            .map(|i| usage(&format!("m{i}"), "carol", "m1", 13 * day, 1))
            .collect();
        store.insert_usage(&many).await.unwrap();
        assert_eq!(store.usage_count().await.unwrap(), 2_504, "{backend}");
    }
}

#[tokio::test]
async fn spend_today_and_this_month_are_utc_windows_over_everyone() {
    for (backend, url) in db::both().await {
        let store = Store::open(&url).unwrap();
        let day = 86_400_000;
        // 2026-12-15T12:00:00Z; the month began 14.5 days earlier.
        let now = 1_797_336_000_000;
        let rows = [
            usage("t1", "ana", "m1", now - 1_000, 5),
            usage("t2", "ben", "m2", now - 11 * 3_600_000, 7), // 01:00 today
            usage("m1", "ana", "m1", now - 10 * day, 100),     // this month
            usage("p1", "ana", "m1", now - 15 * day, 1_000),   // November
            usage("f1", "ana", "m1", now + 1_000, 10_000),     // after `now`
        ];
        store.insert_usage(&rows).await.unwrap();
        let s = store.spend_today_and_month(now).await.unwrap();
        assert_eq!((s.today_requests, s.today_nusd), (2, 12), "{backend}");
        assert_eq!((s.month_requests, s.month_nusd), (3, 112), "{backend}");
    }
}

#[tokio::test]
async fn an_edited_audit_row_is_named_by_verify() {
    for (backend, url) in db::both().await {
        let store = Store::open(&url).unwrap();
        for i in 0..5 {
            store
                .append_audit(Entry::new("master", "breaker.reset").target(format!("p{i}")))
                .await
                .unwrap();
        }
        assert_eq!(store.verify_audit().await.unwrap(), Ok(5));
        let raw = sqlx::AnyPool::connect(&url).await;
        // The Any driver needs its drivers installed; Store::open did that.
        let raw = raw.unwrap();
        sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE id = 3")
            .execute(&raw)
            .await
            .unwrap();
        let broken = store.verify_audit().await.unwrap().unwrap_err();
        assert_eq!(broken.id, 3, "{backend}");
        // Deleting the last row is noticed through the head.
        sqlx::query("UPDATE audit_log SET actor = 'master' WHERE id = 3")
            .execute(&raw)
            .await
            .unwrap();
        assert_eq!(store.verify_audit().await.unwrap(), Ok(5));
        sqlx::query("DELETE FROM audit_log WHERE id = 5")
            .execute(&raw)
            .await
            .unwrap();
        assert_eq!(store.verify_audit().await.unwrap().unwrap_err().id, 5);
    }
}

#[tokio::test]
async fn verify_on_a_live_trail_is_not_fooled_by_appends_while_it_runs() {
    for (backend, url) in db::both().await {
        let store = Store::open(&url).unwrap();
        store
            .append_audit(Entry::new("master", "breaker.reset"))
            .await
            .unwrap();
        let writer = store.clone();
        let appends = spark_gateway::telemetry::spawn_named("audit-appends", async move {
            for i in 0..150 {
                writer
                    .append_audit(Entry::new("master", "cache.purge").target(format!("r{i}")))
                    .await
                    .unwrap();
            }
        });
        let mut checks = 0;
        while !appends.is_finished() {
            let verdict = store.verify_audit().await.unwrap();
            assert!(
                verdict.is_ok(),
                "{backend}: {verdict:?} while rows were appended"
            );
            checks += 1;
        }
        appends.await.unwrap();
        assert!(checks > 1, "{backend}: verify ran while appends did");
        assert_eq!(store.verify_audit().await.unwrap(), Ok(151), "{backend}");
    }
}

#[tokio::test]
async fn key_changes_are_announced_as_they_commit_with_postgres() {
    let sqlite = Store::open(&db::sqlite_url()).unwrap();
    assert!(sqlite.key_changes().await.unwrap().is_none());

    let url = db::postgres_url().await;
    let writer = Store::open(&url).unwrap();
    writer.migrate().await.unwrap();
    let mut changes = Store::open(&url)
        .unwrap()
        .key_changes()
        .await
        .unwrap()
        .expect("PostgreSQL announces key changes");
    writer
        .insert_key(
            &key("n1", "alice"),
            Entry::new("master", "key.create").target("n1"),
        )
        .await
        .unwrap();
    // Bounded so a missing announcement fails the test instead of hanging it; the replicas'
    // one-second poll would never show up here. The channel is database-wide, so a key written
    // by a test running beside this one may be the announcement received: it went through the
    // same NOTIFY, so the mechanism is proven either way.
    let got = tokio::time::timeout(std::time::Duration::from_secs(20), changes.next())
        .await
        .expect("no announcement of the new key")
        .unwrap();
    assert!(got);
    writer.close().await;
}

#[tokio::test]
async fn a_page_of_keys_is_summed_in_one_query_as_each_would_be_alone() {
    use spark_gateway::store::now_ms;
    for (backend, url) in db::both().await {
        let store = Store::open(&url).unwrap();
        let now = now_ms();
        let (day, _) = Period::Day.window(now);
        let (month, _) = Period::Month.window(now);
        let mut rows = Vec::new();
        // k1: today, earlier this month (or today on the 1st) and long ago; k2: today only.
        for (i, (key, time, cost)) in [
            ("k1", now, 100),
            ("k1", month.max(day - 1), 20),
            ("k1", 1_000, 3),
            ("k2", now, 7),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = usage(&format!("s{i}"), "alice", "claude-haiku-4-5", time, cost);
            r.key_id = Some(key.into());
            rows.push(r);
        }
        store.insert_usage(&rows).await.unwrap();
        let all = store
            .spent_by_keys(&["k1", "k2", "k3"], day, month)
            .await
            .unwrap();
        assert!(!all.contains_key("k3"), "{backend}");
        for key in ["k1", "k2"] {
            for (i, since) in [day, month, 0].into_iter().enumerate() {
                let alone = store.spent_since(Some(key), None, since).await.unwrap();
                assert_eq!(all[key][i], alone, "{backend} {key} window {i}");
            }
        }
        assert_eq!(all["k1"][2].nusd, 123, "{backend}");
        assert_eq!(all["k1"][2].tokens, 90, "{backend}");
        store.close().await;
    }
}
