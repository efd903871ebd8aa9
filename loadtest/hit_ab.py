#!/usr/bin/env python3
"""The cache-hit path of two gateway builds in the same run, against the bare baseline.

    python3 loadtest/hit_ab.py --before PATH --after PATH [--rounds 3]

PATH is a release `spark-gateway` binary, e.g. one built from an earlier commit in a worktree:

    git worktree add /tmp/spark-before <commit>
    cargo build --release --manifest-path /tmp/spark-before/Cargo.toml -p spark-gateway
    python3 loadtest/hit_ab.py --before /tmp/spark-before/target/release/spark-gateway \\
        --after target/release/spark-gateway

Each round measures, one after the other, the mock upstream's `GET /ping` (the bare axum route of
table 2 in BENCHMARKS.md), the mock's `POST /v1/messages` (a bare axum route that reads and parses
a JSON body and writes a JSON answer, as a hit does: it shows how much of the gap to `/ping` is the
shape of the exchange rather than the gateway's work) and `generate-hit` through each build, closed
model, 32 workers, 8 s after 2 s of warm-up, so a drift of the shared machine hits all alike; and
the CPU time (all threads, from /proc) per request of the process serving it, which moves less with
the machine's load than throughput does. The gateways run as in `bench.py` (JSON logs to a file,
the default SQLite ledger, `MALLOC_ARENA_MAX=2` for glibc builds). Everything runs on 127.0.0.1
and stops by itself.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from trace_bench import cpu_seconds  # noqa: E402  (utime + stime of a process, from /proc)


DURATION_S = 8
WARMUP_S = 2


def run(target_args):
    return bench.loadtest(target_args + ["--concurrency", "32", "--duration", f"{DURATION_S}s", "--warmup", f"{WARMUP_S}s"])


def us_per_request(cpu_s, result):
    """A process's CPU seconds over a run, in µs per request served; the warm-up's requests are
    counted at the measured rate."""
    served = result["requests"] * (DURATION_S + WARMUP_S) / DURATION_S
    return cpu_s / served * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, type=Path, help="the baseline gateway binary")
    ap.add_argument("--after", required=True, type=Path, help="the gateway binary under test")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
    builds = {"before": args.before.resolve(), "after": args.after.resolve()}
    rps = {"ping": [], "post": [], "before": [], "after": []}
    cpu = {"post": [], "before": [], "after": []}
    procs = bench.Procs()
    try:
        mock_proc, mock = bench.start_mock(procs)
        body = bench.OUT_DIR / "hit_ab_messages.json"
        body.write_text(json.dumps({
            "model": "claude-sonnet-4-5", "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Write a Unity C# script that makes the player jump."}],
        }))
        for _ in range(args.rounds):
            r = run(["--target", mock + "/ping", "--method", "GET"])
            rps["ping"].append(r["throughputRps"])
            cpu0 = cpu_seconds(mock_proc.pid)
            r = run(["--target", mock + "/v1/messages", "--body", str(body),
                     "--header", f"x-api-key: {bench.UPSTREAM_KEY}", "--header", "anthropic-version: 2023-06-01"])
            if r["errorRate"] > 0:
                raise SystemExit(f"mock POST /v1/messages: {r['errorRate']:.2%} errors")
            cpu["post"].append(us_per_request(cpu_seconds(mock_proc.pid) - cpu0, r))
            rps["post"].append(r["throughputRps"])
            for name, binary in builds.items():
                gw, url = bench.start_gateway(procs, mock, "300s", binary=binary)
                cpu0 = cpu_seconds(gw.pid)
                r = run(["--target", url, "--api-key", bench.API_KEY, "--scenario", "generate-hit"])
                cpu[name].append(us_per_request(cpu_seconds(gw.pid) - cpu0, r))
                procs.stop(gw)
                if r["errorRate"] > 0:
                    raise SystemExit(f"{name}: {r['errorRate']:.2%} errors")
                rps[name].append(r["throughputRps"])
    finally:
        procs.stop_all()
    print(f"Machine: {bench.machine()}")
    print()
    print("| path | req/s per round | median req/s | ratio to `/ping` (the baseline) | ratio to `POST /v1/messages` | CPU per request (median) |")
    print("|---|---|---:|---:|---:|---:|")
    ping = statistics.median(rps["ping"])
    post = statistics.median(rps["post"])
    for name, label in (("ping", "mock `GET /ping` (baseline)"), ("post", "mock `POST /v1/messages`"),
                        ("before", f"`generate-hit`, {args.before}"), ("after", f"`generate-hit`, {args.after}")):
        med = statistics.median(rps[name])
        rounds = ", ".join(f"{x:.0f}" for x in rps[name])
        per = f"{statistics.median(cpu[name]):.0f} µs" if name in cpu else "–"
        print(f"| {label} | {rounds} | {med:.0f} | {med / ping:.2f} | {med / post:.2f} | {per} |")
    print()
    print(f"after / before: throughput {statistics.median(rps['after']) / statistics.median(rps['before']):.2f}, "
          f"CPU per request {statistics.median(cpu['after']) / statistics.median(cpu['before']):.2f}")


if __name__ == "__main__":
    main()
