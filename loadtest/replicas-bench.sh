#!/usr/bin/env bash
# Normalizer throughput with 1, 2 and 3 replicas of one consumer group.
#
# wa.webhooks.raw (6 partitions) is filled once through the gateway; then, for each
# replica count, RUNS times: a fresh consumer group and a fresh PostgreSQL database (so
# dedupe finds nothing already seen) and that many normalizers started together. The rate
# is records normalized per second from the first record handled to the last, read from
# the replicas' own counters (switchboard_stream_records_total); CPU seconds of the
# normalizers, the broker and PostgreSQL are printed per run. Everything runs on this one
# machine: on 2 cores, replicas share the same CPUs, so this measures the cost of the
# group's coordination more than any gain from spreading out.
#
# usage: loadtest/replicas-bench.sh [CONVERSATIONS] [RUNS]   (defaults 30000, 3; about
#        2.85 webhooks per conversation)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
N=${1:-30000}
RUNS=${2:-3}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/replicas-bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/replicas-$(date -u +%Y%m%dT%H%M%SZ).txt

cargo build --release --workspace --bins --locked >&2
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null

export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_META_APP_SECRET=bench-secret
id=replicas$(date +%s)
export SWITCHBOARD_TOPIC_PREFIX=$id.
. loadtest/pipeline.sh
trap stop_pipeline EXIT
start() { local name=$1; shift; env "$@" "$BIN/$name" >>"$RUN/$name.log" 2>&1 & pids+=($!); echo "$name $!" >>"$RUN/pids"; }
metric_sum() { # metric, ports...
  local m=$1 t=0 v; shift
  for port in "$@"; do
    v=$(curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$m" '$1 ~ "^"m"({|$)" {s += $2} END {print s + 0}')
    t=$(awk -v a="$t" -v b="$v" 'BEGIN {print a + b}')
  done
  echo "$t"
}
now() { date +%s.%N; }

{
  echo "# loadtest/replicas-bench.sh $N $RUNS   ($(date -u +%FT%TZ), $(nproc) cores)"
  "$BIN/switchboard" create-topics --partitions 6 >/dev/null
  : >"$RUN/pids"
  start gateway SWITCHBOARD_HTTP_ADDR=127.0.0.1:18080 SWITCHBOARD_OPS_ADDR=127.0.0.1:19100
  for _ in $(seq 1 150); do curl -sf http://127.0.0.1:19100/readyz >/dev/null && break; sleep 0.2; done
  fill=$(env -u SWITCHBOARD_DATABASE_URL "$BIN/loadgen" bench --gateway http://127.0.0.1:18080 \
    --messages "$N" --concurrency 64 --warmup 0 | grep '^ingest:')
  echo "fill: $fill"
  total=$(echo "$fill" | awk '{print $2}')
  stop_pipeline
  for k in 1 2 3; do
    for run in $(seq 1 "$RUNS"); do
      db=${id}k${k}r$run
      su postgres -c "psql -qc 'CREATE DATABASE $db OWNER switchboard'" >/dev/null
      : >"$RUN/pids"
      ports=()
      for r in $(seq 1 "$k"); do
        port=$((19110 + r))
        ports+=("$port")
        start normalizer SWITCHBOARD_OPS_ADDR=127.0.0.1:$port SWITCHBOARD_GROUP_ID="$db" \
          SWITCHBOARD_DATABASE_URL="postgres://switchboard:switchboard@127.0.0.1:5432/$db"
      done
      pg_before=$(pg_cpu)
      broker_pid=$(pgrep -f 'nisshi broker.*127.0.0.1:9092' | head -1)
      broker_before=$(cpu_of "$broker_pid")
      first='' done_at=''
      deadline=$((SECONDS + 300))
      while [ $SECONDS -lt $deadline ]; do
        got=$(metric_sum switchboard_stream_records_total "${ports[@]}")
        if [ -z "$first" ] && awk -v g="$got" 'BEGIN {exit !(g > 0)}'; then first=$(now) first_count=$got; fi
        if awk -v g="$got" -v t="$total" 'BEGIN {exit !(g >= t)}'; then done_at=$(now); break; fi
        sleep 0.1
      done
      [ -n "$done_at" ] || { echo "replicas $k run $run: timed out at $got of $total records"; stop_pipeline; continue; }
      cpu=0
      while read -r _ pid; do cpu=$(awk -v a="$cpu" -v b="$(cpu_of "$pid")" 'BEGIN {print a + b}'); done <"$RUN/pids"
      awk -v k="$k" -v r="$run" -v t="$total" -v c="$first_count" -v a="$first" -v b="$done_at" -v cpu="$cpu" \
        -v br="$(awk -v a="$(cpu_of "$broker_pid")" -v b="$broker_before" 'BEGIN {print a - b}')" \
        -v pg="$(awk -v a="$(pg_cpu)" -v b="$pg_before" 'BEGIN {print a - b}')" \
        'BEGIN {printf "replicas %d run %d: %d records in %.2f s = %.0f records/s; cpu_seconds normalizers %.2f broker %.2f postgres %.2f\n", k, r, t - c, b - a, (t - c) / (b - a), cpu, br, pg}'
      stop_pipeline
    done
  done
} | tee "$OUT"
echo "results written to $OUT" >&2
