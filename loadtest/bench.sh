#!/usr/bin/env bash
# Ingest + end-to-end benchmark: a fresh pipeline (release binaries, own topics and
# databases), then `loadgen bench` three times; prints each run and the CPU seconds and
# peak RSS of every process per run. Results go to loadtest/results/<timestamp>.txt;
# REPORT.md summarizes them.
#
# usage: loadtest/bench.sh [MESSAGES_PER_RUN] [CONCURRENCY]   (defaults 25000, 64)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
N=${1:-25000}
C=${2:-64}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/$(date -u +%Y%m%dT%H%M%SZ).txt

cargo build --release --workspace --bins --locked >&2
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null

ID=bench$(date +%s)
export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_TOPIC_PREFIX=$ID.
export SWITCHBOARD_META_APP_SECRET=bench-secret
export SWITCHBOARD_CLICKHOUSE_URL=http://127.0.0.1:8123 SWITCHBOARD_CLICKHOUSE_DATABASE=$ID
su postgres -c "psql -qc 'CREATE DATABASE $ID OWNER switchboard'" >/dev/null
export SWITCHBOARD_DATABASE_URL=postgres://switchboard:switchboard@127.0.0.1:5432/$ID
"$BIN/switchboard-admin" create-topics 6 >/dev/null 2>&1

pids=()
start() { local name=$1; shift; env "$@" "$BIN/$name" >"$RUN/$name.log" 2>&1 & pids+=($!); echo "$name $!" >>"$RUN/pids"; }
: >"$RUN/pids"
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' EXIT
GW_PORT=18080
start gateway SWITCHBOARD_HTTP_ADDR=127.0.0.1:$GW_PORT
start normalizer SWITCHBOARD_OPS_ADDR=127.0.0.1:19101 SWITCHBOARD_GROUP_ID=$ID-n
start pg-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19102 SWITCHBOARD_GROUP_ID=$ID-p
start ch-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:19103 SWITCHBOARD_GROUP_ID=$ID-c
for port in $GW_PORT 19101 19102 19103; do
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
done

cpu_of() { awk '{print ($14+$15)/100}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_of() { awk '/VmHWM/ {print $2/1024 " MiB"}' "/proc/$1/status" 2>/dev/null || echo "?"; }
named_pids() { # the pipeline's processes plus the shared services'
  cat "$RUN/pids"
  echo "broker $(pgrep -f 'nisshi broker' | head -1)"
  echo "clickhouse $(pgrep -f clickhouse-server | head -1)"
  echo "postgres $(head -1 /var/lib/postgresql/15/main/postmaster.pid 2>/dev/null)"
}

{
  echo "# loadtest/bench.sh $N $C   ($(date -u +%FT%TZ), $(nproc) cores, $(uname -r))"
  for run in 1 2 3; do
    declare -A before=()
    while read -r name pid; do before[$name]=$(cpu_of "$pid"); done < <(named_pids)
    echo "## run $run"
    "$BIN/loadgen" bench --gateway "http://127.0.0.1:$GW_PORT" --messages "$N" --concurrency "$C" \
      --database-url "$SWITCHBOARD_DATABASE_URL" --clickhouse-url "$SWITCHBOARD_CLICKHOUSE_URL" --clickhouse-database "$ID"
    m=$(curl -s http://127.0.0.1:19101/metrics)
    dsum=$(echo "$m" | awk '/^switchboard_normalizer_dedupe_seconds_sum/ {print $2}')
    dcount=$(echo "$m" | awk '/^switchboard_normalizer_dedupe_seconds_count/ {print $2}')
    events=$(echo "$m" | awk '/^switchboard_normalizer_events_total/ {s += $2} END {print s}')
    echo "dedupe (cumulative): ${dsum:-0} s over ${dcount:-0} batches and ${events:-0} events = $(awk -v s="${dsum:-0}" -v n="${events:-1}" 'BEGIN {printf "%.2f", s * 1e6 / n}') us/event, $(awk -v s="${dsum:-0}" -v n="${dcount:-1}" 'BEGIN {printf "%.2f", s * 1e3 / n}') ms/batch"
    while read -r name pid; do
      after=$(cpu_of "$pid")
      echo "cpu_seconds $name $(awk -v a="$after" -v b="${before[$name]:-0}" 'BEGIN {printf "%.2f", a - b}') peak_rss $(rss_of "$pid")"
    done < <(named_pids)
  done
} | tee "$OUT"
echo "results written to $OUT" >&2
