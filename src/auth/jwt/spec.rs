//! `SPARK_AUTH_ISSUERS_FILE`: the identity providers whose tokens the gateway accepts, read and
//! checked once at start-up.
//!
//! Every problem is reported together and none is fatal to the parser: the gateway refuses to
//! start on any of them (fail closed: an issuer that is half-configured would either let the
//! wrong people in or lock the right ones out). Secrets are never read from the file itself, only
//! the *name* of the environment variable that holds one, so the file can live in a ConfigMap.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use crate::ratelimit::Quota;
use crate::store::keys::{Budget, Period};

/// Issuers in one file at most: each costs a JWKS cache and a metric series.
pub const MAX_ISSUERS: usize = 32;
/// Tiers per issuer at most.
pub const MAX_TIERS: usize = 64;
/// The shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the
/// hash output (256 bits).
pub const MIN_HS256_SECRET: usize = 32;

/// Where an issuer's verification keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// A JWKS document: at this URL, or found through the issuer's OpenID discovery document.
    Jwks { url: Option<String> },
    /// A shared secret (HS256 only), read from the named environment variable.
    Hs256(SecretString),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Jwks { url } => f.debug_struct("Jwks").field("url", url).finish(),
            KeySource::Hs256(_) => f.write_str("Hs256(<redacted>)"),
        }
    }
}

/// Limits for the members of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub group: String,
    pub rate_limit: Option<Quota>,
    pub budget: Option<Budget>,
}

/// One accepted issuer, validated.
#[derive(Debug, Clone)]
pub struct IssuerSpec {
    /// The exact `iss` value its tokens carry.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    /// The claim naming the user (default `sub`).
    pub user_claim: String,
    /// The claim listing the user's groups, when the issuer sends one.
    pub groups_claim: Option<String>,
    /// Members of these groups reach the admin API.
    pub admin_groups: Vec<String>,
    /// In file order: a user in several tiers' groups gets the first.
    pub tiers: Vec<Tier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRaw {
    #[serde(default, alias = "issuers")]
    issuer: Vec<IssuerRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerRaw {
    issuer: String,
    #[serde(default)]
    audiences: Vec<String>,
    jwks_url: Option<String>,
    hs256_secret_env: Option<String>,
    user_claim: Option<String>,
    groups_claim: Option<String>,
    #[serde(default)]
    admin_groups: Vec<String>,
    #[serde(default, deserialize_with = "ordered_tiers")]
    tiers: Vec<(String, TierRaw)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierRaw {
    rate_limit: Option<String>,
    budget: Option<BudgetRaw>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetRaw {
    limit_usd: f64,
    period: String,
    limit_tokens: Option<i64>,
}

/// The tiers table in the order it was written: that order is the tiers' priority, and a map
/// would lose it.
fn ordered_tiers<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, TierRaw)>, D::Error> {
    struct Ordered;
    impl<'de> Visitor<'de> for Ordered {
        type Value = Vec<(String, TierRaw)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table of group name to tier")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, TierRaw>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Ordered)
}

/// Whether an address may be fetched over plain HTTP: only on this machine (tests, sidecars).
pub(super) fn secure_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "localhost" | "[::1]")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses the file's text. `json` picks the format (the file name's extension decides);
/// `secret` reads an environment variable named by `hs256_secret_env`.
pub fn parse(
    text: &str,
    json: bool,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<IssuerSpec>, Vec<String>> {
    let raw: FileRaw = if json {
        serde_json::from_str(text).map_err(|e| vec![format!("not valid JSON: {e}")])?
    } else {
        toml::from_str(text).map_err(|e| vec![format!("not valid TOML: {}", e.message())])?
    };
    let mut problems = Vec::new();
    if raw.issuer.is_empty() {
        problems.push("lists no [[issuer]]".to_owned());
    }
    if raw.issuer.len() > MAX_ISSUERS {
        problems.push(format!("lists more than {MAX_ISSUERS} issuers"));
    }
    let mut out: Vec<IssuerSpec> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in raw.issuer.into_iter().take(MAX_ISSUERS) {
        let at = r.issuer.clone();
        let mut bad = |p: String| problems.push(format!("issuer {at:?}: {p}"));
        if !secure_or_loopback(&r.issuer) {
            bad("the issuer must be an https:// URL (http:// only on a loopback host)".into());
        }
        if !seen.insert(r.issuer.clone()) {
            bad("listed twice".into());
        }
        let audiences: Vec<String> = r
            .audiences
            .into_iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            // A token for any audience would do: another application's tokens would pass.
            bad("audiences is empty; list the client ids its tokens are issued for".into());
        }
        let keys = match (r.jwks_url, r.hs256_secret_env) {
            (Some(_), Some(_)) => {
                bad("set jwks_url or hs256_secret_env, not both".into());
                None
            }
            (Some(url), None) if !secure_or_loopback(&url) => {
                bad("jwks_url must be https:// (http:// only on a loopback host)".into());
                None
            }
            (url, None) => Some(KeySource::Jwks { url }),
            (None, Some(var)) => match secret(&var) {
                Some(s) if s.len() >= MIN_HS256_SECRET => Some(KeySource::Hs256(s.into())),
                Some(_) => {
                    bad(format!(
                        "the secret in {var} is shorter than {MIN_HS256_SECRET} bytes"
                    ));
                    None
                }
                None => {
                    bad(format!("hs256_secret_env names {var}, which is unset"));
                    None
                }
            },
        };
        let user_claim = r.user_claim.unwrap_or_else(|| "sub".to_owned());
        if user_claim.is_empty() {
            bad("user_claim is empty".into());
        }
        if r.tiers.len() > MAX_TIERS {
            bad(format!("more than {MAX_TIERS} tiers"));
        }
        if !r.admin_groups.is_empty() && r.groups_claim.is_none() {
            bad("admin_groups needs groups_claim".into());
        }
        if !r.tiers.is_empty() && r.groups_claim.is_none() {
            bad("tiers need groups_claim".into());
        }
        let mut tiers = Vec::new();
        for (group, t) in r.tiers.into_iter().take(MAX_TIERS) {
            let rate_limit = match t.rate_limit.as_deref().map(Quota::parse) {
                Some(None) => {
                    bad(format!(
                        "tier {group:?}: rate_limit is not a quota such as 30/min or 5/min,burst=2"
                    ));
                    None
                }
                Some(q) => q,
                None => None,
            };
            let budget = t.budget.and_then(|b| {
                let period = Period::parse(&b.period);
                let ok_usd = b.limit_usd.is_finite() && b.limit_usd > 0.0 && b.limit_usd <= 1e9;
                let ok_tokens = b
                    .limit_tokens
                    .is_none_or(|n| (1..=crate::budget::MAX_TOKEN_LIMIT).contains(&n));
                match (period, ok_usd, ok_tokens) {
                    (Some(period), true, true) => Some(Budget {
                        limit_nusd: crate::store::nusd(b.limit_usd),
                        limit_tokens: b.limit_tokens,
                        period,
                    }),
                    _ => {
                        bad(format!(
                            "tier {group:?}: budget needs limit_usd above 0 (at most 1e9), period day, month or total, and limit_tokens from 1 if set"
                        ));
                        None
                    }
                }
            });
            tiers.push(Tier {
                group,
                rate_limit,
                budget,
            });
        }
        if let Some(keys) = keys {
            out.push(IssuerSpec {
                issuer: r.issuer,
                audiences,
                keys,
                user_claim,
                groups_claim: r.groups_claim,
                admin_groups: r.admin_groups,
                tiers,
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

impl IssuerSpec {
    /// The shared secret, for an HS256 issuer.
    pub fn hs256_secret(&self) -> Option<&[u8]> {
        match &self.keys {
            KeySource::Hs256(s) => Some(s.expose_secret().as_bytes()),
            KeySource::Jwks { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COGNITO: &str = r#"
[[issuer]]
issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf"
audiences = ["3n4b5c6d7e"]
user_claim = "cognito:username"
groups_claim = "cognito:groups"
admin_groups = ["spark-admins"]
[issuer.tiers.leads]
rate_limit = "300/min"
[issuer.tiers.artists]        # group name -> limits applied to its members
rate_limit = "30/min"
budget = { limit_usd = 20.0, period = "month" }

[[issuer]]
issuer = "https://lms.example.edu"
audiences = ["spark"]
hs256_secret_env = "LMS_SSO_SECRET"
"#;

    fn env(name: &str) -> Option<String> {
        (name == "LMS_SSO_SECRET").then(|| "s".repeat(40))
    }

    #[test]
    fn the_issue_example_parses_with_tiers_in_file_order() {
        let specs = parse(COGNITO, false, &env).unwrap();
        assert_eq!(specs.len(), 2);
        let c = &specs[0];
        assert_eq!(c.user_claim, "cognito:username");
        assert_eq!(c.groups_claim.as_deref(), Some("cognito:groups"));
        assert!(matches!(c.keys, KeySource::Jwks { url: None }));
        let groups: Vec<&str> = c.tiers.iter().map(|t| t.group.as_str()).collect();
        assert_eq!(groups, ["leads", "artists"]);
        let artists = &c.tiers[1];
        assert_eq!(artists.rate_limit, Quota::parse("30/min"));
        assert_eq!(
            artists.budget,
            Some(Budget {
                limit_nusd: 20_000_000_000,
                limit_tokens: None,
                period: Period::Month
            })
        );
        let lms = &specs[1];
        assert_eq!(lms.user_claim, "sub");
        assert_eq!(lms.hs256_secret().map(<[u8]>::len), Some(40));
        // The secret never shows in a debug print.
        assert!(!format!("{specs:?}").contains("ssss"));
    }

    #[test]
    fn json_reads_the_same_with_tiers_in_order() {
        let text = r#"{"issuers": [{"issuer": "http://127.0.0.1:9/", "audiences": ["a"],
            "groups_claim": "groups",
            "tiers": {"zeta": {"rate_limit": "5/min"}, "alpha": {"rate_limit": "9/min"}}}]}"#;
        let specs = parse(text, true, &env).unwrap();
        let groups: Vec<&str> = specs[0].tiers.iter().map(|t| t.group.as_str()).collect();
        assert_eq!(groups, ["zeta", "alpha"]);
    }

    #[test]
    fn every_mistake_is_reported_and_none_is_silently_dropped() {
        let text = r#"
[[issuer]]
issuer = "http://idp.example.com"
audiences = []
jwks_url = "http://idp.example.com/jwks"
admin_groups = ["x"]
[issuer.tiers.t]
rate_limit = "lots"
budget = { limit_usd = -1.0, period = "week" }

[[issuer]]
issuer = "https://lms.example.edu"
audiences = ["spark"]
hs256_secret_env = "SHORT"

[[issuer]]
issuer = "https://lms.example.edu"
audiences = ["spark"]
hs256_secret_env = "MISSING"
"#;
        let short = |n: &str| (n == "SHORT").then(|| "tooshort".to_owned());
        let problems = parse(text, false, &short).unwrap_err().join("\n");
        for expected in [
            "the issuer must be an https://",
            "audiences is empty",
            "jwks_url must be https://",
            "admin_groups needs groups_claim",
            "rate_limit is not a quota",
            "budget needs limit_usd",
            "shorter than 32 bytes",
            "listed twice",
            "MISSING, which is unset",
        ] {
            assert!(
                problems.contains(expected),
                "{expected} missing in:\n{problems}"
            );
        }
        // A secret's value is never repeated, even a wrong one.
        assert!(!problems.contains("tooshort"));
    }

    #[test]
    fn unknown_fields_and_empty_files_are_refused() {
        assert!(
            parse(
                "[[issuer]]\nissuer = \"https://a\"\naudience = [\"x\"]\n",
                false,
                &env
            )
            .is_err()
        );
        assert!(parse("", false, &env).is_err());
        assert!(parse("{", true, &env).is_err());
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(secure_or_loopback("https://idp.example.com"));
        assert!(secure_or_loopback("http://127.0.0.1:8080/jwks"));
        assert!(secure_or_loopback("http://localhost/x"));
        assert!(secure_or_loopback("http://[::1]:9/x"));
        assert!(!secure_or_loopback("http://127.0.0.1.evil.example/x"));
        assert!(!secure_or_loopback("http://idp.example.com"));
        assert!(!secure_or_loopback("ftp://127.0.0.1"));
    }
}
