#!/usr/bin/env bash
# Send-path benchmark: API → wa.send.requests → router → BSP simulator, with the
# simulator's status webhooks coming back through gateway → normalizer → sinks. Each run
# gets a fresh pipeline (release binaries, its own topics and databases). Printed per
# run: accept rate and latency, end-to-end sends/s until every send has its BSP answer
# and until every send is `read`, the busiest number's peak per second, CPU seconds and
# peak RSS per process. Results go to loadtest/results/send-<timestamp>.txt.
#
# usage: loadtest/send-bench.sh [SENDS_PER_RUN] [CONCURRENCY] [RUNS] [NUMBERS]
#        (defaults 20000, 64, 3, 12); SEND_BENCH_STATUSES=off: the simulator sends no
#        status webhooks (the send path alone)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
N=${1:-20000}
C=${2:-64}
RUNS=${3:-3}
K=${4:-12}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/send-bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/send-$(date -u +%Y%m%dT%H%M%SZ).txt

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
  # A fresh broker per run: its memory storage slows every fetch as it fills (measured:
  # 1,395, 987, 989 sends/s in three consecutive runs on one broker).
  SWITCHBOARD_BIN=$BIN deploy/infra.sh restart-broker >/dev/null 2>&1
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
  start router SWITCHBOARD_OPS_ADDR=127.0.0.1:19104 SWITCHBOARD_GROUP_ID=$id-r SWITCHBOARD_META_API_URL=http://$SIM/v21.0
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
  echo "# loadtest/send-bench.sh $N $C $RUNS $K   ($(date -u +%FT%TZ), $(nproc) cores, statuses ${SEND_BENCH_STATUSES:-on})"
  for run in $(seq 1 "$RUNS"); do
    id=sbench$(date +%s)r$run
    start_pipeline "$id"
    declare -A before=()
    while read -r name pid; do before[$name]=$(cpu_of "$pid"); done < <(named_pids)
    pg_before=$(pg_cpu)
    echo "## run $run ($id)"
    /usr/bin/time -f "cpu_seconds loadgen %U+%S peak_rss %MKiB" \
      "$BIN/loadgen" send-bench --gateway "http://$GW" --sim-url "http://$SIM" --messages "$N" \
      --concurrency "$C" --numbers "$K" --database-url "$SWITCHBOARD_DATABASE_URL" 2>&1
    for port in 19101 19102 19103 19104; do
      curl -s "http://127.0.0.1:$port/metrics" | awk -v port="$port" '/^switchboard_stream_offset_gaps_total/ {print "offset_gaps :" port, $0}'
    done
    while read -r name pid; do
      echo "cpu_seconds $name $(awk -v a="$(cpu_of "$pid")" -v b="${before[$name]:-0}" 'BEGIN {printf "%.2f", a - b}') peak_rss $(rss_of "$pid")"
    done < <(named_pids)
    echo "cpu_seconds postgres(all backends) $(awk -v a="$(pg_cpu)" -v b="$pg_before" 'BEGIN {printf "%.2f", a - b}')"
    stop_pipeline
  done
} | tee "$OUT"
echo "results written to $OUT" >&2
