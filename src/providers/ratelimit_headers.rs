//! What a provider says is left of our rate limit, read from its response headers, so the
//! gateway's own budget (`shaping`) can shrink before the provider starts answering 429.
//!
//! OpenAI sends `x-ratelimit-remaining-requests` / `-tokens` with `x-ratelimit-reset-requests` /
//! `-tokens` as Go durations (`1s`, `6m0s`, `20ms`); Anthropic sends
//! `anthropic-ratelimit-requests-remaining` / `-tokens-remaining` with `-reset` as RFC 3339
//! times. Both come on successes and on 429s.
//!
//! The reading is handed over through a task-local slot around one attempt ([`capture`]) rather
//! than through every provider's return type: the headers are seen deep inside the HTTP client
//! helper, and only the router, which knows the attempt's lane, acts on them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::HeaderMap;

/// `(remaining, time until it resets)` for requests and for tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamLimits {
    pub requests: Option<(u64, Duration)>,
    pub tokens: Option<(u64, Duration)>,
}

impl UpstreamLimits {
    /// A 429 that says only `retry-after`: no request until then.
    pub fn nothing_until(wait: Duration) -> Self {
        UpstreamLimits {
            requests: Some((0, wait)),
            tokens: None,
        }
    }

    /// The limits in `headers`, if the provider sent any.
    pub fn from_headers(headers: &HeaderMap, now: time::OffsetDateTime) -> Option<Self> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| text(name).and_then(|v| v.trim().parse::<u64>().ok());
        let openai =
            |remaining: &str, reset: &str| Some((number(remaining)?, go_duration(text(reset)?)?));
        let anthropic = |remaining: &str, reset: &str| {
            let at = time::OffsetDateTime::parse(
                text(reset)?.trim(),
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            Some((
                number(remaining)?,
                Duration::try_from(at - now).unwrap_or(Duration::ZERO),
            ))
        };
        let limits = UpstreamLimits {
            requests: openai(
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            )
            .or_else(|| {
                anthropic(
                    "anthropic-ratelimit-requests-remaining",
                    "anthropic-ratelimit-requests-reset",
                )
            }),
            tokens: openai("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens").or_else(
                || {
                    anthropic(
                        "anthropic-ratelimit-tokens-remaining",
                        "anthropic-ratelimit-tokens-reset",
                    )
                },
            ),
        };
        (limits != UpstreamLimits::default()).then_some(limits)
    }
}

/// A Go duration as OpenAI writes it: `1h2m3.5s`, `6m0s`, `20ms`, `0.5s`. At most a day.
fn go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    let mut total = 0.0_f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|i| *i > 0)?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += value * unit;
        rest = &rest[len..];
    }
    (total.is_finite() && total <= 86_400.0).then(|| Duration::from_secs_f64(total))
}

tokio::task_local! {
    static SEEN: Arc<Mutex<Option<UpstreamLimits>>>;
}

/// Runs one attempt and returns, beside its output, the last limits a provider reported while
/// it ran.
pub async fn capture<F: std::future::Future>(attempt: F) -> (F::Output, Option<UpstreamLimits>) {
    let slot = Arc::new(Mutex::new(None));
    let out = SEEN.scope(Arc::clone(&slot), attempt).await;
    let seen = *slot.lock().unwrap_or_else(|p| p.into_inner());
    (out, seen)
}

/// Notes the limits in a response's headers for the attempt being [`capture`]d. Outside one
/// (no lane governs the call) the headers are not even read.
pub fn report(headers: &HeaderMap) {
    let _ = SEEN.try_with(|slot| {
        if let Some(limits) = UpstreamLimits::from_headers(headers, time::OffsetDateTime::now_utc())
        {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(limits);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_static(k),
                    v.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn go_durations_as_openai_writes_them() {
        assert_eq!(go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        for bad in ["", "s", "5", "5x", "1.2.3s", "999999h"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn both_providers_headers_are_read() {
        let now = time::OffsetDateTime::parse(
            "2026-11-30T12:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let openai = headers(&[
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "149000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(
            UpstreamLimits::from_headers(&openai, now),
            Some(UpstreamLimits {
                requests: Some((59, Duration::from_secs(1))),
                tokens: Some((149_000, Duration::from_secs(360))),
            })
        );
        let anthropic = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-11-30T12:00:30Z"),
        ]);
        assert_eq!(
            UpstreamLimits::from_headers(&anthropic, now),
            Some(UpstreamLimits {
                requests: Some((0, Duration::from_secs(30))),
                tokens: None,
            })
        );
        assert_eq!(
            UpstreamLimits::from_headers(
                &headers(&[("x-ratelimit-remaining-requests", "junk")]),
                now
            ),
            None
        );
    }

    #[tokio::test]
    async fn a_report_reaches_the_capture_around_it_and_nothing_else() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "2s"),
        ]);
        report(&h);
        let ((), seen) = capture(async { report(&h) }).await;
        assert_eq!(seen.unwrap().requests, Some((3, Duration::from_secs(2))));
        let ((), seen) = capture(async {}).await;
        assert_eq!(seen, None);
    }
}
