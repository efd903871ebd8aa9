//! Budgets: spend limits per managed key and per user, checked before the upstream call.
//!
//! A budget limits money and, optionally, tokens (input and output) in the same window. A
//! request reserves its worst case (its input estimate and `max_tokens`, costed at the dearest
//! price of its plan) before it goes upstream and settles the real cost and tokens after, so
//! concurrent requests cannot overshoot a limit by more than one request's worst case: a request
//! is admitted while `spent + reserved < limit` for money and for tokens. Windows are UTC days,
//! UTC months or all time.
//!
//! Spend is kept in memory, restored from the ledger the first time a window is used, and with
//! `REDIS_URL` shared by every replica (one hash per limit and window with the fields `nusd` and
//! `tokens`, initialised from the ledger with `HSETNX`, raised with `HINCRBY`). Reservations
//! stay local to a replica, so a replica that dies mid-request leaks nothing; across replicas the
//! overshoot bound is one worst case per replica. Redis down: the local spend decides (degraded, still limiting). The ledger
//! down when a window must be restored: the request is refused with `database_unavailable`,
//! never admitted on an unknown spend.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};

use prometheus::IntCounterVec;
use sha2::{Digest, Sha256};

use crate::redis::RedisBackend;
use crate::store::keys::{Budget, Period};
pub use crate::store::usage::Amount;
use crate::store::{Store, now_ms};

/// Whose limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Key,
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::User => "user",
        }
    }
}

/// One limit that applies to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub scope: Scope,
    /// The key id or the user id.
    pub id: String,
    pub budget: Budget,
}

/// Who pays for a request: what the ledger row says and which limits apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub request_id: String,
    /// A user id, `master` or `anonymous`.
    pub user_id: String,
    /// The managed key, when one authenticated the request.
    pub key_id: Option<String>,
    /// `generate`, `chat`, `messages`.
    pub route: &'static str,
    pub limits: Vec<Limit>,
}

/// A limit that is spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub scope: Scope,
    pub limit_nusd: i64,
    pub spent_nusd: i64,
    /// The budget's token limit, when it has one.
    pub limit_tokens: Option<i64>,
    pub spent_tokens: i64,
    /// Whether the token limit refused the request (else the money limit did).
    pub by_tokens: bool,
    /// When the window ends (epoch ms); `None` for an all-time budget.
    pub resets_at: Option<i64>,
}

/// What is left of a caller's tightest limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub nusd: i64,
    /// `None` when no limit counts tokens.
    pub tokens: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("the {} budget is spent", .0.scope.as_str())]
    Exceeded(Exceeded),
    #[error("spend could not be restored from the ledger: {0}")]
    Unavailable(String),
}

/// The largest token limit accepted (the same bound as the admin API's).
pub const MAX_TOKEN_LIMIT: i64 = 1_000_000_000_000;

/// Parses `SPARK_USER_BUDGETS`: `alice=10/month;bob=0.5/day,tokens=200000;carol=100/total`
/// (USD per period, and optionally a token limit in the same period).
pub fn parse_user_budgets(text: &str) -> Result<HashMap<String, Budget>, String> {
    let mut out = HashMap::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (user, rest) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not user=USD/period"))?;
        let (usd, rest) = rest
            .split_once('/')
            .ok_or_else(|| format!("{rest:?} is not USD/period, e.g. 10/month"))?;
        let (period, tokens) = match rest.split_once(',') {
            Some((period, tokens)) => (period, Some(tokens.trim())),
            None => (rest, None),
        };
        let usd: f64 = usd
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0 && *v <= 1e9)
            .ok_or_else(|| format!("{usd:?} is not an amount above 0 and at most 1e9"))?;
        let period = Period::parse(period.trim())
            .ok_or_else(|| format!("{period:?} is not day, month or total"))?;
        let limit_tokens = tokens
            .map(|t| {
                t.strip_prefix("tokens=")
                    .and_then(|n| n.trim().parse::<i64>().ok())
                    .filter(|n| (1..=MAX_TOKEN_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!("{t:?} is not tokens=N with N from 1 to {MAX_TOKEN_LIMIT}")
                    })
            })
            .transpose()?;
        out.insert(
            user.trim().to_owned(),
            Budget {
                limit_nusd: crate::store::nusd(usd),
                limit_tokens,
                period,
            },
        );
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct Tally {
    window: i64,
    spent: Amount,
    reserved: Amount,
}

/// What a request holds between [`Budgets::reserve`] and [`Budgets::settle`].
#[derive(Debug)]
#[must_use = "settle the reservation, or it stays held until the window ends"]
pub struct Reservation {
    held: Vec<(Limit, i64)>,
    worst: Amount,
}

impl Reservation {
    /// A reservation against no limit (nothing to settle).
    pub fn none() -> Reservation {
        Reservation {
            held: Vec::new(),
            worst: Amount::default(),
        }
    }
}

impl Amount {
    fn plus(self, o: Amount) -> Amount {
        Amount {
            nusd: self.nusd.saturating_add(o.nusd),
            tokens: self.tokens.saturating_add(o.tokens),
        }
    }

    fn minus(self, o: Amount) -> Amount {
        Amount {
            nusd: self.nusd.saturating_sub(o.nusd).max(0),
            tokens: self.tokens.saturating_sub(o.tokens).max(0),
        }
    }

    fn max(self, o: Amount) -> Amount {
        Amount {
            nusd: self.nusd.max(o.nusd),
            tokens: self.tokens.max(o.tokens),
        }
    }
}

pub struct Budgets {
    tallies: Mutex<HashMap<(Scope, String), Tally>>,
    store: Option<Store>,
    redis: Option<Arc<RedisBackend>>,
    users: HashMap<String, Budget>,
    rejections: IntCounterVec,
}

impl Budgets {
    pub fn new(
        store: Option<Store>,
        redis: Option<Arc<RedisBackend>>,
        users: HashMap<String, Budget>,
        rejections: IntCounterVec,
    ) -> Budgets {
        Budgets {
            tallies: Mutex::new(HashMap::new()),
            store,
            redis,
            users,
            rejections,
        }
    }

    /// The limits of a caller: its key's budget and its user's. The user's is its entry in
    /// `SPARK_USER_BUDGETS` or, without one, its group tier's (`tier`): the operator's per-user
    /// setting is the more specific.
    pub fn limits(
        &self,
        user_id: &str,
        key: Option<(&str, Option<Budget>)>,
        tier: Option<Budget>,
    ) -> Vec<Limit> {
        let mut out = Vec::new();
        if let Some((id, Some(budget))) = key {
            out.push(Limit {
                scope: Scope::Key,
                id: id.to_owned(),
                budget,
            });
        }
        if let Some(budget) = self.users.get(user_id).copied().or(tier) {
            out.push(Limit {
                scope: Scope::User,
                id: user_id.to_owned(),
                budget,
            });
        }
        out
    }

    fn redis_key(limit: &Limit, window: i64) -> String {
        // Ids are hashed: key and user ids never appear in Redis.
        let digest = Sha256::digest(limit.id.as_bytes());
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("spark:spend:{}:{hex}:{window}", limit.scope.as_str())
    }

    /// Spend so far in the limit's window: shared (Redis) when it answers, else local; the
    /// local tally is restored from the ledger at the first use of a window.
    /// With `restore` false a window this replica has not used yet is `Ok(None)`: nothing is
    /// read from the ledger (the response header must not wait on the database).
    async fn spent(
        &self,
        limit: &Limit,
        window: i64,
        restore: bool,
    ) -> Result<Option<Amount>, BudgetError> {
        let key = (limit.scope, limit.id.clone());
        let known = self
            .tallies
            .lock()
            .ok()
            .and_then(|t| t.get(&key).filter(|t| t.window == window).map(|t| t.spent));
        let local = match known {
            Some(spent) => spent,
            None if !restore => return Ok(None),
            None => {
                let restored = self.restore(limit, window).await?;
                let fresh = Tally {
                    window,
                    spent: restored,
                    reserved: Amount::default(),
                };
                let mut tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
                // A tally is replaced only when it is missing or counts another window; a
                // concurrent request may have restored this one first. (Matching on the entry,
                // not `or_default`: a default tally's window is 0, the all-time window, so an
                // all-time budget would never be restored.)
                match tallies.entry(key) {
                    Entry::Vacant(v) => v.insert(fresh).spent,
                    Entry::Occupied(mut o) => {
                        if o.get().window != window {
                            o.insert(fresh);
                        }
                        o.get().spent
                    }
                }
            }
        };
        let Some(redis) = &self.redis else {
            return Ok(Some(local));
        };
        let rkey = Self::redis_key(limit, window);
        let shared = redis
            .run("budget", |mut c| {
                let rkey = rkey.clone();
                async move {
                    redis::cmd("HMGET")
                        .arg(&rkey)
                        .arg("nusd")
                        .arg("tokens")
                        .query_async::<(Option<i64>, Option<i64>)>(&mut c)
                        .await
                }
            })
            .await;
        match shared {
            Ok((Some(nusd), tokens)) => Ok(Some(
                Amount {
                    nusd,
                    tokens: tokens.unwrap_or(0),
                }
                .max(local),
            )),
            Ok((None, _)) if !restore => Ok(Some(local)),
            Ok((None, _)) => {
                // First use of this window by any replica since Redis last held it: seed it
                // from the ledger (the first replica to do so wins, field by field).
                let seed = self.restore(limit, window).await?.max(local);
                let ttl = ttl_ms(limit.budget.period, window);
                let _ = redis
                    .run("budget", |mut c| {
                        let rkey = rkey.clone();
                        async move {
                            redis::pipe()
                                .atomic()
                                .cmd("HSETNX")
                                .arg(&rkey)
                                .arg("nusd")
                                .arg(seed.nusd)
                                .cmd("HSETNX")
                                .arg(&rkey)
                                .arg("tokens")
                                .arg(seed.tokens)
                                .cmd("PEXPIRE")
                                .arg(&rkey)
                                .arg(ttl)
                                .query_async::<()>(&mut c)
                                .await
                        }
                    })
                    .await;
                Ok(Some(seed))
            }
            Err(_) => Ok(Some(local)),
        }
    }

    async fn restore(&self, limit: &Limit, window: i64) -> Result<Amount, BudgetError> {
        let Some(store) = &self.store else {
            return Ok(Amount::default());
        };
        let (key, user) = match limit.scope {
            Scope::Key => (Some(limit.id.as_str()), None),
            Scope::User => (None, Some(limit.id.as_str())),
        };
        let restore = store.spent_since(key, user, window);
        match tokio::time::timeout(std::time::Duration::from_secs(3), restore).await {
            Ok(Ok(spent)) => Ok(spent),
            Ok(Err(e)) => Err(BudgetError::Unavailable(e.to_string())),
            Err(_) => Err(BudgetError::Unavailable(
                "the ledger did not answer within 3 s".into(),
            )),
        }
    }

    /// Refuses when any limit is spent (or would be, counting what concurrent requests hold),
    /// in money or in tokens; otherwise holds `worst` against each limit.
    pub async fn reserve(
        &self,
        limits: &[Limit],
        worst: Amount,
    ) -> Result<Reservation, BudgetError> {
        if limits.is_empty() {
            return Ok(Reservation::none());
        }
        let now = now_ms();
        let mut spent = Vec::with_capacity(limits.len());
        for limit in limits {
            let (window, ends) = limit.budget.period.window(now);
            let so_far = self.spent(limit, window, true).await?.unwrap_or_default();
            spent.push((window, ends, so_far));
        }
        let mut tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        for (limit, (window, ends, spent)) in limits.iter().zip(&spent) {
            let reserved = tallies
                .get(&(limit.scope, limit.id.clone()))
                .filter(|t| t.window == *window)
                .map_or(Amount::default(), |t| t.reserved);
            let held = spent.plus(reserved);
            let by_money = held.nusd >= limit.budget.limit_nusd;
            let by_tokens = limit.budget.limit_tokens.is_some_and(|t| held.tokens >= t);
            if by_money || by_tokens {
                self.rejections
                    .with_label_values(&[limit.scope.as_str()])
                    .inc();
                return Err(BudgetError::Exceeded(Exceeded {
                    scope: limit.scope,
                    limit_nusd: limit.budget.limit_nusd,
                    spent_nusd: spent.nusd,
                    limit_tokens: limit.budget.limit_tokens,
                    spent_tokens: spent.tokens,
                    by_tokens: !by_money,
                    resets_at: *ends,
                }));
            }
        }
        let mut held = Vec::with_capacity(limits.len());
        for (limit, (window, _, _)) in limits.iter().zip(&spent) {
            let t = tallies.entry((limit.scope, limit.id.clone())).or_default();
            if t.window == *window {
                t.reserved = t.reserved.plus(worst);
            }
            held.push((limit.clone(), *window));
        }
        Ok(Reservation { held, worst })
    }

    /// Releases the reservation and adds what the request really used (locally at once, in
    /// Redis in the background).
    pub fn settle(&self, reservation: Reservation, actual: Amount) {
        if reservation.held.is_empty() {
            return;
        }
        {
            let mut tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
            for (limit, window) in &reservation.held {
                if let Some(t) = tallies.get_mut(&(limit.scope, limit.id.clone()))
                    && t.window == *window
                {
                    t.reserved = t.reserved.minus(reservation.worst);
                    t.spent = t.spent.plus(actual);
                }
            }
        }
        if actual.nusd <= 0 && actual.tokens <= 0 {
            return;
        }
        if let Some(redis) = &self.redis {
            let redis = Arc::clone(redis);
            let keys: Vec<(String, i64)> = reservation
                .held
                .iter()
                .map(|(l, w)| (Self::redis_key(l, *w), ttl_ms(l.budget.period, *w)))
                .collect();
            crate::telemetry::spawn_named("budget-settle", async move {
                for (key, ttl) in keys {
                    let _ = redis
                        .run("budget", |mut c| {
                            let key = key.clone();
                            async move {
                                redis::pipe()
                                    .cmd("HINCRBY")
                                    .arg(&key)
                                    .arg("nusd")
                                    .arg(actual.nusd)
                                    .cmd("HINCRBY")
                                    .arg(&key)
                                    .arg("tokens")
                                    .arg(actual.tokens)
                                    .cmd("PEXPIRE")
                                    .arg(&key)
                                    .arg(ttl)
                                    .query_async::<()>(&mut c)
                                    .await
                            }
                        })
                        .await;
                }
            });
        }
    }

    /// What is left of the tightest limits, money and tokens (for `X-Spark-Budget-Remaining`
    /// and `X-Spark-Budget-Remaining-Tokens`); `None` until this replica knows every limit's
    /// spend (it never reads the ledger for it).
    pub async fn remaining(&self, limits: &[Limit]) -> Option<Remaining> {
        let now = now_ms();
        let mut least: Option<Remaining> = None;
        for limit in limits {
            let (window, _) = limit.budget.period.window(now);
            let spent = self.spent(limit, window, false).await.ok()??;
            let nusd = (limit.budget.limit_nusd - spent.nusd).max(0);
            let tokens = limit.budget.limit_tokens.map(|t| (t - spent.tokens).max(0));
            least = Some(match least {
                None => Remaining { nusd, tokens },
                Some(l) => Remaining {
                    nusd: l.nusd.min(nusd),
                    tokens: match (l.tokens, tokens) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    },
                },
            });
        }
        least
    }
}

/// How long a window's shared counter is kept: to the window's end and a day more (all-time
/// counters: 400 days, refreshed by every settlement).
fn ttl_ms(period: Period, window: i64) -> i64 {
    match period.window(window).1 {
        Some(end) => (end - now_ms()).max(0) + 86_400_000,
        None => 400 * 86_400_000,
    }
}

#[cfg(test)]
mod tests;
