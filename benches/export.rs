//! Export throughput: 100 KiB of code as one file, and as a 10-file zip bundle.
//!
//! Run: `cargo bench --bench export`. The baseline in the same run is one copy of the 100 KiB
//! body, the least any export must do; BENCHMARKS.md records the ratios.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmarks fail loudly"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spark_gateway::export::{ExportParams, FileParams, export};

/// About `bytes` of realistic C#: a MonoBehaviour with many small methods.
fn csharp(class: &str, bytes: usize) -> String {
    let mut s = format!("using UnityEngine;\n\npublic class {class} : MonoBehaviour\n{{\n");
    let mut i = 0;
    while s.len() < bytes - 2 {
        s.push_str(&format!(
            "    [SerializeField] private float value{i} = {i}f;\n    public float Scaled{i}(float k) => value{i} * k + Mathf.Sin(Time.time * {i});\n"
        ));
        i += 1;
    }
    s.push_str("}\n");
    s
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("export_100kib");
    let single = csharp("BigController", 100 * 1024);
    group.throughput(Throughput::Bytes(single.len() as u64));
    group.bench_function("single_file", |b| {
        b.iter(|| {
            export(ExportParams {
                code: Some(black_box(&single).clone()),
                script_name: Some("BigController".into()),
                engine: Some("unity".into()),
                files: None,
            })
            .unwrap()
        })
    });
    let files: Vec<(String, String)> = (0..10)
        .map(|i| {
            let name = format!("Part{i}");
            (name.clone(), csharp(&name, 10 * 1024))
        })
        .collect();
    group.bench_function("bundle_10_files", |b| {
        b.iter(|| {
            export(ExportParams {
                engine: Some("unity".into()),
                files: Some(
                    files
                        .iter()
                        .map(|(n, code)| FileParams {
                            code: Some(code.clone()),
                            script_name: Some(n.clone()),
                        })
                        .collect(),
                ),
                ..Default::default()
            })
            .unwrap()
        })
    });
    group.bench_function("baseline_copy_100kib", |b| {
        b.iter(|| black_box(&single).clone())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
