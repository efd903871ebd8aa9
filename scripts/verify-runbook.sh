#!/usr/bin/env bash
# Runs every command of RUNBOOK.md's "Post-deployment verification" section against a running
# gateway. Needs GATEWAY_URL, API_KEY and MASTER_KEY; fails at the first command that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${GATEWAY_URL:?set GATEWAY_URL}" "${API_KEY:?set API_KEY}" "${MASTER_KEY:?set MASTER_KEY}"
export GATEWAY_URL API_KEY MASTER_KEY

commands=$(awk '
  /^## / { in_section = ($0 == "## Post-deployment verification") }
  in_section && /^```/ { in_block = !in_block; next }
  in_section && in_block { print }
' RUNBOOK.md)
[ -n "$commands" ] || { echo "no verification commands found in RUNBOOK.md" >&2; exit 1; }

n=0
while IFS= read -r cmd; do
  [ -z "$cmd" ] && continue
  n=$((n + 1))
  echo "[$n] $cmd"
  if ! bash -o pipefail -c "$cmd" >/dev/null; then
    echo "FAILED: $cmd" >&2
    exit 1
  fi
done <<< "$commands"
echo "runbook verification: $n commands passed"
