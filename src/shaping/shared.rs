//! A lane's per-minute budgets shared by every replica through Redis: the same GCRA as
//! [`super::gcra`], kept in two Redis keys per lane and stepped by Lua scripts on Redis's own
//! clock, so N replicas together send no more than the rule allows.
//!
//! Fails closed: when Redis does not answer (counted in
//! `spark_redis_fallback_total{op="shaping"}`), the caller keeps its local buckets, which hold
//! the rule per replica. The in-flight limit stays per replica: a slot is held by a connection
//! this process owns.

use std::sync::Arc;
use std::time::Duration;

use crate::redis::{RedisBackend, RedisError};

/// Checks both budgets and, only if both allow, charges both. A cost above the burst goes on a
/// full bucket and leaves a debt. Returns {1, 0} or {0, microseconds until it could go}.
/// ARGV: rpm interval µs (0: no rpm budget), rpm burst, tpm interval µs (0: none), tpm burst,
/// tokens.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function ready(key, interval, burst, cost)
  if interval <= 0 then return now, now end
  local tat = tonumber(redis.call('GET', key) or now)
  return tat - interval * (burst - math.min(cost, burst)), tat
end
local ri, rb = tonumber(ARGV[1]), tonumber(ARGV[2])
local ti, tb, tokens = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local r_at, r_tat = ready(KEYS[1], ri, rb, 1)
local t_at, t_tat = ready(KEYS[2], ti, tb, tokens)
local at = math.max(r_at, t_at)
if at > now then return {0, at - now} end
local function take(key, interval, tat, cost)
  if interval <= 0 then return end
  local new = math.max(tat, now) + interval * cost
  redis.call('SET', key, new, 'PX', math.ceil((new - now) / 1000) + 1000)
end
take(KEYS[1], ri, r_tat, 1)
take(KEYS[2], ti, t_tat, tokens)
return {1, 0}
";

/// Corrects a budget: ARGV[1] interval µs, ARGV[2] signed units. A refund never banks credit.
const ADJUST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, units = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local new
if units >= 0 then
  new = math.max(tat, now) + interval * units
elseif tat > now then
  new = math.max(tat + interval * units, now)
else
  return 0
end
redis.call('SET', KEYS[1], new, 'PX', math.ceil((new - now) / 1000) + 1000)
return 1
";

/// Pushes a budget out: its theoretical arrival time becomes at least now + ARGV[1] µs.
const TIGHTEN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local target = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if target > tat then
  redis.call('SET', KEYS[1], target, 'PX', math.ceil((target - now) / 1000) + 1000)
end
return 1
";

/// One budget's shape, as Redis needs it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub interval: Duration,
    pub burst: u64,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The Redis side of one lane.
pub struct SharedBudgets {
    backend: Arc<RedisBackend>,
    rpm_key: String,
    tpm_key: String,
    rpm: Option<Budget>,
    tpm: Option<Budget>,
    take: redis::Script,
    adjust: redis::Script,
    tighten: redis::Script,
}

/// What Redis said about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    Taken,
    /// Not before this long.
    Wait(Duration),
}

impl SharedBudgets {
    /// `lane` is the rule's label (configuration, never caller text).
    pub fn new(
        backend: Arc<RedisBackend>,
        lane: &str,
        rpm: Option<Budget>,
        tpm: Option<Budget>,
    ) -> Self {
        SharedBudgets {
            backend,
            rpm_key: format!("spark:shape:{lane}:rpm"),
            tpm_key: format!("spark:shape:{lane}:tpm"),
            rpm,
            tpm,
            take: redis::Script::new(TAKE),
            adjust: redis::Script::new(ADJUST),
            tighten: redis::Script::new(TIGHTEN),
        }
    }

    /// Charges one call of `tokens` to both budgets if both allow it now.
    pub async fn take(&self, tokens: u64) -> Result<Shared, RedisError> {
        let shape = |b: Option<Budget>| b.map_or((0, 0), |b| (micros(b.interval).max(1), b.burst));
        let ((ri, rb), (ti, tb)) = (shape(self.rpm), shape(self.tpm));
        let reply: Vec<i64> = self
            .backend
            .run("shaping", |mut c| async move {
                self.take
                    .key(&self.rpm_key)
                    .key(&self.tpm_key)
                    .arg(ri)
                    .arg(rb)
                    .arg(ti)
                    .arg(tb)
                    .arg(tokens)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match reply.as_slice() {
            [1, ..] => Shared::Taken,
            [_, wait, ..] => Shared::Wait(Duration::from_micros(u64::try_from(*wait).unwrap_or(0))),
            _ => Shared::Wait(Duration::from_secs(1)),
        })
    }

    /// Corrects the token budget by `delta` tokens.
    pub async fn adjust_tokens(&self, delta: i64) -> Result<(), RedisError> {
        let Some(tpm) = self.tpm else { return Ok(()) };
        self.backend
            .run("shaping", |mut c| async move {
                self.adjust
                    .key(&self.tpm_key)
                    .arg(micros(tpm.interval).max(1))
                    .arg(delta)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
    }

    /// Pushes a budget's refill out by `ahead` from now (requests or tokens).
    pub async fn push_out(&self, tokens: bool, ahead: Duration) -> Result<(), RedisError> {
        let key = if tokens { &self.tpm_key } else { &self.rpm_key };
        self.backend
            .run("shaping", |mut c| async move {
                self.tighten
                    .key(key)
                    .arg(micros(ahead))
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
    }
}
