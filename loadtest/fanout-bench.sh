#!/usr/bin/env bash
# Fan-out benchmark: webhooks → gateway → normalizer → wa.events → fanout → E client
# endpoints on loopback (the client-endpoint simulator inside loadgen), with the sinks
# writing events and the delivery log. Each run gets a fresh pipeline (release binaries,
# its own topics and databases). Two scenarios, RUNS times each:
#   A: 100 endpoints, all answering at once: as fast as possible (capacity), then paced at
#      100 events/s = 10,000 deliveries/s (latency at that sustained rate);
#   B: 10 endpoints all answering, then 10 endpoints of which 1 never answers (timeout).
# Printed per run: deliveries/s, per-endpoint rates, event-to-delivery p50/p99, CPU
# seconds and peak RSS per process. Results go to loadtest/results/fanout-<timestamp>.txt.
#
# usage: loadtest/fanout-bench.sh [EVENTS_A] [EVENTS_B] [RUNS]   (defaults 3000, 20000, 3)
#        FANOUT_BENCH_ONLY=A|B runs one scenario
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
NA=${1:-3000}
NB=${2:-20000}
RUNS=${3:-3}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/fanout-bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/fanout-$(date -u +%Y%m%dT%H%M%SZ).txt

deploy/infra.sh deps
cargo build --release --workspace --bins --locked >&2
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null

export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_META_APP_SECRET=bench-secret SWITCHBOARD_CLICKHOUSE_URL=http://127.0.0.1:8123
export SWITCHBOARD_ADMIN_API_KEY=bench-admin SWITCHBOARD_ENDPOINT_ALLOW_NETS=127.0.0.0/8
export SWITCHBOARD_CREDENTIALS_KEYS="k1:$(head -c 32 /dev/urandom | base64)"
GW=127.0.0.1:18080

. loadtest/pipeline.sh
trap stop_pipeline EXIT

start_pipeline() { # id
  local id=$1
  export SWITCHBOARD_TOPIC_PREFIX=$id. SWITCHBOARD_CLICKHOUSE_DATABASE=$id
  su postgres -c "psql -qc 'CREATE DATABASE $id OWNER switchboard'" >/dev/null
  export SWITCHBOARD_DATABASE_URL=postgres://switchboard:switchboard@127.0.0.1:5432/$id
  "$BIN/switchboard" create-topics --partitions 6 >/dev/null 2>&1
  : >"$RUN/pids"
  start() { local name=$1; shift; env "$@" "$BIN/$name" >"$RUN/$name.log" 2>&1 & pids+=($!); echo "$name $!" >>"$RUN/pids"; }
  start gateway SWITCHBOARD_HTTP_ADDR=$GW SWITCHBOARD_OPS_ADDR=127.0.0.1:19100 SWITCHBOARD_PUBLIC_URL=http://$GW
  start normalizer SWITCHBOARD_OPS_ADDR=127.0.0.1:19101 SWITCHBOARD_GROUP_ID=$id-n
  start pg-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19102 SWITCHBOARD_GROUP_ID=$id-p
  start ch-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19103 SWITCHBOARD_GROUP_ID=$id-c
  start fanout SWITCHBOARD_OPS_ADDR=127.0.0.1:19105 SWITCHBOARD_GROUP_ID=$id-f
  for addr in 127.0.0.1:19100 127.0.0.1:19101 127.0.0.1:19102 127.0.0.1:19103 127.0.0.1:19105; do
    for _ in $(seq 1 150); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.2; done
  done
  for _ in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SWITCHBOARD_ADMIN_API_KEY" "http://$GW/admin/tenants/none")" = 404 ] && break
    sleep 0.2
  done
}

measure() { # label, loadgen args...
  local label=$1; shift
  local id=fbench$(date +%s)$RANDOM
  # A fresh broker per run: its memory storage fills up and slows later runs otherwise.
  deploy/infra.sh down >/dev/null 2>&1
  SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null
  start_pipeline "$id"
  declare -A before=()
  while read -r name pid; do before[$name]=$(cpu_of "$pid"); done < <(named_pids)
  echo "## $label ($id)"
  # loadgen hosts the receivers (the client-endpoint simulator): its CPU is theirs.
  /usr/bin/time -f "cpu_seconds loadgen+receivers %U+%S peak_rss %MKiB" \
    "$BIN/loadgen" fanout-bench --gateway "http://$GW" --fanout-ops http://127.0.0.1:19105 "$@" 2>&1
  while read -r name pid; do
    echo "cpu_seconds $name $(awk -v a="$(cpu_of "$pid")" -v b="${before[$name]:-0}" 'BEGIN {printf "%.2f", a - b}') peak_rss $(rss_of "$pid")"
  done < <(named_pids)
  stop_pipeline
}

{
  trap stop_pipeline EXIT
  echo "# loadtest/fanout-bench.sh $NA $NB $RUNS   ($(date -u +%FT%TZ), $(nproc) cores)"
  for run in $(seq 1 "$RUNS"); do
    if [ "${FANOUT_BENCH_ONLY:-A}" != B ]; then
      measure "A run $run: 100 endpoints, as fast as possible" --endpoints 100 --events "$NA"
      measure "A run $run: 100 endpoints, 100 events/s (10,000 deliveries/s)" --endpoints 100 --events "$NA" --rate 100
    fi
    if [ "${FANOUT_BENCH_ONLY:-B}" != A ]; then
      measure "B run $run: 10 endpoints, all answering" --endpoints 10 --events "$NB"
      measure "B run $run: 10 endpoints, 1 never answers" --endpoints 10 --hang 1 --events "$NB"
    fi
  done
} | tee "$OUT"
echo "results written to $OUT" >&2
