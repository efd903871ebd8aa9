#!/usr/bin/env python3
"""What exporting every trace costs: the load gate's p99 with OTLP export off and on (100%
sampling), measured in the same run (about 8 minutes on 2 cores, build excluded).

    python3 loadtest/trace_bench.py               # build, measure, print the table
    python3 loadtest/trace_bench.py --no-build    # use the release binaries as they are

Everything runs on 127.0.0.1 and stops by itself: the release gateway, an OTLP/HTTP sink in this
script (it answers every export at once and counts bytes; the gateway's own
`spark_otel_spans_total` says how many spans were exported, dropped or failed), the mock
upstream, and `spark-loadtest run` as the generator. Rounds alternate off/on so a drift of the
shared machine hits both sides alike; the table gives each round and the median.

Two loads: the CI load gate exactly (`--scenario mixed --rate 300` on the built-in simulator),
and a heavier one where every request is a miss through a provider (`generate-miss` at 1,000 req/s
against the mock upstream, cache off): seven spans per request, the most export work per request.
"""

import argparse
import os
import http.server
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the shared helpers: processes, ports, the generator, the machine)

ROUNDS = 5
DURATION = "10s"
WARMUP = "2s"


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    exports = 0
    bytes = 0
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 (the handler's name is http.server's)
        n = int(self.headers.get("content-length", "0"))
        self.rfile.read(n)
        with Sink.lock:
            Sink.exports += 1
            Sink.bytes += n
        # An empty ExportTraceServiceResponse is an empty protobuf message.
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_sink():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def span_counts(url):
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("spark_otel_spans_total{"):
            outcome = line.split('"')[1]
            out[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return out


def cpu_seconds(pid):
    # utime + stime, fields 14 and 15 of /proc/PID/stat (after the command name in parentheses).
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(procs, load, mock_url, sink_url, traced):
    env = {"SPARK_SIMULATOR_LATENCY": "0ms"}
    if traced:
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url, "OTEL_TRACES_SAMPLER": "always_on"})
    if load == "gate":
        # The load gate of .ci/run: the simulator answers, the mixed scenario, 300 req/s.
        env["SPARK_PROVIDER_ORDER"] = "simulator"
        gw, url = bench.start_gateway(procs, mock_url, "1h", env)
        args = ["--scenario", "mixed", "--rate", "300"]
    else:
        gw, url = bench.start_gateway(procs, mock_url, "0s", env)
        args = ["--scenario", "generate-miss", "--rate", "1000"]
    cpu0 = cpu_seconds(gw.pid)
    result = bench.loadtest(
        ["--target", url, "--api-key", bench.API_KEY, *args, "--duration", DURATION, "--warmup", WARMUP]
    )
    time.sleep(6)  # one schedule delay: the last partial batch goes out before counting
    # The gateway's CPU per request offered (warm-up included), export work included.
    offered = int(args[-1]) * (int(DURATION[:-1]) + int(WARMUP[:-1]))
    result["cpuUsPerRequest"] = (cpu_seconds(gw.pid) - cpu0) / offered * 1e6
    spans = span_counts(url) if traced else {}
    procs.stop(gw)
    return result, spans


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"off/on pairs per load (default {ROUNDS})")
    ap.add_argument("--loads", default="gate,miss", help="which loads: gate, miss or both (default)")
    args = ap.parse_args()
    if not args.no_build:
        bench.build_release()
    bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
    procs = bench.Procs()
    sink, sink_url = start_sink()
    rows = []
    try:
        _, mock_url = bench.start_mock(procs)
        for load in args.loads.split(","):
            p99 = {False: [], True: []}
            cpu = {False: [], True: []}
            errors = {False: 0.0, True: 0.0}
            spans = {}
            command = ""
            for _ in range(args.rounds):
                for traced in (False, True):
                    result, counts = measure(procs, load, mock_url, sink_url, traced)
                    p99[traced].append(result["latencyMs"]["p99"])
                    cpu[traced].append(result["cpuUsPerRequest"])
                    errors[traced] = max(errors[traced], result["errorRate"])
                    command = result["command"]
                    for k, v in counts.items():
                        spans[k] = spans.get(k, 0) + v
            rows.append((load, command, p99, errors, spans, cpu))
    finally:
        procs.stop_all()
        sink.shutdown()

    print(f"Machine: {bench.machine()}")
    print(f"Sink: {Sink.exports} export requests, {Sink.bytes / 1e6:.1f} MB")
    print()
    print("| load | export | p99 per round (ms) | median p99 (ms) | median CPU per request (µs) | errors | spans exported / dropped / failed |")
    print("|---|---|---|---|---|---|---|")
    for load, command, p99, errors, spans, cpu in rows:
        for traced in (False, True):
            rounds = ", ".join(bench.fmt(x) for x in p99[traced])
            counts = (
                f"{spans.get('exported', 0):,} / {spans.get('dropped', 0):,} / {spans.get('failed', 0):,}"
                if traced
                else "–"
            )
            print(
                f"| {load} | {'on, 100%' if traced else 'off'} | {rounds} | "
                f"{bench.fmt(statistics.median(p99[traced]))} | {statistics.median(cpu[traced]):.0f} | "
                f"{errors[traced]:.2%} | {counts} |"
            )
    print()
    for load, command, p99, _, _, cpu in rows:
        ratio = statistics.median(p99[True]) / statistics.median(p99[False])
        cpu_ratio = statistics.median(cpu[True]) / statistics.median(cpu[False])
        print(f"{load}: median p99 on/off = {ratio:.3f}, CPU per request on/off = {cpu_ratio:.3f}  ({command})")


if __name__ == "__main__":
    main()
