//! Retraining reproduces the weights checked into the repository, byte for byte: the file is
//! what the training command makes from the pool, not something edited by hand or left stale
//! by a change to the features. Needs the training pool and the development set beside the
//! repository (as `tests/sanitizer_eval.rs` does); a missing folder is a failure, not a skip.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly at the first surprise"
)]

use std::path::PathBuf;

use spark_train::{Params, load_dev, load_pool, train};

#[test]
fn retraining_reproduces_the_embedded_weights() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let eval = root.join("../../shared/eval");
    let pool = load_pool(&eval.join("train")).expect("the training pool beside the repository");
    let dev = load_dev(&eval.join("injection")).expect("the development set beside the repository");
    let (model, _) = train(&pool, &dev, &Params::default()).unwrap();
    let shipped = std::fs::read(root.join("../src/sanitize/learned.bin")).unwrap();
    assert!(
        model.to_bytes() == shipped,
        "src/sanitize/learned.bin is not what training produces: \
         run `cargo run -p spark-train --release` and commit the file"
    );
    // And it is the model the gateway embeds.
    assert_eq!(
        spark_gateway::sanitize::model().map(|m| m.to_bytes()),
        Some(shipped)
    );
}
