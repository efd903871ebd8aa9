//! Integration tests: the real router on a random port, mock upstreams on 127.0.0.1.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

mod anthropic_compat;
mod auth;
mod cache_integrity;
mod connections;
mod console;
mod edge;
mod export;
mod headers;
mod helpers;
mod jwt;
mod ledger;
mod observability;
mod openai_compat;
mod providers;
mod ratelimit;
mod resilience;
mod security;
mod shaping;
mod streaming;
mod tls;
mod tracing;
mod validation;
