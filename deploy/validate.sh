#!/usr/bin/env bash
# Validates the deployment files with the real tools, installing what is missing:
#   deploy/k8s       kubectl kustomize (base, overlays/production) -> kubernetes-validate
#                    --strict against Kubernetes $K8S_VERSIONS, plus deploy/validate.py's
#                    wiring checks (ports, probes, env, PDBs, selectors, security)
#   deploy/prometheus promtool check rules / test rules / check config
#   deploy/grafana   JSON, its queries parsed by promtool
#   metric names     every switchboard_* metric (and label) the dashboard and the alerts
#                    use is registered in the Rust sources
#   docker-compose.yml  docker compose config -q, health checks and scrape targets
#   YAML style       yamllint
#   ClickHouse DDL   every migration and the analytics query shapes on a current
#                    ClickHouse (chdb, in-process; the local server is 18.16)
#
# usage: deploy/validate.sh
# Needs root for apt-get on the first run (kubectl, prometheus for promtool,
# docker-compose, python3-venv); kubernetes-validate and yamllint go into a venv under
# $SWITCHBOARD_CACHE (~/.cache/switchboard), outside the clone. Later runs install
# nothing and take a few seconds. Everything runs offline once installed
# (kubernetes-validate ships its schemas).
# shellcheck disable=SC2317 # the check functions are called through step
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}
VENV=$CACHE/venv
PY_REQUIREMENTS="kubernetes-validate==1.37.0 yamllint==1.38.0 chdb==4.4.0"
# Oldest and newest Kubernetes the manifests are checked against (kubernetes-validate
# 1.37.0 knows 1.25 to 1.37).
K8S_VERSIONS=(1.30.0 1.36.0)

log() { printf '[validate] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

apt_updated='' installed=''
apt_install() {
  log "installing $* (apt-get)"
  installed=1
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# kubectl with kustomize v4 or later (kubectl 1.21+): `labels`, `patches` with targets.
kustomize_ok() {
  command -v kubectl >/dev/null || return 1
  local v
  v=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
  [ -n "$v" ] && [ "$v" -ge 4 ]
}

install_tools() {
  local started=$SECONDS
  if ! kustomize_ok; then
    # The kubectl package comes from the Kubernetes (pkgs.k8s.io) or Google Cloud apt
    # repository; Debian's own kubernetes-client is 1.20, whose kustomize is too old.
    apt_install kubectl || true
    kustomize_ok || die "need kubectl 1.21 or later (kustomize v4+): add the Kubernetes apt repository (https://pkgs.k8s.io) and apt-get install kubectl"
  fi
  if ! command -v promtool >/dev/null; then
    apt_install prometheus # promtool comes with it
    # Only promtool was wanted: do not leave a Prometheus server running.
    if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
  fi
  if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    apt_install docker-compose
  fi
  command -v python3 >/dev/null || apt_install python3
  if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$PY_REQUIREMENTS" ]; then
    log "installing $PY_REQUIREMENTS into $VENV"
    installed=1
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv # Debian's python3 has venv in a package of its own
      python3 -m venv "$VENV"
    fi
    # shellcheck disable=SC2086 # one word per requirement
    "$VENV/bin/pip" install -q --disable-pip-version-check $PY_REQUIREMENTS
    echo "$PY_REQUIREMENTS" >"$VENV/.requirements"
  fi
  if [ -n "$installed" ]; then log "tools ready in $((SECONDS - started)) s"; fi
}

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
# step [-v] NAME COMMAND...: run it and print ok/FAIL with its time; its output is shown
# on failure (and with -v, always).
step() {
  local verbose=
  if [ "$1" = -v ]; then verbose=1; shift; fi
  local name=$1; shift
  local start; start=$(date +%s%N)
  if "$@" >"$tmp/out" 2>&1; then
    printf 'ok    %-60s %6d ms\n' "$name" "$(ms_since "$start")"
    if [ -n "$verbose" ]; then sed 's/^/      /' "$tmp/out"; fi
  else
    printf 'FAIL  %-60s %6d ms\n' "$name" "$(ms_since "$start")"
    sed 's/^/      /' "$tmp/out"
    failed=1
  fi
}

kustomize_build() { kubectl kustomize "deploy/k8s/$1" >"$tmp/$2.yaml"; }

# kubernetes-validate reads stdin once, so it gets the rendered file; --strict rejects
# unknown fields, and a kind it has no schema for is only a WARN: treat that as failure.
kubernetes_validate() {
  local args=(--strict --quiet) v rc=0
  for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
  "$VENV/bin/kubernetes-validate" "${args[@]}" "$tmp/$1.yaml" >"$tmp/kv" 2>&1 || rc=$?
  cat "$tmp/kv"
  [ "$rc" = 0 ] && ! grep -q . "$tmp/kv"
}

yaml_lint() {
  "$VENV/bin/yamllint" --strict -d '{extends: default, rules: {line-length: disable, document-start: disable, braces: {max-spaces-inside: 1}, brackets: {max-spaces-inside: 1}}}' \
    deploy/k8s deploy/prometheus docker-compose.yml
}

dashboard_queries() {
  "$VENV/bin/python" deploy/validate.py metrics "$tmp/dashboard-rules.yml" || return 1
  promtool check rules "$tmp/dashboard-rules.yml" >"$tmp/promtool" 2>&1 || { cat "$tmp/promtool"; return 1; }
  echo "promtool: the dashboard's $(grep -c 'record:' "$tmp/dashboard-rules.yml") queries parse"
}

install_tools
total=$(date +%s%N)
step "kubectl kustomize deploy/k8s/base" kustomize_build base base
step "kubectl kustomize deploy/k8s/overlays/production" kustomize_build overlays/production production
step "kubernetes-validate --strict base (k8s ${K8S_VERSIONS[*]})" kubernetes_validate base
step "kubernetes-validate --strict production (k8s ${K8S_VERSIONS[*]})" kubernetes_validate production
step -v "manifest wiring (deploy/validate.py manifests)" "$VENV/bin/python" deploy/validate.py manifests "$tmp/base.yaml" "$tmp/production.yaml"
step "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
step "promtool test rules deploy/prometheus/alerts.test.yml" promtool test rules deploy/prometheus/alerts.test.yml
step "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
step -v "ClickHouse migrations on a current release (chdb)" "$VENV/bin/python" deploy/clickhouse_current.py
step "json deploy/grafana/switchboard.json" python3 -m json.tool deploy/grafana/switchboard.json
step -v "metric names, labels and dashboard queries (promtool)" dashboard_queries
step "docker compose config -q" compose -f docker-compose.yml config -q
step -v "compose health checks and scrape targets" "$VENV/bin/python" deploy/validate.py compose
step "yamllint" yaml_lint
printf 'validate: %s in %d ms\n' "$([ "$failed" = 0 ] && echo passed || echo FAILED)" "$(ms_since "$total")"
exit "$failed"
