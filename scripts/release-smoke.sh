#!/usr/bin/env bash
# Checks the release binary's allocator, starts it on the simulator, checks `spark-gateway
# healthcheck` (exit 0), runs the runbook's verification commands against it, stops it with
# SIGTERM, and checks that healthcheck then fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/spark-gateway
[ -x "$bin" ] || cargo build --release --locked --bin spark-gateway

# The allocator is the binary's own (jemalloc, src/main.rs) with its options compiled in
# (.cargo/config.toml): jemalloc prints its settings at exit when asked, glibc prints nothing.
stats=$(_RJEM_MALLOC_CONF=stats_print:true "$bin" check-config 2>&1 >/dev/null || true)
if ! grep -q '^  opt.narenas: 2$' <<<"$stats"; then
  echo "the release binary does not run jemalloc with narenas:2 compiled in" >&2
  exit 1
fi
echo "allocator: jemalloc, narenas 2"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export GATEWAY_URL="http://127.0.0.1:$port"
export API_KEY=user-smoke-smokesecret0123456789ab
export MASTER_KEY=master-smoke-0123456789abcdef
SPARK_BIND="127.0.0.1:$port" SPARK_API_KEYS="$API_KEY" SPARK_MASTER_API_KEY="$MASTER_KEY" \
  "$bin" >/dev/null 2>&1 &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  "$bin" healthcheck --url "$GATEWAY_URL" 2>/dev/null && break
  sleep 0.1
done
"$bin" healthcheck --url "$GATEWAY_URL"
echo "healthcheck: exit 0 while running"

bash scripts/verify-runbook.sh

kill -TERM "$gateway"
wait "$gateway"
trap - EXIT
if "$bin" healthcheck --url "$GATEWAY_URL" 2>/dev/null; then
  echo "healthcheck passed after the gateway stopped" >&2
  exit 1
fi
echo "healthcheck: non-zero once stopped"
