//! Per-key rate limits: GCRA quotas per route class, in memory or shared through Redis.
//!
//! Sits right after authentication in DESIGN.md's request path, keyed by the caller's user id (or
//! the client address when auth is off), so a key is a budget. One trait, two backends: memory
//! (`governor` keyed limiters, bounded by a periodic `retain_recent`) and Redis (the same GCRA in
//! one Lua script, shared by every replica, falling back to memory when Redis is unreachable).
//! Both return a [`Decision`] from which `api::ratelimit` writes the `X-RateLimit-*` headers.

mod memory;
pub mod redis;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryLimiter;

/// The limited route families, each with its own quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    Generate,
    Export,
    OpenAi,
    /// The Anthropic-compatible API (`/v1/messages`).
    Anthropic,
}

impl RouteClass {
    pub const ALL: [RouteClass; 4] = [
        RouteClass::Generate,
        RouteClass::Export,
        RouteClass::OpenAi,
        RouteClass::Anthropic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Generate => "generate",
            RouteClass::Export => "export",
            RouteClass::OpenAi => "openai",
            RouteClass::Anthropic => "anthropic",
        }
    }
}

/// `N/sec|min|hour`, optionally `,burst=M`: N requests per period, bursts of up to M.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests per period, reported as `X-RateLimit-Limit`.
    pub limit: u32,
    pub period: Duration,
    pub burst: u32,
}

impl Quota {
    pub fn parse(s: &str) -> Option<Quota> {
        let (rate, burst) = match s.split_once(',') {
            Some((rate, rest)) => {
                let b = rest
                    .trim()
                    .strip_prefix("burst=")?
                    .trim()
                    .parse::<u32>()
                    .ok()?;
                (rate, Some(b))
            }
            None => (s, None),
        };
        let (n, unit) = rate.trim().split_once('/')?;
        let limit: u32 = n.trim().parse().ok().filter(|n| *n >= 1)?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        let burst = burst.unwrap_or(limit);
        (burst >= 1).then_some(Quota {
            limit,
            period,
            burst,
        })
    }

    /// The GCRA emission interval: one request's worth of time.
    pub fn interval(&self) -> Duration {
        self.period / self.limit
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "sec",
            60 => "min",
            _ => "hour",
        };
        write!(f, "{}/{unit},burst={}", self.limit, self.burst)
    }
}

/// Quotas per route class, with per-user overrides that replace every class's quota for that
/// user.
#[derive(Debug, Clone, PartialEq)]
pub struct Quotas {
    pub generate: Quota,
    pub export: Quota,
    pub openai: Quota,
    pub anthropic: Quota,
    pub overrides: HashMap<String, Quota>,
    pub master_exempt: bool,
}

impl Quotas {
    /// The quota `key` gets on `class`: its own (a managed key's or a group tier's), its user's
    /// override, or the class's.
    pub fn for_key(&self, class: RouteClass, key: &LimitKey) -> Quota {
        match key.own_quota() {
            Some(quota) => quota,
            None => key
                .user()
                .and_then(|u| self.overrides.get(u).copied())
                .unwrap_or_else(|| self.for_class(class)),
        }
    }

    pub fn for_class(&self, class: RouteClass) -> Quota {
        match class {
            RouteClass::Generate => self.generate,
            RouteClass::Export => self.export,
            RouteClass::OpenAi => self.openai,
            RouteClass::Anthropic => self.anthropic,
        }
    }

    /// `alice=100/min;bob=5/min,burst=2`.
    pub fn parse_overrides(s: &str) -> Result<HashMap<String, Quota>, String> {
        let mut out = HashMap::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (user, quota) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not user=quota"))?;
            let quota = Quota::parse(quota).ok_or_else(|| {
                format!("{quota:?} is not a quota such as 100/min or 5/min,burst=2")
            })?;
            out.insert(user.trim().to_owned(), quota);
        }
        Ok(out)
    }
}

/// Who a budget belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    User(String),
    /// A managed key with a quota of its own, which replaces the route quotas for it.
    Key {
        id: String,
        quota: Quota,
    },
    /// A user signed in through an identity provider whose group tier sets a quota; it replaces
    /// the route quotas for that user (an entry in `SPARK_RATE_LIMIT_OVERRIDES` wins over it).
    Tier {
        user: String,
        quota: Quota,
    },
    Master,
    Ip(IpAddr),
}

impl LimitKey {
    /// A stable string for storage keys (hashed before it reaches Redis).
    pub fn id(&self) -> String {
        match self {
            LimitKey::User(u) => format!("user:{u}"),
            LimitKey::Key { id, .. } => format!("key:{id}"),
            // The same bucket name as the user's: one person, one bucket in Redis.
            LimitKey::Tier { user, .. } => format!("user:{user}"),
            LimitKey::Master => "master".to_owned(),
            LimitKey::Ip(ip) => format!("ip:{ip}"),
        }
    }

    /// A quota carried by the key itself, replacing the route's.
    pub fn own_quota(&self) -> Option<Quota> {
        match self {
            LimitKey::Key { quota, .. } | LimitKey::Tier { quota, .. } => Some(*quota),
            _ => None,
        }
    }

    pub fn user(&self) -> Option<&str> {
        match self {
            LimitKey::User(u) => Some(u),
            _ => None,
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `X-RateLimit-Limit`: requests per period.
    pub limit: u32,
    /// `X-RateLimit-Remaining`: whole requests that would be allowed right now.
    pub remaining: u32,
    /// `X-RateLimit-Reset`: until the bucket is full again.
    pub reset: Duration,
    /// Until the next request is allowed (zero when allowed).
    pub retry_after: Duration,
}

/// Whole seconds, rounded up: a client that waits this long is never early.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[async_trait]
pub trait Limiter: Send + Sync {
    async fn check(&self, class: RouteClass, key: &LimitKey) -> Decision;
    /// `memory` or `redis`, for health.
    fn backend(&self) -> &'static str;
    /// Whether the backend is working (Redis reachable); memory is always ok.
    fn ok(&self) -> bool;
    /// Periodic upkeep: forget keys whose buckets are full again, so memory stays bounded.
    fn maintain(&self);
}

/// Trusted proxies: addresses and CIDR blocks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (addr, prefix) = match part.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (part, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{part:?} is not an IP or CIDR"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{part:?} has a bad prefix length"))?,
                None => max,
            };
            nets.push((ip, prefix));
        }
        Ok(TrustedProxies(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(net, prefix)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    /// The client address: the peer, or when the peer is a trusted proxy the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left of an untrusted
    /// hop are whatever the client wrote, so they are never believed.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        for hop in header.rsplit(',').map(str::trim) {
            match parse_hop(hop) {
                Some(ip) if self.contains(ip) => continue,
                Some(ip) => return ip,
                None => return peer,
            }
        }
        peer
    }
}

/// One `X-Forwarded-For` hop: `ip`, `ip:port` or `[v6]:port` (some proxies append the port).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = hop.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_the_documented_syntax() {
        let q = Quota::parse("10/min").unwrap();
        assert_eq!(
            (q.limit, q.period, q.burst),
            (10, Duration::from_secs(60), 10)
        );
        assert_eq!(q.interval(), Duration::from_secs(6));
        let q = Quota::parse("600/min,burst=60").unwrap();
        assert_eq!((q.limit, q.burst), (600, 60));
        assert_eq!(
            Quota::parse("5/sec").unwrap().period,
            Duration::from_secs(1)
        );
        assert_eq!(
            Quota::parse("5/hour").unwrap().period,
            Duration::from_secs(3600)
        );
        for bad in [
            "",
            "10",
            "0/min",
            "10/day",
            "10/min,burst=0",
            "10/min,bursts=2",
            "x/min",
        ] {
            assert!(Quota::parse(bad).is_none(), "{bad}");
        }
        let o = Quotas::parse_overrides("alice=100/min;bob=5/min,burst=2").unwrap();
        assert_eq!(o["alice"].limit, 100);
        assert_eq!(o["bob"].burst, 2);
        assert!(Quotas::parse_overrides("alice").is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1, ::1").unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.9".parse().unwrap();
        assert_eq!(
            t.client_ip(stranger, Some("1.2.3.4")),
            stranger,
            "spoofed header ignored"
        );
        assert_eq!(t.client_ip(proxy, Some("203.0.113.7")), client);
        assert_eq!(
            t.client_ip(proxy, Some("1.2.3.4, 203.0.113.7, 10.9.9.9")),
            client,
            "right-most untrusted hop"
        );
        assert_eq!(t.client_ip(proxy, Some("garbage")), proxy);
        assert_eq!(t.client_ip(proxy, None), proxy);
        assert!(t.contains("::1".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
    }
}
