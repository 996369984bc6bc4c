#!/usr/bin/env bash
# Ingest + end-to-end benchmark. Each run gets a fresh pipeline (release binaries, its
# own topics, PostgreSQL database and ClickHouse database) so runs are independent, then
# `loadgen bench` drives it; printed per run: ingest rate and latency, end-to-end rate and
# accept → stored latency, dedupe cost, and CPU seconds and peak RSS of every process.
# Results go to loadtest/results/<timestamp>.txt; REPORT.md summarizes them.
#
# usage: loadtest/bench.sh [MESSAGES_PER_RUN] [CONCURRENCY] [RUNS]   (defaults 25000, 64, 3)
# env:   SWITCHBOARD_KAFKA_LINGER (producer linger, default 5ms) and any other
#        SWITCHBOARD_* setting is passed to the pipeline; CH_SINK_ENV="K=V ..." goes to
#        the ch-sink only (e.g. CH_SINK_ENV="SWITCHBOARD_BATCH_LINGER=1s").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
N=${1:-25000}
C=${2:-64}
RUNS=${3:-3}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/$(date -u +%Y%m%dT%H%M%SZ).txt

cargo build --release --workspace --bins --locked >&2
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null

export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_META_APP_SECRET=bench-secret SWITCHBOARD_CLICKHOUSE_URL=http://127.0.0.1:8123
GW_PORT=18080

. loadtest/pipeline.sh
trap stop_pipeline EXIT


{
  # The runs happen in this subshell (it feeds tee): stop its pipeline however it ends.
  trap stop_pipeline EXIT
  echo "# loadtest/bench.sh $N $C $RUNS   ($(date -u +%FT%TZ), $(nproc) cores, linger ${SWITCHBOARD_KAFKA_LINGER:-5ms}, ch-sink: ${CH_SINK_ENV:-defaults})"
  for run in $(seq 1 "$RUNS"); do
    id=bench$(date +%s)r$run
    # A fresh broker per run: its memory storage gets slower as it fills.
    SWITCHBOARD_BIN=$BIN deploy/infra.sh restart-broker 2>/dev/null
    start_pipeline "$id"
    declare -A before=()
    while read -r name pid; do before[$name]=$(cpu_of "$pid"); done < <(named_pids)
    pg_before=$(pg_cpu)
    echo "## run $run ($id)"
    "$BIN/loadgen" bench --gateway "http://127.0.0.1:$GW_PORT" --messages "$N" --concurrency "$C" \
      --database-url "$SWITCHBOARD_DATABASE_URL" --clickhouse-url "$SWITCHBOARD_CLICKHOUSE_URL" --clickhouse-database "$id"
    m=$(curl -s http://127.0.0.1:19101/metrics)
    dsum=$(echo "$m" | awk '/^switchboard_normalizer_dedupe_seconds_sum/ {print $2}')
    dcount=$(echo "$m" | awk '/^switchboard_normalizer_dedupe_seconds_count/ {print $2}')
    events=$(echo "$m" | awk '/^switchboard_normalizer_events_total/ {s += $2} END {print s}')
    echo "dedupe: ${dsum:-0} s over ${dcount:-0} batches and ${events:-0} events = $(awk -v s="${dsum:-0}" -v n="${events:-1}" 'BEGIN {printf "%.1f", s * 1e6 / n}') us/event, $(awk -v s="${dsum:-0}" -v n="${dcount:-1}" 'BEGIN {printf "%.1f", s * 1e3 / n}') ms/batch"
    # The ch-sink's inserts: ClickHouse's cost is mostly per insert, not per row.
    cm=$(curl -s http://127.0.0.1:19103/metrics)
    cb=$(echo "$cm" | awk '/^switchboard_stream_batch_size_count/ {s += $2} END {print s + 0}')
    cr=$(echo "$cm" | awk '/^switchboard_stream_batch_size_sum/ {s += $2} END {print s + 0}')
    echo "ch-sink batches: $cb, $(awk -v r="$cr" -v b="$cb" 'BEGIN {printf "%.0f", b ? r / b : 0}') records each on average"
    while read -r name pid; do
      echo "cpu_seconds $name $(awk -v a="$(cpu_of "$pid")" -v b="${before[$name]:-0}" 'BEGIN {printf "%.2f", a - b}') peak_rss $(rss_of "$pid")"
    done < <(named_pids)
    echo "cpu_seconds postgres(all backends) $(awk -v a="$(pg_cpu)" -v b="$pg_before" 'BEGIN {printf "%.2f", a - b}')"
    stop_pipeline
  done
} | tee "$OUT"
echo "results written to $OUT" >&2
