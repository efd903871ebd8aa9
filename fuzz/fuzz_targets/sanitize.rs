//! Fuzzes the whole sanitizer pipeline: any bytes that are UTF-8 must sanitize without a panic,
//! and the forwarded text must hold no stripped character and be a fixed point of normalize.
//!
//! Run: `cargo +nightly fuzz run sanitize -- -max_total_time=300` (from the repository root).

#![no_main]

use libfuzzer_sys::fuzz_target;
use spark_gateway::sanitize::{Policy, PolicyMode, is_stripped, normalize, sanitize};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = Policy {
        mode: PolicyMode::Warn,
        ..Policy::default()
    };
    if let Ok(s) = sanitize(text, &policy) {
        assert!(!s.text.chars().any(is_stripped));
        assert_eq!(normalize(&s.text), s.text);
    }
});
