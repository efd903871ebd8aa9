//! `spark-train`: fits the sanitizer's learned stage on the training pool, prints its
//! cross-validation and development-set figures, and writes (or, with `--check`, verifies)
//! `src/sanitize/learned.bin`. See `train/src/lib.rs` for how.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use spark_train::{Params, Scored, cross_validate, encode, flagged, load_dev, load_pool, train};

#[derive(Parser)]
#[command(about = "Train the sanitizer's learned stage")]
struct Args {
    /// The training pool (attacks.jsonl, benign.jsonl).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/eval/train"))]
    train: PathBuf,
    /// The development set, for the threshold and the report only.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/eval/injection"))]
    dev: PathBuf,
    /// Where the weights go.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/sanitize/learned.bin"))]
    out: PathBuf,
    /// Folds of the cross-validation printed first (0 skips it).
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Compare with `--out` instead of writing it; exit 1 when they differ.
    #[arg(long)]
    check: bool,
    /// Settings other than those `learned.bin` was trained with, for experiments.
    #[arg(long)]
    bits: Option<u8>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    rate: Option<f32>,
    #[arg(long)]
    l2: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    /// Write every development-set prompt's rules risk and model log-odds (no text) as JSON
    /// lines, for studying the combination.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Print the development-set prompts the combination gets wrong, with their scores.
    #[arg(long)]
    misses: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spark-train: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let d = Params::default();
    let p = Params {
        bits: args.bits.unwrap_or(d.bits),
        epochs: args.epochs.unwrap_or(d.epochs),
        rate: args.rate.unwrap_or(d.rate),
        l2: args.l2.unwrap_or(d.l2),
        seed: args.seed.unwrap_or(d.seed),
        ..d
    };
    let pool = load_pool(&args.train)?;
    let dev = load_dev(&args.dev)?;
    println!("{p:?}");
    println!(
        "pool: {} attacks, {} benign; development set: {} attacks, {} benign",
        pool.iter().filter(|r| r.attack).count(),
        pool.iter().filter(|r| !r.attack).count(),
        dev.iter().filter(|r| r.attack).count(),
        dev.iter().filter(|r| !r.attack).count(),
    );
    if args.folds >= 2 {
        let started = Instant::now();
        let encoded = encode(&pool, p.bits);
        let folds = cross_validate(&pool, &encoded, &p, args.folds);
        println!(
            "{}-fold cross-validation on the pool (model alone):",
            args.folds
        );
        for (i, f) in folds.iter().enumerate() {
            println!(
                "  fold {}: AUC {:.4}  recall at 1% FP {:.3}  at 0.5% FP {:.3}",
                i + 1,
                f.auc,
                f.recall_at_1pct,
                f.recall_at_half_pct
            );
        }
        let mean = |g: fn(&spark_train::Fold) -> f64| {
            folds.iter().map(g).sum::<f64>() / folds.len().max(1) as f64
        };
        println!(
            "  mean:   AUC {:.4}  recall at 1% FP {:.3}  at 0.5% FP {:.3}  ({:.1} s)",
            mean(|f| f.auc),
            mean(|f| f.recall_at_1pct),
            mean(|f| f.recall_at_half_pct),
            started.elapsed().as_secs_f64()
        );
    }
    let (model, scored) = train(&pool, &dev, &p)?;
    println!("shift chosen on the development set: {:.4}", model.shift());
    report(&scored, model.shift());
    if let Some(path) = &args.dump {
        let lines: Vec<String> = scored
            .iter()
            .map(|s| serde_json::json!({"set": s.row.set, "attack": s.row.attack, "rules": s.rules, "logit": s.logit}).to_string())
            .collect();
        std::fs::write(path, lines.join("\n"))?;
    }
    if args.misses {
        for s in scored
            .iter()
            .filter(|s| s.row.attack != flagged(s, model.shift()))
        {
            let text: String = s.row.text.chars().take(150).collect();
            println!(
                "  {} {:<26} rules {:.2} logit {:+.2}  {text:?}",
                if s.row.attack { "missed " } else { "flagged" },
                s.row.source,
                s.rules,
                s.logit
            );
        }
    }
    let bytes = model.to_bytes();
    if args.check {
        let on_disk = std::fs::read(&args.out)?;
        if on_disk != bytes {
            eprintln!(
                "{} differs from what training produces: retrain with `cargo run -p spark-train --release`",
                args.out.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        println!("{} reproduced byte for byte", args.out.display());
    } else {
        std::fs::write(&args.out, &bytes)?;
        println!("wrote {} ({} bytes)", args.out.display(), bytes.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Flagged per file and source of the development set: rules alone, then with the model.
fn report(scored: &[Scored], shift: f32) {
    let mut table: std::collections::BTreeMap<(String, String), (usize, usize, usize)> =
        Default::default();
    for s in scored {
        let e = table
            .entry((s.row.set.clone(), s.row.source.clone()))
            .or_default();
        e.0 += usize::from(s.rules >= spark_gateway::sanitize::DEFAULT_THRESHOLD);
        e.1 += usize::from(flagged(s, shift));
        e.2 += 1;
    }
    println!("development set, flagged: rules alone -> with the model");
    let mut totals: std::collections::BTreeMap<String, (usize, usize, usize)> = Default::default();
    for ((set, source), (r, m, n)) in &table {
        println!("  {set:<20} {source:<32} {r:>4} -> {m:>4} of {n}");
        let t = totals.entry(set.clone()).or_default();
        t.0 += r;
        t.1 += m;
        t.2 += n;
    }
    for (set, (r, m, n)) in totals {
        println!(
            "  {set:<20} {:<32} {r:>4} -> {m:>4} of {n} ({:.3} -> {:.3})",
            "all",
            r as f64 / n as f64,
            m as f64 / n as f64
        );
    }
}
