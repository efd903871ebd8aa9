#!/usr/bin/env python3
"""Instructions per cache hit (or per miss), counted by callgrind: a figure the machine's load
does not move.

    python3 loadtest/hit_callgrind.py --binary PATH [--binary PATH ...] [--requests 2000] [--runs 2]
                                      [--scenario generate-hit|generate-miss]

Each run starts the mock upstream and the gateway under `valgrind --tool=callgrind` (as `bench.py`
starts it: JSON logs, the default SQLite ledger, cache on), sends 300 hits to warm it, zeroes the
counters (`callgrind_control -z`), sends `--requests` hits (`generate-hit`, closed model, 4
workers), dumps the counters (`callgrind_control -d`) and stops. It prints the instructions per
request and the share of the largest libc functions; the dumps stay in `target/bench/callgrind/` for
`callgrind_annotate`. Throughput on this shared machine moves by ±15% between runs of one build;
instruction counts move by a few percent, so this is the A/B to trust for small changes.
`--scenario generate-miss` counts whole misses instead (cache off, as `bench.py`'s table 1: the
request, the call to the mock upstream, the answer), with the same prompts in every run
(`--nonce`). Each run sends exactly `--requests` requests after zeroing (no warm-up inside it),
so the division is exact.
Everything runs on 127.0.0.1 and stops by itself. Needs valgrind.
"""

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

WARMUP = 300
# The same miss prompts in every run (`spark-loadtest --nonce`): the sanitizer's work depends on
# the prompt's text, and with a random nonce some runs' hex tokens look like leetspeak and get
# folded and rescanned (~29,000 more instructions per miss in the sanitizer) while others' do not.
NONCE = "20261203"


def hits(url, n, scenario="generate-hit"):
    return bench.loadtest(["--target", url, "--api-key", bench.API_KEY, "--scenario", scenario, "--nonce", NONCE,
                           # No unmeasured warm-up inside a run: the counters see every request
                           # sent, and the division below must count them all.
                           "--warmup", "0s",
                           "--concurrency", "4", "--requests", str(n)], timeout="60s")


def one_run(binary, requests, out, scenario):
    procs = bench.Procs()
    try:
        _, mock = bench.start_mock(procs)
        ttl = "1h" if scenario == "generate-hit" else "0s"  # misses as bench.py table 1: cache off
        gw, url = bench.start_gateway(procs, mock, ttl, binary=binary, wait_s=120,
                                      prefix=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
        hits(url, WARMUP, scenario)
        subprocess.run(["callgrind_control", "-z", str(gw.pid)], check=True, capture_output=True)
        r = hits(url, requests, scenario)
        if r["errorRate"] > 0:
            raise SystemExit(f"{binary}: {r['errorRate']:.2%} errors")
        subprocess.run(["callgrind_control", "-d", str(gw.pid)], check=True, capture_output=True)
        time.sleep(1)
    finally:
        procs.stop_all()
    dump = Path(f"{out}.1")
    text = subprocess.run(["callgrind_annotate", "--threshold=100", str(dump)],
                          capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
    libc = {}
    for m in re.finditer(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*:(\w+) \[[^\]]*libc", text, re.M):
        libc[m.group(2)] = libc.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return total, libc, dump


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", required=True, type=Path, help="a gateway binary (repeatable)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--scenario", default="generate-hit", choices=["generate-hit", "generate-miss"],
                    help="generate-miss counts a whole miss: the request, the call to the mock, the answer")
    args = ap.parse_args()
    out_dir = bench.OUT_DIR / "callgrind"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"| binary | run | instructions per request ({args.scenario}) | memcpy/memmove per request | malloc family per request | dump |")
    print("|---|---|---:|---:|---:|---|")
    for run in range(args.runs):
        for i, binary in enumerate(args.binary):
            out = out_dir / f"b{i}-r{run}.out"
            for old in out_dir.glob(f"b{i}-r{run}.out*"):
                old.unlink()
            total, libc, dump = one_run(binary.resolve(), args.requests, out, args.scenario)
            copy = sum(v for k, v in libc.items() if "mem" in k and ("cpy" in k or "move" in k))
            alloc = sum(v for k, v in libc.items() if k in ("malloc", "free", "_int_malloc", "_int_free",
                                                           "malloc_consolidate", "cfree", "realloc"))
            n = args.requests
            print(f"| {binary} | {run + 1} | {total / n:,.0f} | {copy / n:,.0f} | {alloc / n:,.0f} | {dump} |", flush=True)


if __name__ == "__main__":
    main()
