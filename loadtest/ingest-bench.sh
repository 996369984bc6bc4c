#!/usr/bin/env bash
# Ingest benchmark with a load generator that costs little per request: wrk (Debian's
# package, installed if missing) replays pre-signed Meta webhooks (`loadgen presign`,
# each request formatted once by loadtest/wrk/presigned.lua) at the gateway over C
# keep-alive connections for S seconds. Each run gets a fresh gateway and its own topics;
# only the gateway, the broker and the registry run (ingest only: nothing consumes), so
# the figure is what the gateway and the broker take, not the rest of the pipeline.
# Printed per run: accepted/s, latency percentiles, the records the broker holds
# (every 200 must be one), and CPU seconds per process, wrk's included.
# Results go to loadtest/results/ingest-<timestamp>.txt.
#
# usage: loadtest/ingest-bench.sh [SECONDS] [CONNECTIONS] [RUNS] [THREADS]
#        (defaults 20, 64, 3, 1)
# env:   any SWITCHBOARD_* setting is passed to the gateway (e.g. SWITCHBOARD_KAFKA_LINGER).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
S=${1:-20}
C=${2:-64}
RUNS=${3:-3}
T=${4:-1}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/ingest-bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/ingest-$(date -u +%Y%m%dT%H%M%SZ).txt

. loadtest/pipeline.sh
need_wrk
cargo build --release --workspace --bins --locked >&2
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null

export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_META_APP_SECRET=bench-secret
GW=127.0.0.1:18080
trap stop_pipeline EXIT

# 10,000 conversations: 38,500 distinct signed webhooks (3 statuses + 1 inbound each, one
# conversation in 20 a single failure), cycled.
BODIES=$RUN/bodies.txt
"$BIN/loadgen" presign --messages 10000 --meta-secret bench-secret --out "$BODIES"

start_gateway() { # id
  local id=$1
  export SWITCHBOARD_TOPIC_PREFIX=$id.
  "$BIN/switchboard" create-topics --partitions 6 >/dev/null 2>&1
  : >"$RUN/pids"
  SWITCHBOARD_HTTP_ADDR=$GW SWITCHBOARD_OPS_ADDR=127.0.0.1:19100 "$BIN/gateway" >"$RUN/gateway.log" 2>&1 &
  pids+=($!)
  echo "gateway $!" >>"$RUN/pids"
  echo "registry $(pgrep -f schema-registry | head -1)" >>"$RUN/pids"
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:19100/readyz" >/dev/null && break; sleep 0.2; done
}


{
  trap stop_pipeline EXIT
  echo "# loadtest/ingest-bench.sh $S $C $RUNS $T   ($(date -u +%FT%TZ), $(nproc) cores, linger ${SWITCHBOARD_KAFKA_LINGER:-default}, compression ${SWITCHBOARD_KAFKA_COMPRESSION:-default}, $(git rev-parse --short HEAD))"
  for run in $(seq 1 "$RUNS"); do
    id=ingest$(date +%s)r$run
    # A fresh broker per run: its memory storage gets slower as it fills.
    SWITCHBOARD_BIN=$BIN deploy/infra.sh restart-broker 2>/dev/null
    start_gateway "$id"
    # Warm-up: connections, the producer's metadata, the registry's schema id.
    BODIES=$BODIES THREADS=$T wrk -t"$T" -c"$C" -d2s -s loadtest/wrk/presigned.lua "http://$GW/webhooks/meta" >/dev/null
    declare -A before=()
    while read -r name pid; do before[$name]=$(cpu_of "$pid"); done < <(named_pids)
    echo "## run $run ($id)"
    TIMEFORMAT='cpu_seconds wrk %U+%S'
    time BODIES=$BODIES THREADS=$T wrk -t"$T" -c"$C" -d"${S}s" --timeout 10s -s loadtest/wrk/presigned.lua "http://$GW/webhooks/meta" | grep '^wrk:'
    while read -r name pid; do
      [ "$name" = clickhouse ] && continue
      echo "cpu_seconds $name $(awk -v a="$(cpu_of "$pid")" -v b="${before[$name]:-0}" 'BEGIN {printf "%.2f", a - b}') peak_rss $(rss_of "$pid")"
    done < <(named_pids)
    # Every 200 is a record the broker acknowledged: the two counts must agree.
    ok=$(curl -s http://127.0.0.1:19100/metrics | awk '/^switchboard_gateway_webhooks_total\{.*outcome="accepted"/ {s += $2} END {print s + 0}')
    echo "accepted (warm-up included) $ok, records on the raw topic $("$BIN/loadgen" topic-records --topic "${id}.wa.webhooks.raw")"
    stop_pipeline
  done
} 2>&1 | tee "$OUT"
echo "results written to $OUT" >&2
