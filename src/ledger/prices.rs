//! What a model costs: USD per million input and output tokens.
//!
//! A built-in table covers every model of the default allow-lists (each entry names its source
//! and the date it was read); `SPARK_PRICES_FILE` adds models or replaces entries. A provider
//! reports dated snapshots (`claude-sonnet-4-5-20250929`, `gpt-4.1-2025-04-14`), so a name
//! matches an entry exactly or as the entry followed by a date suffix, never as a looser prefix:
//! `gpt-4.1-mini` must not be priced as `gpt-4.1`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Price {
    const fn usd(input_per_million: f64, output_per_million: f64) -> Price {
        Price {
            input_per_million,
            output_per_million,
        }
    }

    /// The cost of a call in nano-dollars: 1 USD per million tokens is 1,000 nano-dollars a
    /// token.
    pub fn cost_nusd(&self, input_tokens: u64, output_tokens: u64) -> i64 {
        let nusd = input_tokens as f64 * self.input_per_million * 1_000.0
            + output_tokens as f64 * self.output_per_million * 1_000.0;
        if nusd.is_finite() && nusd > 0.0 {
            nusd.round().min(i64::MAX as f64) as i64
        } else {
            0
        }
    }
}

/// The built-in prices.
const BUILT_IN: &[(&str, Price)] = &[
    // The simulator costs nothing, and is priced so it is not counted as unpriced.
    ("spark-simulator-1", Price::usd(0.0, 0.0)),
    // Anthropic, https://www.anthropic.com/pricing#api (read 2025-11-25).
    ("claude-opus-4-5", Price::usd(5.0, 25.0)),
    ("claude-opus-4-1", Price::usd(15.0, 75.0)),
    ("claude-opus-4", Price::usd(15.0, 75.0)),
    ("claude-sonnet-4-5", Price::usd(3.0, 15.0)),
    ("claude-sonnet-4", Price::usd(3.0, 15.0)),
    ("claude-haiku-4-5", Price::usd(1.0, 5.0)),
    ("claude-3-5-haiku", Price::usd(0.8, 4.0)),
    // OpenAI, https://openai.com/api/pricing/ (read 2025-11-25; standard tier).
    ("gpt-5", Price::usd(1.25, 10.0)),
    ("gpt-5-mini", Price::usd(0.25, 2.0)),
    ("gpt-5-nano", Price::usd(0.05, 0.4)),
    ("gpt-4.1", Price::usd(2.0, 8.0)),
    ("gpt-4.1-mini", Price::usd(0.4, 1.6)),
    ("gpt-4.1-nano", Price::usd(0.1, 0.4)),
    ("gpt-4o", Price::usd(2.5, 10.0)),
    ("gpt-4o-mini", Price::usd(0.15, 0.6)),
    ("o4-mini", Price::usd(1.1, 4.4)),
    ("o3", Price::usd(2.0, 8.0)),
];

/// The prices in force.
#[derive(Debug, Clone)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable {
            prices: BUILT_IN
                .iter()
                .map(|(m, p)| ((*m).to_owned(), *p))
                .collect(),
        }
    }
}

impl PriceTable {
    /// The built-in table with the entries of a `SPARK_PRICES_FILE` (a JSON object of model
    /// name to `{"inputPerMillion", "outputPerMillion"}`) laid over it.
    pub fn with_overrides(text: &str) -> Result<PriceTable, String> {
        let extra: BTreeMap<String, Price> = serde_json::from_str(text).map_err(|e| {
            format!(
                "expected a JSON object of model name to {{\"inputPerMillion\": n, \"outputPerMillion\": n}}: {e}"
            )
        })?;
        let mut table = PriceTable::default();
        for (model, price) in extra {
            let ok = |v: f64| v.is_finite() && (0.0..=1_000_000.0).contains(&v);
            if model.is_empty() || model.len() > 200 {
                return Err("a model name is empty or longer than 200 characters".to_owned());
            }
            if !ok(price.input_per_million) || !ok(price.output_per_million) {
                return Err(format!(
                    "the price of {model} must be between 0 and 1,000,000 USD per million tokens"
                ));
            }
            table.prices.insert(model, price);
        }
        Ok(table)
    }

    /// The entry a model name is priced by, with the entry's own name (a bounded label value).
    pub fn lookup(&self, model: &str) -> Option<(&str, Price)> {
        if let Some((name, price)) = self.prices.get_key_value(model) {
            return Some((name.as_str(), *price));
        }
        // A dated snapshot: the longest entry followed by `-` and only digits and dashes.
        self.prices
            .iter()
            .filter(|(name, _)| {
                model
                    .strip_prefix(name.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|date| {
                        !date.is_empty() && date.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                    })
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(name, price)| (name.as_str(), *price))
    }

    /// Every priced model (for the configuration check).
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.prices.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_priced_as_their_model_and_nothing_looser_matches() {
        let t = PriceTable::default();
        assert_eq!(
            t.lookup("claude-sonnet-4-5-20250929").map(|(n, _)| n),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            t.lookup("gpt-4.1-mini-2025-04-14").map(|(n, _)| n),
            Some("gpt-4.1-mini")
        );
        assert_eq!(t.lookup("gpt-4.1").map(|(n, _)| n), Some("gpt-4.1"));
        assert_eq!(t.lookup("gpt-4.1-turbo"), None);
        assert_eq!(t.lookup("gpt-4.1-"), None);
        assert_eq!(t.lookup("llama-3"), None);
    }

    #[test]
    fn costs_are_exact_in_nano_dollars() {
        let p = Price::usd(3.0, 15.0);
        // 1,000 in at $3/M = $0.003; 2,000 out at $15/M = $0.03.
        assert_eq!(p.cost_nusd(1_000, 2_000), 33_000_000);
        assert_eq!(Price::usd(0.15, 0.6).cost_nusd(1, 1), 750);
        assert_eq!(Price::usd(0.0, 0.0).cost_nusd(u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn overrides_add_and_replace_and_bad_files_are_refused() {
        let t = PriceTable::with_overrides(
            r#"{"gpt-4o": {"inputPerMillion": 1, "outputPerMillion": 2},
                "house-model": {"inputPerMillion": 0.5, "outputPerMillion": 0.5}}"#,
        )
        .unwrap();
        assert_eq!(t.lookup("gpt-4o").unwrap().1, Price::usd(1.0, 2.0));
        assert!(t.lookup("house-model").is_some());
        assert!(t.lookup("claude-haiku-4-5").is_some());
        for bad in [
            "[]",
            r#"{"m": {"inputPerMillion": -1, "outputPerMillion": 1}}"#,
            r#"{"m": {"inputPerMillion": 1}}"#,
            r#"{"m": {"inputPerMillion": 1, "outputPerMillion": 1, "x": 1}}"#,
        ] {
            assert!(PriceTable::with_overrides(bad).is_err(), "{bad}");
        }
    }
}
