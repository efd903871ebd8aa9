//! What each request of a run is: the named scenarios against a gateway, a weighted mix of them,
//! or one custom request.
//!
//! A scenario is a fixed request shape so that runs are comparable: `generate-hit` repeats one
//! prompt (after warm-up every answer is a cache hit), `generate-miss` makes every prompt unique
//! with a per-run nonce and a sequence number (so even a second run against the same gateway
//! misses), `export` downloads a small Unity script, and `health` reads the health endpoint.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use reqwest::Method;

/// A named request shape against a gateway base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    GenerateHit,
    GenerateMiss,
    Export,
    Health,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::GenerateHit,
        Scenario::GenerateMiss,
        Scenario::Export,
        Scenario::Health,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::GenerateHit => "generate-hit",
            Scenario::GenerateMiss => "generate-miss",
            Scenario::Export => "export",
            Scenario::Health => "health",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    #[error("unknown scenario {0:?} (known: generate-hit, generate-miss, export, health, mixed)")]
    Unknown(String),
    #[error("bad mix {0:?}: expected NAME=WEIGHT pairs, e.g. generate-hit=70,export=20,health=10")]
    BadMix(String),
    #[error("the mix gives every scenario a weight of zero")]
    EmptyMix,
}

impl FromStr for Scenario {
    type Err = ScenarioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| ScenarioError::Unknown(s.to_owned()))
    }
}

/// Scenario weights for `mixed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(Vec<(Scenario, u32)>);

impl Default for Mix {
    /// A read-heavy day: most generations are repeats answered from the cache.
    fn default() -> Self {
        Mix(vec![
            (Scenario::GenerateHit, 60),
            (Scenario::GenerateMiss, 10),
            (Scenario::Export, 20),
            (Scenario::Health, 10),
        ])
    }
}

impl FromStr for Mix {
    type Err = ScenarioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScenarioError::BadMix(s.to_owned());
        let mut weights = Vec::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = pair.split_once('=').ok_or_else(bad)?;
            let scenario: Scenario = name.trim().parse()?;
            let weight: u32 = weight.trim().parse().map_err(|_| bad())?;
            weights.push((scenario, weight));
        }
        if weights.is_empty() {
            return Err(bad());
        }
        if weights.iter().all(|(_, w)| *w == 0) {
            return Err(ScenarioError::EmptyMix);
        }
        Ok(Mix(weights))
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(s, w)| format!("{s}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    /// The scenario for a uniform draw `roll` in `[0, 1)`.
    pub fn pick(&self, roll: f64) -> Scenario {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut point = roll.clamp(0.0, 1.0) * total as f64;
        for (scenario, weight) in &self.0 {
            let w = f64::from(*weight);
            if point < w {
                return *scenario;
            }
            point -= w;
        }
        // Only reached at roll == 1.0 or by rounding: the last weighted entry.
        self.0
            .iter()
            .rev()
            .find(|(_, w)| *w > 0)
            .map_or(Scenario::Health, |(s, _)| *s)
    }
}

/// What a run sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    One(Scenario),
    Mixed(Mix),
    /// One fixed request to a full URL.
    Custom {
        method: Method,
        body: Option<Bytes>,
    },
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::One(s) => write!(f, "{s}"),
            Workload::Mixed(m) => write!(f, "mixed ({m})"),
            Workload::Custom { method, body } => match body {
                Some(b) => write!(f, "custom {method} ({} byte body)", b.len()),
                None => write!(f, "custom {method}"),
            },
        }
    }
}

/// One request ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub method: Method,
    pub url: String,
    /// A JSON body, when there is one.
    pub body: Option<Bytes>,
}

const HIT_BODY: &str = r#"{"prompt":"Create a door that opens when the player walks near it and closes after three seconds","engine":"unity"}"#;

const EXPORT_BODY: &str = r#"{"code":"using UnityEngine;\n\npublic class AutoDoor : MonoBehaviour\n{\n    [SerializeField] private float openAngle = 90f;\n\n    private void OnTriggerEnter(Collider other)\n    {\n        if (other.CompareTag(\"Player\"))\n        {\n            transform.localRotation = Quaternion.Euler(0f, openAngle, 0f);\n        }\n    }\n}\n","scriptName":"AutoDoor","engine":"unity"}"#;

/// Builds the requests of one run.
#[derive(Debug, Clone)]
pub struct RequestFactory {
    /// The gateway base URL (scenarios) or the full URL (custom), without a trailing slash for
    /// the former.
    target: String,
    workload: Workload,
    /// Makes `generate-miss` prompts unique across runs too.
    nonce: u64,
}

impl RequestFactory {
    pub fn new(target: &str, workload: Workload, nonce: u64) -> Self {
        let target = match workload {
            Workload::Custom { .. } => target.to_owned(),
            _ => target.trim_end_matches('/').to_owned(),
        };
        RequestFactory {
            target,
            workload,
            nonce,
        }
    }

    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// The `seq`-th request; `roll` is a uniform draw in `[0, 1)` used by the mix.
    pub fn make(&self, seq: u64, roll: f64) -> Prepared {
        let scenario = match &self.workload {
            Workload::One(s) => *s,
            Workload::Mixed(mix) => mix.pick(roll),
            Workload::Custom { method, body } => {
                return Prepared {
                    method: method.clone(),
                    url: self.target.clone(),
                    body: body.clone(),
                };
            }
        };
        let url = |path: &str| format!("{}{path}", self.target);
        match scenario {
            Scenario::GenerateHit => Prepared {
                method: Method::POST,
                url: url("/api/spark/generate"),
                body: Some(Bytes::from_static(HIT_BODY.as_bytes())),
            },
            Scenario::GenerateMiss => Prepared {
                method: Method::POST,
                url: url("/api/spark/generate"),
                body: Some(Bytes::from(format!(
                    r#"{{"prompt":"Create a door that opens when the player walks near it, variant {:x}-{seq}","engine":"unity"}}"#,
                    self.nonce
                ))),
            },
            Scenario::Export => Prepared {
                method: Method::POST,
                url: url("/api/export"),
                body: Some(Bytes::from_static(EXPORT_BODY.as_bytes())),
            },
            Scenario::Health => Prepared {
                method: Method::GET,
                url: url("/api/spark/health"),
                body: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_bodies_are_valid_json_with_the_fields_the_api_requires() {
        let f = RequestFactory::new("http://127.0.0.1:8080/", Workload::Mixed(Mix::default()), 7);
        for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
            let one = RequestFactory::new("http://127.0.0.1:8080/", Workload::One(scenario), 7);
            let p = one.make(i as u64, 0.0);
            assert!(p.url.starts_with("http://127.0.0.1:8080/api/"), "{}", p.url);
            if let Some(body) = &p.body {
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                assert!(v.get("prompt").is_some() || v.get("code").is_some(), "{v}");
            }
        }
        assert_eq!(
            f.make(0, 0.0).url,
            "http://127.0.0.1:8080/api/spark/generate"
        );
    }

    #[test]
    fn miss_prompts_differ_per_request_and_per_run_while_hit_prompts_repeat() {
        let a = RequestFactory::new("http://h", Workload::One(Scenario::GenerateMiss), 1);
        let b = RequestFactory::new("http://h", Workload::One(Scenario::GenerateMiss), 2);
        assert_ne!(a.make(1, 0.0).body, a.make(2, 0.0).body);
        assert_ne!(a.make(1, 0.0).body, b.make(1, 0.0).body);
        let hit = RequestFactory::new("http://h", Workload::One(Scenario::GenerateHit), 1);
        assert_eq!(hit.make(1, 0.0).body, hit.make(2, 0.0).body);
    }

    #[test]
    fn the_mix_follows_its_weights() {
        let mix: Mix = "generate-hit=3,health=1,export=0".parse().unwrap();
        let picks: Vec<Scenario> = (0..400).map(|i| mix.pick(f64::from(i) / 400.0)).collect();
        let hits = picks
            .iter()
            .filter(|s| **s == Scenario::GenerateHit)
            .count();
        let health = picks.iter().filter(|s| **s == Scenario::Health).count();
        assert_eq!((hits, health), (300, 100));
        assert_eq!(mix.pick(1.0), Scenario::Health);
        assert_eq!(mix.to_string(), "generate-hit=3,health=1,export=0");
    }

    #[test]
    fn bad_mixes_and_names_are_errors() {
        assert!("generate-hit".parse::<Mix>().is_err());
        assert!("nope=3".parse::<Mix>().is_err());
        assert!("health=x".parse::<Mix>().is_err());
        assert_eq!("health=0".parse::<Mix>(), Err(ScenarioError::EmptyMix));
        assert!("".parse::<Mix>().is_err());
        assert!("mixed".parse::<Scenario>().is_err());
    }

    #[test]
    fn a_custom_request_goes_to_the_url_as_given() {
        let f = RequestFactory::new(
            "http://127.0.0.1:9/v1/messages",
            Workload::Custom {
                method: Method::POST,
                body: Some(Bytes::from_static(b"{}")),
            },
            0,
        );
        let p = f.make(5, 0.5);
        assert_eq!(p.url, "http://127.0.0.1:9/v1/messages");
        assert_eq!(p.method, Method::POST);
    }
}
