#!/usr/bin/env bash
# Idle resident memory of a gateway binary: started with the embedded defaults (simulator, no
# database) on a free loopback port, read from /proc one second after /livez first answers.
# Usage: loadtest/idle_rss.sh [binary] [starts]   (default target/release/spark-gateway, 3)
set -euo pipefail
bin=${1:-target/release/spark-gateway}
starts=${2:-3}
for _ in $(seq 1 "$starts"); do
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  SPARK_BIND="127.0.0.1:$port" "$bin" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/livez" >/dev/null && break
    sleep 0.05
  done
  sleep 1
  # Anonymous and file-backed shares apart: the binary's mapped pages depend on how its file sits
  # in the page cache (a fresh copy of the same binary read 1.8 MiB more), the heap does not.
  awk '/^VmRSS/ { t = $2 } /^RssAnon/ { a = $2 } /^RssFile/ { f = $2 }
       END { printf "%.1f MiB (anonymous %.1f, file %.1f)\n", t / 1024, a / 1024, f / 1024 }' "/proc/$pid/status"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
