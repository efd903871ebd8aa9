//! The sanitizer over a corpus of real 10,000-character texts mixing ASCII, accented Latin, CJK
//! and emoji: median and slowest time per text, against a bare NFKC pass over the same texts.
//!
//! Run: `cargo bench --bench sanitize_corpus` (reads the benign prompts of `SPARK_EVAL_DIR`'s
//! parent, default `../shared/eval`: `injection/benign.jsonl` and `train/benign.jsonl`). Each
//! text is built by drawing real benign prompts, with a fixed seed, alternately from four pools
//! (pure ASCII, accented Latin, CJK, emoji) until it holds 10,000 characters; each is timed as
//! the fastest of 25 runs, which filters out the noise of a shared machine; the sanitizer and
//! the bare NFKC pass take turns on each text, so both see the same machine, and each text's
//! own ratio is printed beside the ratio of the medians. It also times the
//! same texts with their non-ASCII characters removed, each step of the pipeline on its own, and
//! each text's very first run (the cost of a prompt the process has not seen before).
//! `SPARK_BENCH_RUNS=1` under `valgrind --tool=callgrind` counts instructions instead, which do
//! not depend on the machine's load; `SPARK_BENCH_PROFILE=<step>` loops one step for `perf record`.
//! Numbers are recorded in BENCHMARKS.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly at the first surprise"
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use spark_gateway::sanitize::{
    Hidden, Policy, PolicyMode, assess, fold_lowered, lower, model, needs_fold, normalize, sanitize,
};
use unicode_normalization::UnicodeNormalization;

const TEXTS: usize = 32;
const CHARS: usize = 10_000;
const RUNS: usize = 25;

fn eval_dir() -> PathBuf {
    std::env::var_os("SPARK_EVAL_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/eval/injection"),
        PathBuf::from,
    )
}

fn benign_rows() -> Vec<String> {
    let injection = eval_dir();
    let train = injection.with_file_name("train");
    let mut rows = Vec::new();
    for file in [injection.join("benign.jsonl"), train.join("benign.jsonl")] {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(t) = v["text"].as_str()
            {
                rows.push(t.to_owned());
            }
        }
    }
    assert!(
        !rows.is_empty(),
        "no benign rows under {}",
        injection.display()
    );
    rows
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{30ff}' | '\u{4e00}'..='\u{9fff}' | '\u{ac00}'..='\u{d7af}')
}

/// 32 texts of 10,000 characters, each mixing the four pools (fixed seed: the same corpus on
/// every run).
fn corpus() -> Vec<String> {
    let rows = benign_rows();
    let pools: [Vec<&String>; 4] = [
        rows.iter().filter(|t| t.is_ascii()).collect(),
        rows.iter()
            .filter(|t| t.chars().any(|c| "éèàüöäçñãõíóúÉ".contains(c)))
            .collect(),
        rows.iter().filter(|t| t.chars().any(is_cjk)).collect(),
        rows.iter()
            .filter(|t| t.chars().any(|c| c as u32 >= 0x1F300))
            .collect(),
    ];
    for (i, p) in pools.iter().enumerate() {
        assert!(!p.is_empty(), "pool {i} is empty");
    }
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    (0..TEXTS)
        .map(|_| {
            let mut text = String::new();
            let mut pool = next(4);
            while text.chars().count() < CHARS {
                let p = &pools[pool % 4];
                text.push_str(p[next(p.len())]);
                text.push_str("\n\n");
                pool += 1;
            }
            text.chars().take(CHARS).collect()
        })
        .collect()
}

/// What a step of the pipeline reads.
enum Input {
    Raw,
    Normalized,
    Lowered,
}

/// A step's name, its input, and the step (returning something so it is not optimized away).
type Step<'a> = (&'a str, Input, &'a dyn Fn(&str) -> usize);

fn fastest(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Runs one step of the pipeline over every text until five seconds have passed.
fn profile(step: &str, texts: &[String], policy: &Policy) {
    let normalized: Vec<String> = texts.iter().map(|t| normalize(t)).collect();
    let lowered: Vec<String> = normalized.iter().map(|n| lower(n)).collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        for (i, t) in texts.iter().enumerate() {
            let out = match step {
                "sanitize" => sanitize(t, policy).map_or(0, |s| s.text.len()),
                "hidden-character census" => Hidden::count(t).stripped,
                "normalize" => normalize(t).len(),
                "lower" => lower(&normalized[i]).len(),
                "needs_fold" => usize::from(needs_fold(&lowered[i])),
                "fold_lowered" => fold_lowered(&lowered[i]).len(),
                "assess" => assess(&normalized[i], &normalized[i]).categories.len(),
                "model" => model().map_or(0, |m| m.logit(&lowered[i]).to_bits() as usize),
                other => panic!("no step {other:?}"),
            };
            black_box(out);
        }
    }
}

fn main() {
    // Under callgrind (instruction counts, which do not depend on what else the machine is
    // doing) one run per text is enough: `SPARK_BENCH_RUNS=1`.
    let runs = std::env::var("SPARK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS);
    let policy = Policy {
        mode: PolicyMode::Warn,
        ..Policy::default()
    };
    let _ = sanitize("warm up", &policy);
    let texts = corpus();
    // `SPARK_BENCH_PROFILE=<step>` runs one step over the corpus for five seconds and stops,
    // for `perf record` (the step names are those printed below, or `sanitize`).
    if let Ok(step) = std::env::var("SPARK_BENCH_PROFILE") {
        profile(&step, &texts, &policy);
        return;
    }
    // First sight: each text's first sanitize, before anything below has run it. The regex
    // crate's lazy DFA builds the states a text needs as it meets them, so a prompt unlike any
    // before costs far more than the fastest of many runs; a gateway mostly sees new prompts.
    let mut first_times: Vec<Duration> = texts
        .iter()
        .map(|t| {
            let started = Instant::now();
            black_box(sanitize(black_box(t), &policy)).ok();
            started.elapsed()
        })
        .collect();
    let mut sanitize_times = Vec::new();
    let mut nfkc_times = Vec::new();
    let mut ratios: Vec<f64> = Vec::new();
    // Where the time goes, step by step on the same texts, each fed what it is fed in the
    // pipeline.
    let steps: [Step; 7] = [
        ("hidden-character census", Input::Raw, &|t| {
            Hidden::count(t).stripped
        }),
        ("normalize", Input::Raw, &|t| normalize(t).len()),
        ("lower", Input::Normalized, &|n| lower(n).len()),
        ("needs_fold", Input::Lowered, &|l| {
            usize::from(needs_fold(l))
        }),
        ("fold_lowered", Input::Lowered, &|l| fold_lowered(l).len()),
        ("assess", Input::Normalized, &|n| {
            assess(n, n).categories.len()
        }),
        // The learned stage alone (it is part of `assess`): one pass of word hashing and
        // weight lookups over the view it reads.
        ("model", Input::Lowered, &|l| {
            model().map_or(0, |m| m.logit(l).to_bits() as usize)
        }),
    ];
    let mut step_times: Vec<Vec<Duration>> = vec![Vec::new(); steps.len()];
    for t in &texts {
        let normalized = normalize(t);
        let lowered = lower(&normalized);
        for (i, (_, input, f)) in steps.iter().enumerate() {
            let input = match input {
                Input::Raw => t.as_str(),
                Input::Normalized => normalized.as_str(),
                Input::Lowered => lowered.as_str(),
            };
            step_times[i].push(fastest(runs, || {
                black_box(f(black_box(input)));
            }));
        }
    }
    // The same texts with every non-ASCII character removed: the English-only case, on real
    // prompts rather than one repeated sentence.
    let ascii_texts: Vec<String> = texts
        .iter()
        .map(|t| t.chars().filter(char::is_ascii).collect())
        .collect();
    let mut ascii_times: Vec<Duration> = ascii_texts
        .iter()
        .map(|t| {
            fastest(runs, || {
                black_box(sanitize(black_box(t), &policy)).ok();
            })
        })
        .collect();
    // The sanitizer and its baseline take turns on the same text, in blocks of five runs: a
    // neighbour that slows the machine for a few seconds then slows both alike (measured one
    // after the other, the ratio swung between 1.1x and 1.6x on this shared machine), while
    // each block still warms its own caches (turns of one run made both colder).
    let block = runs.clamp(1, 5);
    for t in &texts {
        let (mut s_best, mut n_best) = (Duration::MAX, Duration::MAX);
        for _ in 0..runs.div_ceil(block) {
            s_best = s_best.min(fastest(block, || {
                black_box(sanitize(black_box(t), &policy)).ok();
            }));
            n_best = n_best.min(fastest(block, || {
                black_box(black_box(t).nfkc().collect::<String>());
            }));
        }
        sanitize_times.push(s_best);
        nfkc_times.push(n_best);
        ratios.push(s_best.as_secs_f64() / n_best.as_secs_f64());
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (median, slowest) = stats(&mut sanitize_times);
    let (nfkc_median, nfkc_slowest) = stats(&mut nfkc_times);
    let (ascii_median, ascii_slowest) = stats(&mut ascii_times);
    let (first_median, first_slowest) = stats(&mut first_times);
    let non_ascii = texts.iter().filter(|t| !t.is_ascii()).count();
    println!(
        "corpus: {} texts of {CHARS} characters ({non_ascii} with non-ASCII), fastest of {runs} runs each",
        texts.len()
    );
    println!("sanitize   median {median:>10.1?}   slowest {slowest:>10.1?}");
    println!("ASCII-only copies: median {ascii_median:>10.1?}   slowest {ascii_slowest:>10.1?}");
    println!(
        "first sight (one run): median {first_median:>10.1?}   slowest {first_slowest:>10.1?}"
    );
    for ((name, _, _), times) in steps.iter().zip(step_times.iter_mut()) {
        let (m, _) = stats(times);
        println!("  step {name:<28} median {m:>10.1?}");
    }
    println!("bare NFKC  median {nfkc_median:>10.1?}   slowest {nfkc_slowest:>10.1?}");
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio      median {:.2}x   (per text: median {:.2}x, highest {:.2}x)",
        median.as_secs_f64() / nfkc_median.as_secs_f64(),
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1]
    );
}
