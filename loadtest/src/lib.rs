//! spark-loadtest: the load generator and mock LLM upstream that size Spark Gateway.
//!
//! `run` offers load on an open model (a fixed schedule, latency counted from when each request
//! was due) or a closed one (fixed concurrency), records every request in HDR histograms and
//! reports a table, JSON, pass/fail thresholds and an HTML page of charts. `mock-upstream`
//! stands in for Anthropic and OpenAI so the gateway's own cost can be measured against a
//! provider that costs nothing. BENCHMARKS.md's load tables come from `loadtest/bench.py`, which
//! drives both.

pub mod cli;
pub mod mock;
pub mod output;
pub mod progress;
pub mod report;
pub mod rss;
pub mod runner;
pub mod scenario;
pub mod shaping;
pub mod stats;
pub mod threshold;
