//! The reader behind [`Config::from_source`](super::Config::from_source): reads only declared
//! variables, records what it read for `check-config`, and collects every problem instead of
//! stopping at the first.

use std::time::Duration;

use secrecy::SecretString;

use super::Source;
use super::parse::{fmt_duration, is_loopback_url, parse_duration, parse_size, split_list};
use super::vars::{self, Kind, Var};
use crate::providers::{ProviderId, UpstreamConfig};
use crate::ratelimit::Quota;

/// Reads declared variables, records what it read, collects problems.
pub(super) struct Reader<'a> {
    src: &'a dyn Source,
    pub(super) problems: Vec<String>,
    pub(super) read: Vec<(&'static str, String)>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(src: &'a dyn Source) -> Self {
        Reader {
            src,
            problems: Vec::new(),
            read: Vec::new(),
        }
    }

    pub(super) fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    /// The declared variable's set value, or its default; recorded for `check-config`.
    pub(super) fn raw(&mut self, name: &str) -> (Option<&'static Var>, Option<String>) {
        let Some(var) = vars::find(name) else {
            // A bug, not an operator's mistake; reported rather than panicking.
            self.problem(format!("{name}: read but not declared in config::vars"));
            return (None, None);
        };
        let set = self
            .src
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let value = set.or_else(|| var.default.map(str::to_owned));
        let shown = match (&value, var.secret()) {
            (None, _) => "<unset>".to_owned(),
            (Some(_), true) => "<redacted>".to_owned(),
            (Some(v), false) => v.clone(),
        };
        self.read.push((var.name, shown));
        (Some(var), value)
    }

    pub(super) fn text(&mut self, name: &str) -> Option<String> {
        self.raw(name).1
    }

    /// A variable the operator named in a file (an HS256 issuer's secret): not in the table, so
    /// never printed by `check-config`, read as it is.
    pub(super) fn named_elsewhere(&self, name: &str) -> Option<String> {
        self.src
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn secret(&mut self, name: &str) -> Option<SecretString> {
        self.raw(name).1.map(SecretString::from)
    }

    pub(super) fn list(&mut self, name: &str) -> Vec<String> {
        self.text(name).map(|s| split_list(&s)).unwrap_or_default()
    }

    /// A text value parsed at the read site; `None` when unset or (with a problem) invalid.
    pub(super) fn parsed<T>(
        &mut self,
        name: &str,
        expected: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let raw = self.text(name)?;
        let parsed = f(&raw);
        if parsed.is_none() {
            self.problem(format!("{name}: {raw:?} is not {expected}"));
        }
        parsed
    }

    /// Like [`Reader::parsed`] for parsers that say why a value is wrong.
    pub(super) fn parsed_with<T>(
        &mut self,
        name: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.text(name)?;
        match f(&raw) {
            Ok(v) => Some(v),
            Err(why) => {
                self.problem(format!("{name}: {why}"));
                None
            }
        }
    }

    /// A value of the declared kind. An invalid value is a problem and the default stands in,
    /// so reading goes on and reports the next problem too.
    pub(super) fn typed<T>(
        &mut self,
        name: &str,
        f: impl Fn(&str, Kind) -> Option<T>,
    ) -> Option<T> {
        let (var, value) = self.raw(name);
        let (var, value) = (var?, value?);
        if let Some(v) = f(&value, var.kind) {
            return Some(v);
        }
        self.problem(format!("{name}: {value:?} is not {}", expected(var.kind)));
        var.default.and_then(|d| f(d, var.kind))
    }

    pub(super) fn duration(&mut self, name: &str) -> Duration {
        self.typed(name, |s, kind| match kind {
            Kind::Duration { max } => parse_duration(s).filter(|d| *d <= max),
            _ => None,
        })
        .unwrap_or_default()
    }

    pub(super) fn size(&mut self, name: &str) -> usize {
        self.typed(name, |s, _| parse_size(s)).unwrap_or_default()
    }

    pub(super) fn bool(&mut self, name: &str) -> bool {
        self.typed(name, |s, _| s.parse::<bool>().ok())
            .unwrap_or_default()
    }

    pub(super) fn int(&mut self, name: &str) -> u64 {
        self.typed(name, |s, kind| match kind {
            Kind::Int { min, max } => s.parse::<u64>().ok().filter(|v| (min..=max).contains(v)),
            _ => None,
        })
        .unwrap_or_default()
    }

    pub(super) fn float(&mut self, name: &str) -> f64 {
        self.typed(name, |s, kind| match kind {
            Kind::Float { min, max, open_min } => s
                .parse::<f64>()
                .ok()
                .filter(|v| *v <= max && (*v > min || (!open_min && *v == min))),
            _ => None,
        })
        .unwrap_or_default()
    }

    pub(super) fn choice(&mut self, name: &str) -> String {
        self.typed(name, |s, kind| match kind {
            Kind::Choice(options) => options.contains(&s).then(|| s.to_owned()),
            _ => None,
        })
        .unwrap_or_default()
    }

    pub(super) fn quota(&mut self, name: &str) -> Quota {
        let default = vars::find(name)
            .and_then(|v| v.default)
            .and_then(Quota::parse)
            .unwrap_or(Quota {
                limit: 60,
                period: Duration::from_secs(60),
                burst: 60,
            });
        self.parsed(
            name,
            "a quota such as 10/min or 600/min,burst=60",
            Quota::parse,
        )
        .unwrap_or(default)
    }

    /// A provider's settings: present only when its key is set.
    pub(super) fn upstream(
        &mut self,
        key_var: &str,
        url_var: &str,
        models_var: &str,
        allow_insecure: bool,
    ) -> Option<UpstreamConfig> {
        let key = self.secret(key_var);
        let base_url = self
            .text(url_var)
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let models = self.list(models_var);
        let key = key?;
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            self.problem(format!("{url_var}: {base_url:?} is not an http(s) URL"));
        } else if base_url.starts_with("http://") && !is_loopback_url(&base_url) && !allow_insecure
        {
            // The provider key would cross the network in clear text.
            self.problem(format!(
                "{url_var}: plain http:// to a non-loopback host sends the provider key in clear text; use https:// or set SPARK_ALLOW_INSECURE_UPSTREAM=true"
            ));
        }
        if models.is_empty() {
            self.problem(format!("{models_var}: must list at least one model"));
        }
        Some(UpstreamConfig {
            api_key: key,
            base_url,
            models,
        })
    }

    pub(super) fn provider_order(&mut self, anthropic: bool, openai: bool) -> Vec<ProviderId> {
        let Some(list) = self.text("SPARK_PROVIDER_ORDER") else {
            let mut order = Vec::new();
            if anthropic {
                order.push(ProviderId::Anthropic);
            }
            if openai {
                order.push(ProviderId::OpenAi);
            }
            if order.is_empty() {
                order.push(ProviderId::Simulator);
            }
            return order;
        };
        let mut order = Vec::new();
        for name in split_list(&list) {
            match ProviderId::parse(&name) {
                Some(ProviderId::Anthropic) if !anthropic => self.problem(
                    "SPARK_PROVIDER_ORDER: names anthropic, but ANTHROPIC_API_KEY is not set".into(),
                ),
                Some(ProviderId::OpenAi) if !openai => self.problem(
                    "SPARK_PROVIDER_ORDER: names openai, but OPENAI_API_KEY is not set".into(),
                ),
                Some(p) if order.contains(&p) => {
                    self.problem(format!("SPARK_PROVIDER_ORDER: {name} is listed twice"))
                }
                Some(p) => order.push(p),
                None => self.problem(format!(
                    "SPARK_PROVIDER_ORDER: unknown provider {name:?}; expected anthropic, openai or simulator"
                )),
            }
        }
        if order.is_empty() {
            self.problem("SPARK_PROVIDER_ORDER: must name at least one provider".into());
        }
        order
    }
}

/// What a value of `kind` looks like, for error messages.
fn expected(kind: Kind) -> String {
    match kind {
        Kind::Text | Kind::Secret => "valid".to_owned(),
        Kind::Bool => "true or false".to_owned(),
        Kind::Duration { max } => format!(
            "a duration such as 500ms, 30s, 5m or 1h, at most {}",
            fmt_duration(max)
        ),
        Kind::Size => "a size such as 512KiB or 256MiB".to_owned(),
        Kind::Int { min, max } => format!("a whole number from {min} to {max}"),
        Kind::Float { min, max, open_min } => {
            let low = if open_min { "above" } else { "from" };
            format!("a number {low} {min} to {max}")
        }
        Kind::Choice(options) => options.join(", "),
    }
}
