#!/usr/bin/env bash
# Live-events benchmark: per run, on a fresh broker, a gateway and a normalizer; TENANTS
# tenants and CLIENTS Server-Sent Events clients over them (`loadgen stream-bench`), Meta
# status webhooks at RATE/s for SECONDS. Printed per run: deliveries, post → client
# latency, clients that fell short, CPU seconds and peak RSS of every process (the load
# generator's, which also parses every delivered event, too).
# Results go to loadtest/results/stream-<timestamp>.txt; REPORT.md summarizes them.
#
# usage: loadtest/stream-bench.sh [CLIENTS] [RATE] [SECONDS] [RUNS] [TENANTS]
#        (defaults 1000 2000 30 3 10)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
CLIENTS=${1:-1000}
RATE=${2:-2000}
SECONDS_=${3:-30}
RUNS=${4:-3}
TENANTS=${5:-10}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/stream-bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/stream-$(date -u +%Y%m%dT%H%M%SZ).txt
GW=127.0.0.1:18080

deploy/infra.sh deps
cargo build --release --workspace --bins --locked >&2
export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_META_APP_SECRET=bench-secret SWITCHBOARD_ADMIN_API_KEY=bench-admin
export SWITCHBOARD_CREDENTIALS_KEYS="k1:$(head -c 32 /dev/urandom | base64)"

. loadtest/pipeline.sh
trap stop_pipeline EXIT

{
  trap stop_pipeline EXIT
  echo "# loadtest/stream-bench.sh $CLIENTS $RATE $SECONDS_ $RUNS $TENANTS   ($(date -u +%FT%TZ), $(nproc) cores)"
  for run in $(seq 1 "$RUNS"); do
    id=sbench$(date +%s)r$run
    deploy/infra.sh down >/dev/null 2>&1 || true
    SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null
    export SWITCHBOARD_TOPIC_PREFIX=$id.
    su postgres -c "psql -qc 'CREATE DATABASE $id OWNER switchboard'" >/dev/null
    export SWITCHBOARD_DATABASE_URL=postgres://switchboard:switchboard@127.0.0.1:5432/$id
    "$BIN/switchboard" create-topics --partitions 6 >/dev/null 2>&1
    : >"$RUN/pids"
    start() { local name=$1; shift; env "$@" "$BIN/$name" >"$RUN/$name.log" 2>&1 & pids+=($!); echo "$name $!" >>"$RUN/pids"; }
    start gateway SWITCHBOARD_HTTP_ADDR=$GW SWITCHBOARD_OPS_ADDR=127.0.0.1:19100 \
      SWITCHBOARD_STREAM_MAX_PER_TENANT=$(( CLIENTS / TENANTS + 2 )) SWITCHBOARD_HTTP_MAX_CONNECTIONS=$(( CLIENTS + 1000 ))
    start normalizer SWITCHBOARD_OPS_ADDR=127.0.0.1:19101 SWITCHBOARD_GROUP_ID=$id-n
    for addr in 127.0.0.1:19100 127.0.0.1:19101; do
      for _ in $(seq 1 150); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.2; done
    done
    for _ in $(seq 1 150); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SWITCHBOARD_ADMIN_API_KEY" "http://$GW/admin/tenants/none")" = 404 ] && break
      sleep 0.2
    done
    declare -A before=()
    while read -r name pid; do before[$name]=$(cpu_of "$pid"); done < <(named_pids)
    echo "## run $run ($id)"
    /usr/bin/time -f "cpu_seconds loadgen %U+%S peak_rss %MKiB" \
      "$BIN/loadgen" stream-bench --gateway "http://$GW" --tenants "$TENANTS" --clients "$CLIENTS" \
      --rate "$RATE" --seconds "$SECONDS_" 2>&1
    while read -r name pid; do
      echo "cpu_seconds $name $(awk -v a="$(cpu_of "$pid")" -v b="${before[$name]:-0}" 'BEGIN {printf "%.2f", a - b}') peak_rss $(rss_of "$pid")"
    done < <(named_pids)
    curl -s http://127.0.0.1:19100/metrics | grep -E '^switchboard_gateway_(stream_catch_ups_total|streams_closed_total)' || true
    stop_pipeline
  done
} | tee "$OUT"
echo "results written to $OUT" >&2
