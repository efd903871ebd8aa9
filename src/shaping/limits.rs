//! `SPARK_PROVIDER_LIMITS`: the capacity the gateway may use at each provider, per provider or
//! per model, written as operators read their providers' limit pages.
//!
//! `openai:gpt-4.1=500rpm,200000tpm,64inflight;anthropic=50inflight`: rules separated by `;`, each
//! `provider[:model]=` and a comma list of `Nrpm` (requests per minute), `Ntpm` (input + output
//! tokens per minute) and `Ninflight` (requests in flight at once). A model's own rule governs
//! that model; the provider's rule governs its other models (providers count their limits per
//! model, so one budget shared by every model would be wrong in both directions).

use crate::providers::ProviderId;

/// One rule's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub inflight: Option<u32>,
}

/// A rule: which traffic (a provider, or one model of it) and its capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub provider: ProviderId,
    pub model: Option<String>,
    pub capacity: Capacity,
}

/// Parses the variable's value; the error names the rule and what is wrong with it.
pub fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules: Vec<Rule> = Vec::new();
    for raw in text.split(';').map(str::trim).filter(|r| !r.is_empty()) {
        let (target, limits) = raw
            .split_once('=')
            .ok_or_else(|| format!("{raw:?} is not provider[:model]=limits"))?;
        let (provider, model) = match target.trim().split_once(':') {
            Some((p, m)) if !m.trim().is_empty() => (p.trim(), Some(m.trim().to_owned())),
            Some(_) => return Err(format!("{raw:?}: the model after ':' is empty")),
            None => (target.trim(), None),
        };
        let provider = ProviderId::parse(provider)
            .filter(|p| *p != ProviderId::Simulator)
            .ok_or_else(|| format!("{raw:?}: {provider:?} is not anthropic or openai"))?;
        let mut capacity = Capacity::default();
        for limit in limits.split(',').map(str::trim) {
            let (slot, number) = if let Some(n) = limit.strip_suffix("rpm") {
                (&mut capacity.rpm, n)
            } else if let Some(n) = limit.strip_suffix("tpm") {
                (&mut capacity.tpm, n)
            } else if let Some(n) = limit.strip_suffix("inflight") {
                (&mut capacity.inflight, n)
            } else {
                return Err(format!("{raw:?}: {limit:?} is not Nrpm, Ntpm or Ninflight"));
            };
            let n: u32 = number
                .trim()
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{raw:?}: {limit:?} needs a whole number of at least 1"))?;
            if slot.replace(n).is_some() {
                return Err(format!("{raw:?}: {limit:?} is given twice"));
            }
        }
        if rules
            .iter()
            .any(|r| r.provider == provider && r.model == model)
        {
            return Err(format!("{raw:?}: a second rule for the same traffic"));
        }
        rules.push(Rule {
            provider,
            model,
            capacity,
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let rules =
            parse("openai:gpt-4.1=500rpm,200000tpm,64inflight; anthropic=50inflight").unwrap();
        assert_eq!(
            rules,
            vec![
                Rule {
                    provider: ProviderId::OpenAi,
                    model: Some("gpt-4.1".into()),
                    capacity: Capacity {
                        rpm: Some(500),
                        tpm: Some(200_000),
                        inflight: Some(64)
                    },
                },
                Rule {
                    provider: ProviderId::Anthropic,
                    model: None,
                    capacity: Capacity {
                        rpm: None,
                        tpm: None,
                        inflight: Some(50)
                    },
                },
            ]
        );
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("openai", "provider[:model]=limits"),
            ("mistral=5rpm", "not anthropic or openai"),
            ("simulator=5rpm", "not anthropic or openai"),
            ("openai=5rps", "not Nrpm"),
            ("openai=0rpm", "at least 1"),
            ("openai=5rpm,6rpm", "given twice"),
            ("openai=5rpm;openai=6rpm", "second rule"),
            ("openai:=5rpm", "model after ':' is empty"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
