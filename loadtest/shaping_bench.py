#!/usr/bin/env python3
"""Outbound shaping against a provider that enforces its limit: shaping off vs on, same run
(about 3 minutes on 2 cores, build excluded).

    python3 loadtest/shaping_bench.py               # build, measure, print the table
    python3 loadtest/shaping_bench.py --no-build    # use the release binaries as they are

The mock upstream (`spark-loadtest mock-upstream --rpm-limit 100`) accepts 100 calls in any
sliding minute and answers the rest 429 `rate_limit_error`, as a provider does past an
organisation's quota. The release gateway sends every request to it (Anthropic only, cache off),
once as it is and once with `SPARK_PROVIDER_LIMITS=anthropic=95rpm` (a little under the
provider's limit: the GCRA's one-second burst lets about one more call go in a minute). The
generator offers 2 requests a second (120 a minute, 20% more than the provider takes) for 70 s,
each run against a fresh mock so both start with an empty minute; the client waits up to 15 s
for an answer. Everything runs on 127.0.0.1 and stops by itself.
"""

import argparse
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

RATE = 2
DURATION = "70s"
PROVIDER_RPM = 100
SHAPED_RPM = 95


def start_limited_mock(procs):
    p = procs.start(
        [str(bench.LOADTEST), "mock-upstream", "--port", "0", "--rpm-limit", str(PROVIDER_RPM)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = p.stdout.readline()
    url = line.strip().rsplit(" ", 1)[-1]
    if not url.startswith("http://"):
        raise SystemExit(f"mock-upstream said {line!r}")
    return p, url


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def metric(text, prefix):
    total = 0
    for line in text.splitlines():
        if line.startswith(prefix):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def run(procs, shaped):
    mock, mock_url = start_limited_mock(procs)
    env = {"SPARK_PROVIDER_LIMITS": f"anthropic={SHAPED_RPM}rpm"} if shaped else {}
    gw, url = bench.start_gateway(procs, mock_url, "0s", env)
    # The client waits longer than the gateway's queue timeout (5 s), so it sees the gateway's
    # answer (503 providers_busy) rather than giving up first.
    result = bench.loadtest(
        ["--target", url, "--api-key", bench.API_KEY, "--scenario", "generate-miss",
         "--rate", str(RATE), "--duration", DURATION, "--warmup", "1s"],
        timeout="15s",
    )
    stats = get_json(mock_url + "/stats")
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    procs.stop(gw)
    procs.stop(mock)
    return {
        "command": result["command"],
        "requests": result["requests"],
        "errorRate": result["errorRate"],
        "statusCounts": result["statusCounts"],
        "mockCalls": stats["anthropic"],
        "mock429": stats["rateLimited"],
        "shaperRejected": metric(text, "spark_shaper_rejected_total{"),
        "p50": result["latencyMs"]["p50"],
        "p99": result["latencyMs"]["p99"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    args = ap.parse_args()
    if not args.no_build:
        bench.build_release()
    bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
    procs = bench.Procs()
    try:
        rows = [("off", run(procs, False)), (f"on ({SHAPED_RPM} rpm)", run(procs, True))]
    finally:
        procs.stop_all()
    print(f"Machine: {bench.machine()}")
    print(f"Load: {rows[0][1]['command']}")
    print()
    print("| shaping | requests | client error rate | client statuses | calls the mock saw | of them 429 | lane refusals | p50 (ms) | p99 (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["statusCounts"].items()))
        print(
            f"| {name} | {r['requests']} | {r['errorRate']:.1%} | {statuses} | {r['mockCalls']} | "
            f"{r['mock429']} | {r['shaperRejected']} | {bench.fmt(r['p50'])} | {bench.fmt(r['p99'])} |"
        )


if __name__ == "__main__":
    main()
