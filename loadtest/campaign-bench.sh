#!/usr/bin/env bash
# Campaign benchmark: one campaign of N recipients over K numbers (tier 1,000 each) while
# single sends go through the API at LIVE_RATE/s, on a fresh pipeline per run (release
# binaries, its own topics and databases; the simulator answers every send and calls the
# statuses back). Printed per run: the campaign's sends/s until every recipient has its
# BSP answer, against the tiers' sum; the live sends' latency before and during it; CPU
# seconds and peak RSS per process, the load generator's and PostgreSQL's included.
# Results go to loadtest/results/campaign-<timestamp>.txt.
#
# usage: loadtest/campaign-bench.sh [RECIPIENTS] [NUMBERS] [RUNS] [LIVE_RATE]
#        (defaults 100000, 10, 3, 20)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
N=${1:-100000}
K=${2:-10}
RUNS=${3:-3}
LIVE=${4:-20}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/campaign-bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/campaign-$(date -u +%Y%m%dT%H%M%SZ).txt

cargo build --release --workspace --bins --locked >&2
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null

export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_META_APP_SECRET=bench-secret SWITCHBOARD_CLICKHOUSE_URL=http://127.0.0.1:8123
export SWITCHBOARD_ADMIN_API_KEY=bench-admin
export SWITCHBOARD_CREDENTIALS_KEYS="k1:$(head -c 32 /dev/urandom | base64)"
GW=127.0.0.1:18080
SIM=127.0.0.1:18091
export SIM_SECRETS='{"meta_app_secret":"bench-secret","meta_access_token":"bench-token"}'

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
  start bsp-sim SIM_ADDR=$SIM SIM_GATEWAY_URL=http://$GW
  start gateway SWITCHBOARD_HTTP_ADDR=$GW SWITCHBOARD_OPS_ADDR=127.0.0.1:19100 SWITCHBOARD_PUBLIC_URL=http://$GW
  start normalizer SWITCHBOARD_OPS_ADDR=127.0.0.1:19101 SWITCHBOARD_GROUP_ID=$id-n
  start pg-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19102 SWITCHBOARD_GROUP_ID=$id-p
  start ch-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19103 SWITCHBOARD_GROUP_ID=$id-c
  start router SWITCHBOARD_OPS_ADDR=127.0.0.1:19104 SWITCHBOARD_GROUP_ID=$id-r SWITCHBOARD_META_API_URL=http://$SIM/v21.0 SWITCHBOARD_TEMPLATE_SYNC_INTERVAL=1s
  for addr in 127.0.0.1:19100 127.0.0.1:19101 127.0.0.1:19102 127.0.0.1:19103 127.0.0.1:19104; do
    for _ in $(seq 1 150); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.2; done
  done
  for _ in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SWITCHBOARD_ADMIN_API_KEY" "http://$GW/admin/tenants/none")" = 404 ] && break
    sleep 0.2
  done
}

{
  # The runs happen in this subshell (it feeds tee): stop its pipeline however it ends.
  trap stop_pipeline EXIT
  echo "# loadtest/campaign-bench.sh $N $K $RUNS $LIVE   ($(date -u +%FT%TZ), $(nproc) cores)"
  for run in $(seq 1 "$RUNS"); do
    id=cbench$(date +%s)r$run
    start_pipeline "$id"
    declare -A before=()
    while read -r name pid; do before[$name]=$(cpu_of "$pid"); done < <(named_pids)
    pg_before=$(pg_cpu)
    echo "## run $run ($id)"
    /usr/bin/time -f "cpu_seconds loadgen %U+%S peak_rss %MKiB" "$BIN/loadgen" campaign-bench --gateway "http://$GW" \
      --sim-url "http://$SIM" --recipients "$N" --numbers "$K" --live-rate "$LIVE" \
      --database-url "$SWITCHBOARD_DATABASE_URL" 2>&1
    while read -r name pid; do
      echo "cpu_seconds $name $(awk -v a="$(cpu_of "$pid")" -v b="${before[$name]:-0}" 'BEGIN {printf "%.2f", a - b}') peak_rss $(rss_of "$pid")"
    done < <(named_pids)
    echo "cpu_seconds postgres(all backends) $(awk -v a="$(pg_cpu)" -v b="$pg_before" 'BEGIN {printf "%.2f", a - b}')"
    stop_pipeline
  done
} | tee "$OUT"
echo "results written to $OUT" >&2
