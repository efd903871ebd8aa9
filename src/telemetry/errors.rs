//! The error tracker: every error exit grouped by fingerprint, with severity, counts and first and
//! last seen, bounded in memory; high and critical events optionally forwarded to Sentry.
//!
//! A fingerprint is the error kind, the route template and the message with numbers and ids
//! masked, so "upstream timed out after 20s for gen_ab12…" and the same failure a minute later
//! are one group. Severity says who should care: low for callers' mistakes, medium for upstream
//! hiccups a retry or fallback absorbed, high for requests that failed after fallback and for
//! circuits opening, critical for panics and internal errors. At most `max_groups` groups are
//! kept; when a new one arrives the least frequent is folded into one "other" group, so the
//! memory is bounded and the top groups by count survive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

use regex::Regex;
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity of an error response, from its API code.
    pub fn of_code(code: &str) -> Severity {
        match code {
            "internal_error" => Severity::Critical,
            "upstream_error" | "upstream_timeout" | "providers_unavailable" => Severity::High,
            // Capacity shaping doing its job under a burst: worth watching, not paging.
            "overloaded" | "providers_busy" => Severity::Medium,
            _ => Severity::Low,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One group of identical errors.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorGroup {
    pub fingerprint: String,
    pub kind: String,
    pub route: String,
    pub message: String,
    pub severity: Severity,
    pub count: u64,
    /// Unix milliseconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

static MASKS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
            "<uuid>",
        ),
        (r"\b(?:gen_|msg_|chatcmpl-)?[0-9a-fA-F]{12,}\b", "<id>"),
        (r"\d+(?:\.\d+)?", "#"),
    ]
    .into_iter()
    .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, r)))
    .collect()
});

/// The message with numbers and ids replaced, so recurrences group together.
pub fn mask(message: &str) -> String {
    MASKS.iter().fold(message.to_owned(), |m, (re, with)| {
        re.replace_all(&m, *with).into_owned()
    })
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub struct ErrorTracker {
    groups: Mutex<HashMap<String, ErrorGroup>>,
    max_groups: usize,
    totals: [AtomicU64; 4],
    metrics_counter: prometheus::IntCounterVec,
    sentry: Option<sentry::Client>,
}

impl ErrorTracker {
    pub fn new(
        max_groups: usize,
        metrics_counter: prometheus::IntCounterVec,
        sentry: Option<sentry::Client>,
    ) -> Self {
        ErrorTracker {
            groups: Mutex::new(HashMap::new()),
            max_groups: max_groups.max(2),
            totals: Default::default(),
            metrics_counter,
            sentry,
        }
    }

    /// Records one error. `message` must already be free of secrets and user content (callers
    /// pass error causes, which never hold keys, prompts or upstream bodies).
    pub fn record(&self, kind: &str, route: &str, message: &str, severity: Severity) {
        self.totals[severity.index()].fetch_add(1, Ordering::Relaxed);
        self.metrics_counter
            .with_label_values(&[severity.as_str()])
            .inc();
        let masked = mask(message);
        let digest = Sha256::digest(format!("{kind}\n{route}\n{masked}").as_bytes());
        let fingerprint: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let now = unix_ms(SystemTime::now());
        {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(g) = groups.get_mut(&fingerprint) {
                g.count += 1;
                g.last_seen = now;
            } else {
                // One slot is kept for the "other" group.
                if groups.len() + usize::from(!groups.contains_key("other")) >= self.max_groups {
                    self.fold_least_frequent(&mut groups, now);
                }
                groups.insert(
                    fingerprint.clone(),
                    ErrorGroup {
                        fingerprint: fingerprint.clone(),
                        kind: kind.to_owned(),
                        route: route.to_owned(),
                        message: masked.clone(),
                        severity,
                        count: 1,
                        first_seen: now,
                        last_seen: now,
                    },
                );
            }
        }
        if let Some(client) = self.sentry.as_ref().filter(|_| severity >= Severity::High) {
            let event = sentry::protocol::Event {
                message: Some(masked),
                level: if severity == Severity::Critical {
                    sentry::Level::Fatal
                } else {
                    sentry::Level::Error
                },
                fingerprint: vec![fingerprint.into()].into(),
                tags: [
                    ("kind".to_owned(), kind.to_owned()),
                    ("route".to_owned(), route.to_owned()),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            };
            client.capture_event(event, None);
        }
    }

    /// Folds the least frequent group into the "other" group.
    fn fold_least_frequent(&self, groups: &mut HashMap<String, ErrorGroup>, now: u64) {
        let victim = groups
            .iter()
            .filter(|(k, _)| k.as_str() != "other")
            .min_by_key(|(_, g)| (g.count, g.last_seen))
            .map(|(k, _)| k.clone());
        let Some(victim) = victim.and_then(|k| groups.remove(&k)) else {
            return;
        };
        let other = groups
            .entry("other".to_owned())
            .or_insert_with(|| ErrorGroup {
                fingerprint: "other".to_owned(),
                kind: "other".to_owned(),
                route: "*".to_owned(),
                message: "less frequent errors, aggregated".to_owned(),
                severity: Severity::Low,
                count: 0,
                first_seen: victim.first_seen,
                last_seen: now,
            });
        other.count += victim.count;
        other.severity = other.severity.max(victim.severity);
        other.first_seen = other.first_seen.min(victim.first_seen);
        other.last_seen = other.last_seen.max(victim.last_seen);
    }

    /// Groups, most frequent first.
    pub fn groups(&self) -> Vec<ErrorGroup> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<ErrorGroup> = groups.values().cloned().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
        v
    }

    pub fn totals(&self) -> [(Severity, u64); 4] {
        Severity::ALL.map(|s| (s, self.totals[s.index()].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(max: usize) -> ErrorTracker {
        let c =
            prometheus::IntCounterVec::new(prometheus::Opts::new("e", "e"), &["severity"]).unwrap();
        ErrorTracker::new(max, c, None)
    }

    #[test]
    fn numbers_and_ids_are_masked_so_recurrences_group() {
        assert_eq!(
            mask("anthropic: no answer within 20s for gen_0123456789abcdef (attempt 2)"),
            "anthropic: no answer within #s for <id> (attempt #)"
        );
        assert_eq!(
            mask("request 9f1c2d3e-1111-2222-3333-444455556666 failed"),
            "request <uuid> failed"
        );
        let t = tracker(10);
        t.record(
            "upstream_error",
            "/api/spark/generate",
            "HTTP 500 after 1203ms",
            Severity::High,
        );
        t.record(
            "upstream_error",
            "/api/spark/generate",
            "HTTP 500 after 87ms",
            Severity::High,
        );
        t.record(
            "upstream_error",
            "/api/export",
            "HTTP 500 after 87ms",
            Severity::High,
        );
        let g = t.groups();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].count, 2);
        assert!(g[0].first_seen <= g[0].last_seen);
        assert_eq!(t.totals()[2], (Severity::High, 3));
    }

    #[test]
    fn memory_is_bounded_and_the_least_frequent_fold_into_other() {
        let t = tracker(4);
        for _ in 0..5 {
            t.record("a", "/r", "frequent", Severity::Low);
        }
        for i in 0..20 {
            t.record(
                "b",
                "/r",
                &format!("rare kind {}", ["x", "y", "z", "w", "v"][i % 5]),
                Severity::Medium,
            );
        }
        let g = t.groups();
        assert!(g.len() <= 4, "{g:?}");
        assert!(
            g.iter().any(|g| g.message == "frequent" && g.count == 5),
            "the top group survives"
        );
        let total: u64 = g.iter().map(|g| g.count).sum();
        assert_eq!(total, 25, "nothing is lost, only aggregated");
        assert!(
            g.iter()
                .any(|g| g.fingerprint == "other" && g.severity == Severity::Medium)
        );
    }

    #[test]
    fn severity_follows_the_error_code() {
        assert_eq!(Severity::of_code("internal_error"), Severity::Critical);
        assert_eq!(Severity::of_code("upstream_error"), Severity::High);
        assert_eq!(Severity::of_code("providers_unavailable"), Severity::High);
        assert_eq!(Severity::of_code("unauthorized"), Severity::Low);
        assert_eq!(Severity::of_code("rate_limited"), Severity::Low);
    }
}
