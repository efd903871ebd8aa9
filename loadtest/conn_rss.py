#!/usr/bin/env python3
"""Gateway memory against open client connections (issue 20, item 4).

    python3 loadtest/conn_rss.py --binary target/release/spark-gateway [--binary OTHER ...] \\
        [--connections 3000] [--rounds 2]

For each binary, alternating, `--rounds` times: starts the gateway as `bench.py` runs it (JSON
logs to a file, default SQLite ledger, cache on, the zero-latency mock upstream), then
1. reads RSS at idle;
2. opens `--connections` keep-alive HTTP/1.1 connections, sends `GET /livez` on each and reads
   the answer, keeps them all open and reads RSS one second later: (RSS - idle) / connections
   open then (counted from /proc/net/tcp) is what an idle client connection costs; the gateway
   runs with header-read and idle timeouts of 300 s, so none is closed while the rest open;
3. with those connections still open, runs `spark-loadtest` on the cache-hit path (closed model,
   32 workers, 8 s) and samples RSS every 250 ms: the peak under load with that many
   connections open.
Everything runs on 127.0.0.1 and stops by itself; only processes this script started are stopped.
"""

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def open_idle(port, n):
    """`n` keep-alive connections, each having completed one request."""
    conns = []
    req = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        conns.append(s)
    for s in conns:
        s.settimeout(10)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("the gateway closed a connection during the set-up")
            got += chunk
    return conns


def measure(procs, mock, binary, n):
    # Opening thousands of connections one after the other takes ~10 s here, as long as the
    # default SPARK_HEADER_READ_TIMEOUT lets an idle HTTP/1.1 connection wait: the first ones
    # would be closed before the reading, and the memory they cost with them.
    gw, url = bench.start_gateway(procs, mock, "300s", binary=binary, extra_env={
        "SPARK_HEADER_READ_TIMEOUT": "300s", "SPARK_IDLE_TIMEOUT": "300s"})
    port = int(url.rsplit(":", 1)[1])
    time.sleep(1.0)
    idle = bench.rss_bytes(gw.pid)
    conns = open_idle(port, n)
    time.sleep(1.0)
    held = bench.rss_bytes(gw.pid)
    open_now = bench.client_connections(port)
    r = bench.watched(gw, url, lambda: bench.loadtest([
        "--target", url, "--api-key", bench.API_KEY, "--scenario", "generate-hit",
        "--concurrency", "32", "--duration", "8s", "--warmup", "2s",
    ]))
    for s in conns:
        s.close()
    procs.stop(gw)
    return {
        # Per connection still open when RSS was read, not per connection opened.
        "idle": idle, "held": held, "perConn": (held - idle) / max(open_now, 1), "open": open_now,
        "peak": r["gatewayPeakRssBytes"], "peakConns": r["clientConnections"],
        "rps": r["throughputRps"], "errors": r["errorRate"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", action="append", type=Path, required=True)
    ap.add_argument("--connections", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
    procs = bench.Procs()
    try:
        _, mock = bench.start_mock(procs)

        def run_one(b, _round):
            m = measure(procs, mock, b.resolve(), args.connections)
            print(f"{b}: idle {m['idle'] / 2**20:.1f} MiB, {m['open']} connections open "
                  f"{m['held'] / 2**20:.1f} MiB ({m['perConn'] / 1024:.1f} KiB each), peak under "
                  f"load {m['peak'] / 2**20:.1f} MiB with {m['peakConns']} connections, "
                  f"{m['rps']:.0f} req/s, errors {m['errors']:.2%}", file=sys.stderr)
            return m

        out = bench.alternating(args.rounds, args.binary, run_one)
    finally:
        procs.stop_all()
    print(f"Machine: {bench.machine()}; {args.connections} idle connections, {args.rounds} rounds, medians")
    print()
    mib = lambda v: f"{v / 2**20:.1f} MiB"
    print("\n".join(bench.median_table(
        out,
        ["binary", "idle RSS", "RSS with the connections open", "per connection",
         "peak RSS, hits at full speed with them open"],
        lambda med: [mib(med("idle")), mib(med("held")), f"{med('perConn') / 1024:.1f} KiB", mib(med("peak"))],
    )))


if __name__ == "__main__":
    main()
