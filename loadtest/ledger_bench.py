#!/usr/bin/env python3
"""What the usage ledger costs on the request path: p99 at 1,000 req/s with the ledger off
(`SPARK_DATABASE_URL=none`), on PostgreSQL and on the default SQLite file, measured in the same
run (about 8 minutes on 2 cores with the default five rounds, build excluded).

    python3 loadtest/ledger_bench.py               # build, measure, print the table
    python3 loadtest/ledger_bench.py --no-build    # use the release binaries as they are

Everything runs on 127.0.0.1 and stops by itself: the release gateway, the mock upstream and
`spark-loadtest run` as the generator. PostgreSQL is measured twice:
- `postgres`: the machine's server (`SPARK_TEST_POSTGRES_URL`, default
  postgres://postgres@127.0.0.1:5432/test), competing for the same two cores at equal priority;
- `postgres-idle`: a server of the script's own (initdb in a temporary directory, a free port,
  default settings) under the SCHED_IDLE policy, so it only gets CPU the gateway, the mock and the
  generator leave: the nearest this machine comes to a database on its own host. It is stopped
  (by its PID) and deleted at the end.
Each round uses a fresh schema. Every request is a
miss through a provider (`generate-miss`, cache off), so every request writes a ledger row. Rounds
alternate the three set-ups so a drift of the shared machine hits them alike; after each
PostgreSQL round the rows in the database are counted against the requests the generator sent.
"""

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the shared helpers: processes, ports, the generator, the machine)
from trace_bench import cpu_seconds  # noqa: E402  (utime + stime of a process, from /proc)

ROUNDS = 5
DURATION = "10s"
WARMUP = "2s"
RATE = 1000
PG = os.environ.get("SPARK_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def psql(url, sql):
    out = subprocess.run(["psql", url, "-Atqc", sql], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start_idle_postgres(procs):
    """A PostgreSQL server of this script's own under SCHED_IDLE (as the `postgres` user when
    run as root: PostgreSQL refuses root). Returns its URL and its working directory."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        raise SystemExit("PostgreSQL's initdb is needed (apt-get install postgresql)")
    bin_dir = bins[-1].parent
    work = Path(tempfile.mkdtemp(prefix="spark-ledger-bench-pg-"))
    as_postgres = os.geteuid() == 0

    def demote():
        if as_postgres:
            pw = pwd.getpwnam("postgres")
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    if as_postgres:
        shutil.chown(work, "postgres")
    subprocess.run(
        [str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(work / "data")],
        preexec_fn=demote, check=True, stdout=subprocess.DEVNULL,
    )
    port = bench.free_port()
    procs.start(
        [str(bin_dir / "postgres"), "-D", str(work / "data"), "-p", str(port), "-k", str(work),
         "-c", "listen_addresses=127.0.0.1"],
        preexec_fn=demote, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"postgres://postgres@127.0.0.1:{port}/postgres"
    for _ in range(300):
        if subprocess.run(["psql", url, "-Atqc", "SELECT 1"], capture_output=True).returncode == 0:
            return url, work
        time.sleep(0.1)
    raise SystemExit("the benchmark's own PostgreSQL did not start within 30 s")


def measure(procs, mock_url, ledger, idle_pg_url):
    env = {}
    schema = None
    pg = {"postgres": PG, "postgres-idle": idle_pg_url}.get(ledger)
    if ledger == "off":
        env["SPARK_DATABASE_URL"] = "none"
    elif pg:
        schema = "ledger_bench_" + uuid.uuid4().hex[:12]
        psql(pg, f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in pg else "?"
        env["SPARK_DATABASE_URL"] = f"{pg}{sep}options=-c%20search_path%3D{schema}"
    else:
        env["SPARK_DATA_DIR"] = str(bench.OUT_DIR / f"ledger-{uuid.uuid4().hex[:12]}")
    gw, url = bench.start_gateway(procs, mock_url, "0s", env)
    cpu0 = cpu_seconds(gw.pid)
    result = bench.loadtest(
        [
            "--target", url, "--api-key", bench.API_KEY, "--scenario", "generate-miss",
            "--rate", str(RATE), "--duration", DURATION, "--warmup", WARMUP,
        ]
    )
    # The gateway's own CPU per request offered (warm-up included): what the ledger costs the
    # process itself, apart from the database server sharing this machine's two cores.
    offered = RATE * (int(DURATION[:-1]) + int(WARMUP[:-1]))
    result["cpuUsPerRequest"] = (cpu_seconds(gw.pid) - cpu0) / offered * 1e6
    rows = None
    if schema:
        time.sleep(2)  # one writer period and a margin: the last batch goes in
        rows = int(psql(pg, f"SELECT COUNT(*) FROM {schema}.usage_records"))
        psql(pg, f"DROP SCHEMA {schema} CASCADE")
    procs.stop(gw)
    return result, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of the four set-ups (default {ROUNDS})")
    args = ap.parse_args()
    if not args.no_build:
        bench.build_release()
    bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
    procs = bench.Procs()
    setups = ("off", "postgres", "postgres-idle", "sqlite")
    p99 = {s: [] for s in setups}
    cpu = {s: [] for s in setups}
    errors = {s: 0.0 for s in setups}
    sent = {s: 0 for s in setups}
    written = {s: 0 for s in setups}
    command = ""
    pg_dir = None
    try:
        _, mock_url = bench.start_mock(procs)
        idle_pg_url, pg_dir = start_idle_postgres(procs)
        for _ in range(args.rounds):
            for s in setups:
                result, rows = measure(procs, mock_url, s, idle_pg_url)
                p99[s].append(result["latencyMs"]["p99"])
                cpu[s].append(result["cpuUsPerRequest"])
                errors[s] = max(errors[s], result["errorRate"])
                command = result["command"]
                if rows is not None:
                    # Warm-up requests are written too: count every request the generator sent.
                    sent[s] += result["requests"] + RATE * int(WARMUP[:-1])
                    written[s] += rows
    finally:
        procs.stop_all()
        if pg_dir:
            shutil.rmtree(pg_dir, ignore_errors=True)

    print(f"Machine: {bench.machine()}")
    print(f"Generator: {command}")
    print()
    print("| ledger | p99 per round (ms) | median p99 (ms) | median gateway CPU per request (µs) | errors |")
    print("|---|---|---|---|---|")
    for s in setups:
        rounds = ", ".join(bench.fmt(x) for x in p99[s])
        print(
            f"| {s} | {rounds} | {bench.fmt(statistics.median(p99[s]))} | "
            f"{statistics.median(cpu[s]):.0f} | {errors[s]:.2%} |"
        )
    print()
    off = statistics.median(p99["off"])
    for s in ("postgres", "postgres-idle", "sqlite"):
        on = statistics.median(p99[s])
        extra = statistics.median(cpu[s]) - statistics.median(cpu["off"])
        print(
            f"{s}: median p99 {on - off:+.3f} ms against the ledger off (ratio {on / off:.3f}); "
            f"gateway CPU {extra:+.1f} µs per request"
        )
    for s in ("postgres", "postgres-idle"):
        print(f"{s} rows written / requests sent (warm-up included, approximate): {written[s]} / {sent[s]}")


if __name__ == "__main__":
    main()
