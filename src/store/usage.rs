//! The usage ledger's rows: batched inserts from the writer, sums for the usage API.
//!
//! A row records who used which model through which route, the tokens and the cost; never the
//! prompt or the answer. Rows carry their own id and are inserted with `ON CONFLICT DO NOTHING`,
//! so a batch retried after a commit whose answer was lost is not counted twice.

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, StoreError};

/// One request's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub id: String,
    pub time: i64,
    pub request_id: String,
    /// The managed key's id; `None` for keys from the environment or the key file.
    pub key_id: Option<String>,
    pub user_id: String,
    /// `generate`, `chat`, `messages`: a fixed set, never a caller's path.
    pub route: &'static str,
    pub provider: String,
    pub model: String,
    pub engine: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached: bool,
    pub cost_nusd: i64,
    /// `ok`, or the error code the request ended with after reaching a provider.
    pub status: String,
    pub latency_ms: i64,
}

/// How the usage API groups rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Model,
    Provider,
    User,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<GroupBy> {
        match text {
            "day" => Some(GroupBy::Day),
            "model" => Some(GroupBy::Model),
            "provider" => Some(GroupBy::Provider),
            "user" => Some(GroupBy::User),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Day => "day",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::User => "user",
        }
    }

    /// The SQL expression grouped on; days are whole days since the epoch (UTC), rendered as
    /// dates by the caller.
    fn column(self) -> &'static str {
        match self {
            GroupBy::Day => "CAST(time / 86400000 AS TEXT)",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::User => "user_id",
        }
    }
}

/// What [`Store::spend_today_and_month`] answers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecentSpend {
    pub today_requests: i64,
    pub today_nusd: i64,
    pub month_requests: i64,
    pub month_nusd: i64,
}

/// One group's sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSum {
    pub group: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_nusd: i64,
}

const COLUMNS: usize = 15;

/// The most rows one insert statement carries.
const STATEMENT_ROWS: usize = 1_000;

/// How many rows each insert statement of an `n`-row batch carries: full statements of
/// [`STATEMENT_ROWS`], then the rest as powers of two (999 = 512 + 256 + … + 1).
///
/// Why not one statement of whatever is left: sqlx keeps every statement it has prepared, up to
/// 100 per connection, and each batch size is a statement of its own; an insert of 1,000 rows
/// compiles to about a megabyte in SQLite, so under a load whose batches come in every size the
/// cache of odd-sized inserts grew without use (heaptrack: 34 statements, 8.5 MB of a 19.5 MB
/// heap peak after eight seconds of cache hits; at 100 statements, about 25 MB a connection). With these sizes there are 11 shapes, each prepared once per
/// connection and reused.
fn statement_rows(mut n: usize) -> impl Iterator<Item = usize> {
    let full = n / STATEMENT_ROWS;
    n %= STATEMENT_ROWS;
    let rest = (0..usize::BITS)
        .rev()
        .map(|bit| 1usize << bit)
        .filter(move |size| n & size != 0);
    std::iter::repeat_n(STATEMENT_ROWS, full).chain(rest)
}

/// An amount of spend: money (nano-dollars) and tokens (input and output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amount {
    pub nusd: i64,
    pub tokens: i64,
}

impl Store {
    /// Inserts `rows` in one transaction, in statements of [`statement_rows`] rows.
    pub async fn insert_usage(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        self.ready().await?;
        let sqlite = self.backend() == super::Backend::Sqlite;
        let mut tx = self.begin_write().await?;
        let mut rest = rows;
        for n in statement_rows(rows.len()) {
            let (chunk, after) = rest.split_at(n.min(rest.len()));
            rest = after;
            let mut sql = String::with_capacity(200 + chunk.len() * 16 * COLUMNS);
            sql.push_str(
                "INSERT INTO usage_records (id, time, request_id, key_id, user_id, route, provider, \
                 model, engine, input_tokens, output_tokens, cached, cost_nusd, status, latency_ms) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..COLUMNS {
                    if c > 0 {
                        sql.push(',');
                    }
                    // SQLite looks every `$n` up by name in a list as it parses, which is
                    // quadratic in a 15,000-parameter statement (1,000 rows took ~0.4 s);
                    // anonymous `?` are numbered as they come. PostgreSQL has only `$n`.
                    if sqlite {
                        sql.push('?');
                    } else {
                        sql.push('$');
                        sql.push_str(&(i * COLUMNS + c + 1).to_string());
                    }
                }
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (id) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for r in chunk {
                // Borrowed: the rows stay with the writer until the commit, for a retry.
                q = q
                    .bind(r.id.as_str())
                    .bind(r.time)
                    .bind(r.request_id.as_str())
                    .bind(r.key_id.as_deref())
                    .bind(r.user_id.as_str())
                    .bind(r.route)
                    .bind(r.provider.as_str())
                    .bind(r.model.as_str())
                    .bind(r.engine.as_str())
                    .bind(r.input_tokens)
                    .bind(r.output_tokens)
                    .bind(i64::from(r.cached))
                    .bind(r.cost_nusd)
                    .bind(r.status.as_str())
                    .bind(r.latency_ms);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sums of rows with `from <= time < to`, optionally of one user, per group.
    pub async fn usage_sums(
        &self,
        from_ms: i64,
        to_ms: i64,
        group_by: GroupBy,
        user_id: Option<&str>,
    ) -> Result<Vec<UsageSum>, StoreError> {
        self.ready().await?;
        let col = group_by.column();
        let rows = sqlx::query(&format!(
            "SELECT {col} AS grp, COUNT(*) AS requests, \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
             CAST(COALESCE(SUM(cost_nusd), 0) AS BIGINT) AS cost_nusd \
             FROM usage_records WHERE time >= $1 AND time < $2 AND ($3 = '' OR user_id = $3) \
             GROUP BY {col} ORDER BY {col}"
        ))
        .bind(from_ms)
        .bind(to_ms)
        .bind(user_id.unwrap_or("").to_owned())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageSum {
                    group: row.try_get("grp")?,
                    requests: row.try_get("requests")?,
                    input_tokens: row.try_get("input_tokens")?,
                    output_tokens: row.try_get("output_tokens")?,
                    cost_nusd: row.try_get("cost_nusd")?,
                })
            })
            .collect()
    }

    /// What a key (or, with `key_id` `None`, a user) has spent since `since_ms`: nano-dollars
    /// and tokens (input and output).
    pub async fn spent_since(
        &self,
        key_id: Option<&str>,
        user_id: Option<&str>,
        since_ms: i64,
    ) -> Result<Amount, StoreError> {
        self.ready().await?;
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(cost_nusd), 0) AS BIGINT) AS spent, \
             CAST(COALESCE(SUM(input_tokens + output_tokens), 0) AS BIGINT) AS tokens \
             FROM usage_records \
             WHERE time >= $1 AND ($2 = '' OR key_id = $2) AND ($3 = '' OR user_id = $3)",
        )
        .bind(since_ms)
        .bind(key_id.unwrap_or("").to_owned())
        .bind(user_id.unwrap_or("").to_owned())
        .fetch_one(self.pool())
        .await?;
        Ok(Amount {
            nusd: row.try_get("spent")?,
            tokens: row.try_get("tokens")?,
        })
    }

    /// What each of `key_ids` has spent since `day_ms` (the start of today), since `month_ms`
    /// (of this month) and in total, in one query: a page of the admin key list costs one round
    /// trip, not one per key. Keys without rows are absent.
    pub async fn spent_by_keys(
        &self,
        key_ids: &[&str],
        day_ms: i64,
        month_ms: i64,
    ) -> Result<HashMap<String, [Amount; 3]>, StoreError> {
        self.ready().await?;
        if key_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sum = |since: &str, what: &str| {
            format!(
                "CAST(COALESCE(SUM(CASE WHEN time >= {since} THEN {what} ELSE 0 END), 0) AS BIGINT)"
            )
        };
        let tokens = "input_tokens + output_tokens";
        let list: Vec<String> = (0..key_ids.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT key_id, {} AS day_nusd, {} AS day_tokens, {} AS month_nusd, {} AS month_tokens, \
             CAST(COALESCE(SUM(cost_nusd), 0) AS BIGINT) AS total_nusd, \
             CAST(COALESCE(SUM({tokens}), 0) AS BIGINT) AS total_tokens \
             FROM usage_records WHERE key_id IN ({}) GROUP BY key_id",
            sum("$1", "cost_nusd"),
            sum("$1", tokens),
            sum("$2", "cost_nusd"),
            sum("$2", tokens),
            list.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(day_ms).bind(month_ms);
        for id in key_ids {
            q = q.bind((*id).to_owned());
        }
        let mut out = HashMap::with_capacity(key_ids.len());
        for row in q.fetch_all(self.pool()).await? {
            let amount = |n: &str, t: &str| -> Result<Amount, StoreError> {
                Ok(Amount {
                    nusd: row.try_get(n)?,
                    tokens: row.try_get(t)?,
                })
            };
            out.insert(
                row.try_get::<String, _>("key_id")?,
                [
                    amount("day_nusd", "day_tokens")?,
                    amount("month_nusd", "month_tokens")?,
                    amount("total_nusd", "total_tokens")?,
                ],
            );
        }
        Ok(out)
    }

    /// How many ledger rows there are (tests and the writer benchmark count with it).
    /// Requests and cost of the UTC day and month holding `now_ms`, everyone's (the console's
    /// overview): one grouped query over the month.
    pub async fn spend_today_and_month(&self, now_ms: i64) -> Result<RecentSpend, StoreError> {
        let month_start = super::keys::Period::Month.window(now_ms).0;
        let days = self
            .usage_sums(month_start, now_ms + 1, GroupBy::Day, None)
            .await?;
        let today = (now_ms / 86_400_000).to_string();
        let mut out = RecentSpend::default();
        for d in &days {
            out.month_requests += d.requests;
            out.month_nusd += d.cost_nusd;
            if d.group == today {
                out.today_requests += d.requests;
                out.today_nusd += d.cost_nusd;
            }
        }
        Ok(out)
    }

    pub async fn usage_count(&self) -> Result<i64, StoreError> {
        self.ready().await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM usage_records")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "a test fails loudly at the first surprise"
    )]

    use super::*;

    #[test]
    fn a_batch_of_any_size_is_written_in_few_statement_shapes() {
        let mut shapes = std::collections::BTreeSet::new();
        for n in 0..=5_000 {
            let sizes: Vec<usize> = statement_rows(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n, "{n}");
            assert!(sizes.iter().all(|&s| s > 0 && s <= STATEMENT_ROWS), "{n}");
            // The most statements a batch of under 1,000 rows takes is its count of one bits.
            assert!(sizes.len() <= n / STATEMENT_ROWS + 10, "{n}: {sizes:?}");
            shapes.extend(sizes);
        }
        assert_eq!(shapes.len(), 11, "{shapes:?}");
        assert_eq!(
            statement_rows(999).collect::<Vec<_>>(),
            [512, 256, 128, 64, 32, 4, 2, 1]
        );
        assert_eq!(statement_rows(2_001).collect::<Vec<_>>(), [1_000, 1_000, 1]);
    }

    fn row(id: usize) -> UsageRow {
        UsageRow {
            id: format!("row-{id}"),
            time: 1_000,
            request_id: format!("req-{id}"),
            key_id: None,
            user_id: "alice".into(),
            route: "generate",
            provider: "anthropic".into(),
            model: "m".into(),
            engine: "unity".into(),
            input_tokens: 1,
            output_tokens: 1,
            cached: false,
            cost_nusd: 1,
            status: "ok".into(),
            latency_ms: 1,
        }
    }

    /// Every row of batches of 150 different sizes goes in once, whatever statements carried it.
    #[tokio::test]
    async fn batches_of_every_size_are_written_whole() {
        let dir =
            std::env::temp_dir().join(format!("spark-usage-{}", uuid::Uuid::new_v4().simple()));
        let store = Store::open(&crate::store::default_url(&dir)).unwrap();
        let mut next = 0;
        for n in 1..=150 {
            let rows: Vec<UsageRow> = (next..next + n).map(row).collect();
            next += n;
            store.insert_usage(&rows).await.unwrap();
        }
        assert_eq!(store.usage_count().await.unwrap(), next as i64);
        // Again: each statement of each batch conflicts on every row and adds nothing.
        let all: Vec<UsageRow> = (0..next).map(row).collect();
        store.insert_usage(&all).await.unwrap();
        assert_eq!(store.usage_count().await.unwrap(), next as i64);
        store.pool().close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
