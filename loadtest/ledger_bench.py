#!/usr/bin/env python3
"""What the usage ledger costs on the request path: p99 at 1,000 req/s with the ledger off
(`SPARK_DATABASE_URL=none`), on PostgreSQL and on the default SQLite file, measured in the same
run (about 8 minutes on 2 cores with the default five rounds, build excluded).

    python3 loadtest/ledger_bench.py               # build, measure, print the table
    python3 loadtest/ledger_bench.py --no-build    # use the release binaries as they are
    python3 loadtest/ledger_bench.py --no-build --pin --setups postgres-own-cpu
        # the acceptance figure: the database on a CPU of its own (BENCHMARKS.md)

Everything runs on 127.0.0.1 and stops by itself: the release gateway, the mock upstream and
`spark-loadtest run` as the generator. PostgreSQL is measured up to three ways:
- `postgres`: the machine's server (`SPARK_TEST_POSTGRES_URL`, default
  postgres://postgres@127.0.0.1:5432/test), competing for the same two cores at equal priority;
- `postgres-idle` (without `--pin`): a server of the script's own (initdb in a temporary
  directory, a free port, default settings) under the SCHED_IDLE policy, so it only gets CPU the
  gateway, the mock and the generator leave;
- `postgres-own-cpu` (with `--pin`): the same server of the script's own on CPU 1 while the
  script, and so the gateway, the mock and the generator it starts, are held to CPU 0: the
  nearest this machine comes to a database on its own host. The ledger-off rounds run on CPU 0
  too, so both sides of the comparison have the same one CPU.
The script's own server is stopped (by its PID) and deleted at the end.
A control, `off+psql-writer` (only when named in `--setups`): the ledger off in the gateway while
one `psql` process inserts 1,000 rows a second, in the writer's statement shape, into the
machine's server. Its p99 against `off` is what the database's work costs the other processes on
the same cores, with no ledger code in the gateway at all.
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
import threading
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
SETUPS = ("off", "postgres", "postgres-idle", "postgres-own-cpu", "sqlite", "off+psql-writer")
PG = os.environ.get("SPARK_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def psql(url, sql):
    out = subprocess.run(["psql", url, "-Atqc", sql], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start_own_postgres(procs, pin):
    """A PostgreSQL server of this script's own, on CPU 1 with `pin`, else under SCHED_IDLE (as
    the `postgres` user when run as root: PostgreSQL refuses root). Returns its URL and its
    working directory."""
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
        if pin:
            os.sched_setaffinity(0, {1})
        else:
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


def new_schema(url):
    """A fresh, empty schema for one round."""
    schema = "ledger_bench_" + uuid.uuid4().hex[:12]
    psql(url, f"CREATE SCHEMA {schema}")
    return schema


def psql_writer(url, schema, stop):
    """Inserts 1,000 ledger-shaped rows a second through one `psql` session until `stop`."""
    ddl = (Path(__file__).resolve().parent.parent / "migrations" / "20261201000001_keys_usage_audit.sql").read_text()
    psql(url, f"SET search_path={schema};" + ddl)
    p = subprocess.Popen(["psql", url, "-q"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    p.stdin.write(f"SET search_path={schema};\n")
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        values = ",".join(
            f"('{uuid.uuid4().hex}',{n + i},'req','key','user','generate','anthropic','m','e',10,20,0,5,'ok',1)"
            for i in range(1000)
        )
        n += 1000
        p.stdin.write(f"INSERT INTO usage_records VALUES {values} ON CONFLICT (id) DO NOTHING;\n")
        p.stdin.flush()
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
    p.stdin.close()
    p.wait(timeout=30)


def measure(procs, mock_url, ledger, own_pg_url):
    env = {}
    schema = None
    stop = threading.Event()
    control = None
    if ledger == "off+psql-writer":
        schema = new_schema(PG)
        control = threading.Thread(target=psql_writer, args=(PG, schema, stop))
        control.start()
    pg = {"postgres": PG, "postgres-idle": own_pg_url, "postgres-own-cpu": own_pg_url}.get(ledger)
    if ledger.startswith("off"):
        env["SPARK_DATABASE_URL"] = "none"
    elif pg:
        schema = new_schema(pg)
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
            *bench.miss_nonce(RATE),
        ]
    )
    # The gateway's own CPU per request offered (warm-up included): what the ledger costs the
    # process itself, apart from the database server sharing this machine's two cores.
    offered = RATE * (int(DURATION[:-1]) + int(WARMUP[:-1]))
    result["cpuUsPerRequest"] = (cpu_seconds(gw.pid) - cpu0) / offered * 1e6
    rows = None
    if control:
        stop.set()
        control.join()
        psql(PG, f"DROP SCHEMA {schema} CASCADE")
    elif schema:
        time.sleep(2)  # one writer period and a margin: the last batch goes in
        rows = int(psql(pg, f"SELECT COUNT(*) FROM {schema}.usage_records"))
        psql(pg, f"DROP SCHEMA {schema} CASCADE")
    procs.stop(gw)
    return result, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of the set-ups (default {ROUNDS})")
    ap.add_argument(
        "--setups", default="",
        help="comma-separated set-ups to measure, `off` always among them (default: "
        "postgres, postgres-idle or postgres-own-cpu, and sqlite)",
    )
    ap.add_argument(
        "--pin", action="store_true",
        help="hold the gateway, the mock and the generator to CPU 0 and the script's own "
        "PostgreSQL to CPU 1 (postgres-own-cpu instead of postgres-idle)",
    )
    args = ap.parse_args()
    own = "postgres-own-cpu" if args.pin else "postgres-idle"
    chosen = args.setups.split(",") if args.setups else ["postgres", own, "sqlite"]
    if args.pin and "postgres-idle" in chosen or not args.pin and "postgres-own-cpu" in chosen:
        ap.error("postgres-own-cpu needs --pin, and postgres-idle cannot run with it")
    setups = tuple(s for s in SETUPS if s == "off" or s in chosen)
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        ap.error("--pin needs two CPUs")
    if not args.no_build:
        bench.build_release()
    if args.pin:
        # Children inherit the affinity: the gateway, the mock and the generator stay on CPU 0.
        os.sched_setaffinity(0, {0})
    bench.OUT_DIR.mkdir(parents=True, exist_ok=True)
    procs = bench.Procs()
    p99 = {s: [] for s in setups}
    cpu = {s: [] for s in setups}
    errors = {s: 0.0 for s in setups}
    sent = {s: 0 for s in setups}
    written = {s: 0 for s in setups}
    command = ""
    pg_dir = None
    try:
        _, mock_url = bench.start_mock(procs)
        own_pg_url = None
        if own in setups:
            own_pg_url, pg_dir = start_own_postgres(procs, args.pin)
        for _ in range(args.rounds):
            for s in setups:
                result, rows = measure(procs, mock_url, s, own_pg_url)
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
    for s in setups[1:]:
        on = statistics.median(p99[s])
        extra = statistics.median(cpu[s]) - statistics.median(cpu["off"])
        print(
            f"{s}: median p99 {on - off:+.3f} ms against the ledger off (ratio {on / off:.3f}); "
            f"gateway CPU {extra:+.1f} µs per request"
        )
    for s in (s for s in setups if s.startswith("postgres")):
        print(f"{s} rows written / requests sent (warm-up included, approximate): {written[s]} / {sent[s]}")


if __name__ == "__main__":
    main()
