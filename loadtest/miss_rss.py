#!/usr/bin/env python3
"""Memory and CPU of gateway builds or settings on the miss path, alternating (issue 20, item 4).

    python3 loadtest/miss_rss.py --config glibc=/tmp/gw-glibc \\
        --config 'arenas8=target/release/spark-gateway,_RJEM_MALLOC_CONF=narenas:8' \\
        --config default=target/release/spark-gateway [--rate 3000] [--rounds 3]

A config is `LABEL=BINARY[,VAR=VALUE...]`: a release `spark-gateway` and environment variables
added to the way `bench.py` runs it (JSON logs to a file, the default SQLite ledger, cache off,
the zero-latency mock upstream). For each round, each config in turn: idle RSS one second after
start, then `generate-miss` in the open model at `--rate` for 10 s after 2 s of warm-up (a nonce
per round, so no prompt repeats), sampled every 250 ms: peak RSS, RSS three seconds after the
step, CPU per request (all threads, from /proc), p99 and the peak number of client connections.
Prints one line per run, then the medians. Everything runs on 127.0.0.1 and stops by itself.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def parse_config(text):
    label, _, rest = text.partition("=")
    binary, *pairs = rest.split(",")
    if not label or not binary:
        raise argparse.ArgumentTypeError(f"expected LABEL=BINARY[,VAR=VALUE...], got {text!r}")
    env = {}
    for pair in pairs:
        var, sep, value = pair.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected VAR=VALUE, got {pair!r}")
        env[var] = value
    return label, Path(binary).resolve(), env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", type=parse_config, required=True)
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
    configs = {label: (binary, env) for label, binary, env in args.config}
    procs = bench.Procs()
    try:
        _, mock = bench.start_mock(procs)

        def run_one(label, r):
            binary, env = configs[label]
            gw, url = bench.start_gateway(procs, mock, "0s", extra_env=env, binary=binary)
            time.sleep(1.0)
            idle = bench.rss_bytes(gw.pid)
            res = bench.watched(gw, url, lambda: bench.loadtest([
                "--target", url, "--scenario", "generate-miss", "--api-key", bench.API_KEY,
                "--rate", str(args.rate), "--duration", "10s", "--warmup", "2s",
                "--nonce", str(7000 + r),
            ]))
            time.sleep(3.0)
            after = bench.rss_bytes(gw.pid)
            procs.stop(gw)
            m = {"idle": idle, "peak": res["gatewayPeakRssBytes"], "after": after,
                 "cpu": res["gatewayCpuUsPerRequest"], "p99": res["latencyMs"]["p99"],
                 "conns": res["clientConnections"]}
            print(f"{label}: idle {idle / 2**20:.1f} MiB, peak {m['peak'] / 2**20:.1f} MiB, "
                  f"3 s after {after / 2**20:.1f} MiB, {m['cpu']:.0f} us per miss, p99 "
                  f"{m['p99']:.2f} ms, {m['conns']} connections", file=sys.stderr)
            return m

        out = bench.alternating(args.rounds, list(configs), run_one)
    finally:
        procs.stop_all()
    print(f"Machine: {bench.machine()}; misses at {args.rate} req/s, {args.rounds} rounds, medians")
    print()
    mib = lambda v: f"{v / 2**20:.1f} MiB"
    print("\n".join(bench.median_table(
        out,
        ["config", "idle RSS", "peak RSS", "RSS 3 s after", "CPU per miss", "p99"],
        lambda med: [mib(med("idle")), mib(med("peak")), mib(med("after")), f"{med('cpu'):.0f} µs",
                     f"{med('p99'):.2f} ms"],
    )))


if __name__ == "__main__":
    main()
