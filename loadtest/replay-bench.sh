#!/usr/bin/env bash
# Replay benchmark. Per run, on a fresh broker:
#   1. EVENTS synthetic canonical events onto wa.events (`loadgen events`);
#   2. `switchboard replay` of all of them into an empty ClickHouse database, then into
#      an empty PostgreSQL database (the sinks' own code): events/s and CPU seconds and
#      peak RSS of the CLI, the broker, ClickHouse and PostgreSQL;
#   3. live traffic (`loadgen bench`, moderate: LIVE_CONCURRENCY connections) through the
#      whole pipeline alone, then beside a replay paced at REPLAY_RATE events/s into
#      another ClickHouse database: the live accept → stored p99, with and without.
# Results go to loadtest/results/replay-<timestamp>.txt; REPORT.md summarizes them.
#
# usage: loadtest/replay-bench.sh [EVENTS] [RUNS] [LIVE_MESSAGES] [REPLAY_RATE]
#        (defaults 1000000 3 5000 5000); REPLAY_BENCH_LIVE=off skips step 3,
#        REPLAY_BENCH_BULK=off step 2
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
N=${1:-1000000}
RUNS=${2:-3}
LIVE=${3:-5000}
RATE=${4:-5000}
LIVE_CONCURRENCY=${LIVE_CONCURRENCY:-4}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/replay-bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/replay-$(date -u +%Y%m%dT%H%M%SZ).txt

deploy/infra.sh deps
cargo build --release --workspace --bins --locked >&2
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null

export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_META_APP_SECRET=bench-secret SWITCHBOARD_CLICKHOUSE_URL=http://127.0.0.1:8123
export SWITCHBOARD_EVENT_TIME_MAX_AGE=3650days
GW_PORT=18080

. loadtest/pipeline.sh
trap stop_pipeline EXIT

start_pipeline() { # id: a live pipeline of its own (topics, databases, groups)
  local id=$1
  su postgres -c "psql -qc 'CREATE DATABASE $id OWNER switchboard'" >/dev/null
  SWITCHBOARD_TOPIC_PREFIX=$id. "$BIN/switchboard" create-topics --partitions 6 >/dev/null
  : >"$RUN/pids"
  local env=(SWITCHBOARD_TOPIC_PREFIX=$id. SWITCHBOARD_CLICKHOUSE_DATABASE=$id
    SWITCHBOARD_DATABASE_URL=postgres://switchboard:switchboard@127.0.0.1:5432/$id)
  start() { local name=$1; shift; env "${env[@]}" "$@" "$BIN/$name" >"$RUN/$name.log" 2>&1 & pids+=($!); echo "$name $!" >>"$RUN/pids"; }
  start gateway SWITCHBOARD_HTTP_ADDR=127.0.0.1:$GW_PORT SWITCHBOARD_OPS_ADDR=127.0.0.1:19100
  start normalizer SWITCHBOARD_OPS_ADDR=127.0.0.1:19101 SWITCHBOARD_GROUP_ID=$id-n
  start pg-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19102 SWITCHBOARD_GROUP_ID=$id-p
  start ch-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19103 SWITCHBOARD_GROUP_ID=$id-c
  for port in 19100 19101 19102 19103; do
    for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  done
}

shared_pids() {
  echo "broker $(pgrep -f 'nisshi broker.*127.0.0.1:9092' | head -1)"
  echo "clickhouse $(pgrep -f clickhouse-server | head -1)"
}

# CPU seconds the whole machine spent (every process: PostgreSQL backends that come and
# go included), from /proc/stat.
machine_cpu() { awk '/^cpu / {printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / 100}' /proc/stat; }

replay() { # label, switchboard replay args...
  local label=$1; shift
  declare -A before=()
  while read -r name pid; do before[$name]=$(cpu_of "$pid"); done < <(shared_pids)
  local pg_before; pg_before=$(pg_cpu)
  local all_before; all_before=$(machine_cpu)
  echo "### $label"
  /usr/bin/time -f "wall_seconds %e cpu_seconds switchboard %U+%S peak_rss %MKiB" \
    "$BIN/switchboard" replay start --source wa.events --all "$@" 2>&1 | grep -v '^progress:'
  while read -r name pid; do
    echo "cpu_seconds $name $(awk -v a="$(cpu_of "$pid")" -v b="${before[$name]:-0}" 'BEGIN {printf "%.2f", a - b}') peak_rss $(rss_of "$pid")"
  done < <(shared_pids)
  echo "cpu_seconds postgres(backends alive at the end) $(awk -v a="$(pg_cpu)" -v b="$pg_before" 'BEGIN {printf "%.2f", a - b}')"
  echo "cpu_seconds machine(all processes) $(awk -v a="$(machine_cpu)" -v b="$all_before" 'BEGIN {printf "%.2f", a - b}')"
}

{
  trap stop_pipeline EXIT
  echo "# loadtest/replay-bench.sh $N $RUNS $LIVE $RATE   ($(date -u +%FT%TZ), $(nproc) cores)"
  for run in $(seq 1 "$RUNS"); do
    id=rbench$(date +%s)r$run
    # A fresh broker per run: its memory storage fills up and slows later runs otherwise.
    deploy/infra.sh down >/dev/null 2>&1
    SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null
    export SWITCHBOARD_TOPIC_PREFIX=$id. SWITCHBOARD_CLICKHOUSE_DATABASE=$id
    su postgres -c "psql -qc 'CREATE DATABASE $id OWNER switchboard'" >/dev/null
    export SWITCHBOARD_DATABASE_URL=postgres://switchboard:switchboard@127.0.0.1:5432/$id
    "$BIN/switchboard" create-topics --partitions 6 >/dev/null
    echo "## run $run ($id)"
    "$BIN/loadgen" events --events "$N"
    if [ "${REPLAY_BENCH_BULK:-on}" = on ]; then
      replay "into ClickHouse ($N events)" --target clickhouse --clickhouse-database "${id}_ch"
      replay "into PostgreSQL ($N events)" --target postgres
    fi
    if [ "${REPLAY_BENCH_LIVE:-on}" = on ]; then
      live=${id}l
      start_pipeline "$live"
      live_args=(--gateway "http://127.0.0.1:$GW_PORT" --messages "$LIVE" --concurrency "$LIVE_CONCURRENCY"
        --database-url "postgres://switchboard:switchboard@127.0.0.1:5432/$live" --clickhouse-url "$SWITCHBOARD_CLICKHOUSE_URL" --clickhouse-database "$live")
      echo "### live traffic alone ($LIVE messages, $LIVE_CONCURRENCY connections)"
      "$BIN/loadgen" bench "${live_args[@]}"
      echo "### live traffic beside a replay paced at $RATE events/s"
      "$BIN/switchboard" replay start --source wa.events --all --target clickhouse --clickhouse-database "${id}_paced" --rate "$RATE" >"$RUN/paced.log" 2>&1 &
      paced=$!
      sleep 3 # the replay's plan and first batches, so that the live run meets it at speed
      "$BIN/loadgen" bench "${live_args[@]}"
      kill -INT "$paced" 2>/dev/null || true
      wait "$paced" 2>/dev/null || true
      grep -E '^records' "$RUN/paced.log" | sed 's/^/paced replay: /'
      stop_pipeline
    fi
  done
} | tee "$OUT"
echo "results written to $OUT" >&2
