#!/usr/bin/env bash
# Analytics benchmark. On a fresh broker: EVENTS synthetic events of TENANTS tenants over
# the last 30 days onto wa.events (`loadgen analytics-events`), replayed into an empty
# ClickHouse database by `switchboard replay` (the ch-sink's own batch step, so every
# rollup is filled as live traffic would fill it); then every analytics report for one
# tenant and the full 30 days, by day, asked ROUNDS times each of random tenants
# through the gateway (the operator's route with tenant=, the same query as a tenant
# key's), and the drill-down. Printed: load and replay time, each question's p50 / p99 /
# max in ms, table sizes, CPU seconds per process.
# Results go to loadtest/results/analytics-<timestamp>.txt; REPORT.md summarizes them.
#
# usage: loadtest/analytics-bench.sh [EVENTS] [TENANTS] [ROUNDS]   (defaults 10000000 100 30)
#        ANALYTICS_BENCH_DB=<database> asks the questions of a database loaded before.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
N=${1:-10000000}
TENANTS=${2:-100}
ROUNDS=${3:-30}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/analytics-bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/analytics-$(date -u +%Y%m%dT%H%M%SZ).txt

deploy/infra.sh deps
cargo build --release --workspace --bins --locked >&2
if [ -z "${ANALYTICS_BENCH_DB:-}" ]; then deploy/infra.sh down >/dev/null 2>&1 || true; fi
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null

export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_CLICKHOUSE_URL=http://127.0.0.1:8123 SWITCHBOARD_EVENT_TIME_MAX_AGE=3650days SWITCHBOARD_META_APP_SECRET=bench-secret
id=${ANALYTICS_BENCH_DB:-abench$(date +%s)}
export SWITCHBOARD_TOPIC_PREFIX=$id. SWITCHBOARD_CLICKHOUSE_DATABASE=$id
export SWITCHBOARD_DATABASE_URL=postgres://switchboard:switchboard@127.0.0.1:5432/switchboard
GW_PORT=18080 ADMIN=bench-admin

. loadtest/pipeline.sh
trap stop_pipeline EXIT

ch() { curl -sS "$SWITCHBOARD_CLICKHOUSE_URL/" --data-binary "$1"; }

{
  trap stop_pipeline EXIT
  echo "# loadtest/analytics-bench.sh $N $TENANTS $ROUNDS   ($(date -u +%FT%TZ), $(nproc) cores)"
  if [ -z "${ANALYTICS_BENCH_DB:-}" ]; then
    "$BIN/switchboard" create-topics --partitions 6 >/dev/null
    "$BIN/loadgen" analytics-events --events "$N" --tenants "$TENANTS" --days 30
    ch_before=$(cpu_of "$(pgrep -f clickhouse-server | head -1)")
    /usr/bin/time -f "replay: wall_seconds %e cpu_seconds switchboard %U+%S peak_rss %MKiB" \
      "$BIN/switchboard" replay start --source wa.events --all --target clickhouse --clickhouse-database "$id" 2>&1 | grep -v '^progress:'
    echo "replay: cpu_seconds clickhouse $(awk -v a="$(cpu_of "$(pgrep -f clickhouse-server | head -1)")" -v b="$ch_before" 'BEGIN {printf "%.2f", a - b}')"
  fi
  for t in events message_state funnel_slots failure_slots billing_slots latency_slots inbound_slots; do
    echo "table $t: $(ch "SELECT sum(rows), count(), formatReadableSize(sum(bytes)) FROM system.parts WHERE database = '$id' AND table = '$t' AND active" | tr '\t' ' ') (rows, parts, size)"
  done

  : >"$RUN/pids"
  SWITCHBOARD_HTTP_ADDR=127.0.0.1:$GW_PORT SWITCHBOARD_OPS_ADDR=127.0.0.1:19100 SWITCHBOARD_ADMIN_API_KEY=$ADMIN \
    "$BIN/gateway" >"$RUN/gateway.log" 2>&1 &
  pids+=($!); echo "gateway $!" >>"$RUN/pids"
  for _ in $(seq 1 150); do curl -sf http://127.0.0.1:19100/healthz >/dev/null && break; sleep 0.2; done

  to=$(( ($(date +%s) / 900 + 1) * 900 )); from=$(( to - 30 * 86400 ))
  range="from=$(date -u -d @$from +%FT%TZ)&to=$(date -u -d @$to +%FT%TZ)"
  questions=(
    "funnel?granularity=day"
    "funnel?granularity=day&group_by=country&time_zone=Asia/Kolkata"
    "templates?granularity=day"
    "failures?granularity=day&group_by=error_code"
    "billing?granularity=day&group_by=category,type,country"
    "latency?granularity=day&group_by=business_number"
    "inbound?granularity=day"
    "funnel?granularity=total&group_by=tenant"
    "messages?status=failed&order=desc&limit=100"
    "messages?status=failed&error_code=131026&business_number=%2B1555TTT0001&limit=500"
  )
  cpu0=$(cpu_of "$(pgrep -f clickhouse-server | head -1)"); gw0=$(cpu_of "${pids[0]}")
  for q in "${questions[@]}"; do
    : >"$RUN/times"
    for r in $(seq 1 "$ROUNDS"); do
      t=$(( (r * 37) % TENANTS ))
      qq=${q//TTT/$(printf %03d "$t")}
      if [[ $qq == *group_by=tenant* ]]; then tenant=""; else tenant="&tenant=ten_abench$t"; fi
      curl -s -o "$RUN/answer.json" -w '%{http_code} %{time_total}\n' -H "authorization: Bearer $ADMIN" \
        "http://127.0.0.1:$GW_PORT/admin/analytics/${qq%%\?*}?$range$tenant&${qq#*\?}" >>"$RUN/times"
    done
    bad=$(awk '$1 != 200' "$RUN/times" | wc -l)
    rows=$( (grep -o '"data":\[.*' "$RUN/answer.json" || true) | (grep -o '},{' || true) | wc -l)
    sort -k2 -n "$RUN/times" | awk -v q="$q" -v bad="$bad" -v rows="$rows" '{t[NR] = $2 * 1000} END {
      p50 = t[int((NR + 1) * 0.5)]; p99 = t[int(NR * 0.99 + 0.999)]
      printf "%-80s p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms  (%d asked, %d not 200, last answer %d rows)\n", q, p50, p99, t[NR], NR, bad, rows + 1 }'
  done
  echo "questions: cpu_seconds clickhouse $(awk -v a="$(cpu_of "$(pgrep -f clickhouse-server | head -1)")" -v b="$cpu0" 'BEGIN {printf "%.2f", a - b}') gateway $(awk -v a="$(cpu_of "${pids[0]}")" -v b="$gw0" 'BEGIN {printf "%.2f", a - b}')"
  stop_pipeline
} | tee "$OUT"
echo "results written to $OUT" >&2
