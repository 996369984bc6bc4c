#!/usr/bin/env bash
# End-to-end benchmark with wrk: every pre-signed webhook is sent once (wrk/presigned.lua
# with ONCE=1), through the whole pipeline (gateway, normalizer, both sinks), each run on
# a fresh broker with its own topics and databases. The figures come from the stores:
# events stored per second from the first accept to the last row, and accept → stored
# latency per row (PostgreSQL's status history, ClickHouse's events), plus CPU seconds of
# every process, wrk's included. Results go to loadtest/results/e2e-<timestamp>.txt.
#
# usage: [RATE=webhooks/s] loadtest/e2e-bench.sh [CONVERSATIONS] [CONNECTIONS] [RUNS]
#        (defaults 100000, 256, 3; a conversation is 3 status webhooks and an inbound
#        message, 1 in 20 a single failure: 3.85 webhooks each)
# Without RATE wrk sends as fast as the gateway answers: the stores then drain a backlog,
# and accept → stored measures that backlog. With RATE the load is paced (open loop, see
# wrk/presigned.lua), so accept → stored is the pipeline's latency at that rate; e.g.
# `RATE=5000 loadtest/e2e-bench.sh 156000 256 3` sustains 5,000/s for two minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
N=${1:-100000}
C=${2:-256}
RUNS=${3:-3}
BIN=$CARGO_TARGET_DIR/release
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}/e2e-bench
mkdir -p "$RUN" loadtest/results
OUT=loadtest/results/e2e-$(date -u +%Y%m%dT%H%M%SZ).txt

. loadtest/pipeline.sh
need_wrk
cargo build --release --workspace --bins --locked >&2
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null

export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092 SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_META_APP_SECRET=bench-secret SWITCHBOARD_CLICKHOUSE_URL=http://127.0.0.1:8123
GW_PORT=18080
GW=127.0.0.1:$GW_PORT
trap stop_pipeline EXIT


ch() { curl -sf "$SWITCHBOARD_CLICKHOUSE_URL/?database=$SWITCHBOARD_CLICKHOUSE_DATABASE" --data-binary "$1"; }
pg() { psql -At "$SWITCHBOARD_DATABASE_URL" -c "$1"; }

{
  trap stop_pipeline EXIT
  echo "# loadtest/e2e-bench.sh $N $C $RUNS   ($(date -u +%FT%TZ), $(nproc) cores, linger ${SWITCHBOARD_KAFKA_LINGER:-default}, compression ${SWITCHBOARD_KAFKA_COMPRESSION:-default}, rate ${RATE:-unpaced}, $(git rev-parse --short HEAD))"
  for run in $(seq 1 "$RUNS"); do
    id=e2e$(date +%s)r$run
    # New bodies every run (new wamids), so nothing is a repeat of an earlier run.
    "$BIN/loadgen" presign --messages "$N" --meta-secret bench-secret --out "$RUN/bodies.txt" 2>/dev/null
    want=$(wc -l <"$RUN/bodies.txt")
    SWITCHBOARD_BIN=$BIN deploy/infra.sh restart-broker 2>/dev/null
    start_pipeline "$id"
    declare -A before=()
    while read -r name pid; do before[$name]=$(cpu_of "$pid"); done < <(named_pids)
    pg_before=$(pg_cpu)
    echo "## run $run ($id): $want webhooks, each once"
    # wrk's run lasts its -d whatever the script does: stop it (SIGINT, as Ctrl-C does)
    # once the gateway has accepted every body.
    ONCE=1 RATE=${RATE:-0} BODIES=$RUN/bodies.txt THREADS=1 /usr/bin/time -f "cpu_seconds wrk %U+%S" -o "$RUN/wrk.time" \
      wrk -t1 -c"$C" -d600s --timeout 10s -s loadtest/wrk/presigned.lua "http://$GW/webhooks/meta" >"$RUN/wrk.out" 2>&1 &
    timer=$!
    for _ in $(seq 1 1200); do
      ok=$(curl -s http://127.0.0.1:19100/metrics | awk '/^switchboard_gateway_webhooks_total\{.*outcome="accepted"/ {s += $2} END {print s + 0}')
      [ "$ok" -ge "$want" ] && break
      sleep 0.5
    done
    pkill -INT -P "$timer" wrk || true
    wait "$timer" || true
    grep '^wrk: latency' "$RUN/wrk.out" || cat "$RUN/wrk.out"
    cat "$RUN/wrk.time"
    echo "accepted $ok"
    # Every webhook is one event; wait until ClickHouse has them all (or stops growing).
    last=-1
    for _ in $(seq 1 120); do
      got=$(ch "SELECT count() FROM events" || echo 0)
      [ "$got" -ge "$want" ] && break
      [ "$got" = "$last" ] && sleep 2 && [ "$(ch "SELECT count() FROM events")" = "$got" ] && break
      last=$got; sleep 0.5
    done
    echo "clickhouse: $(ch "SELECT count(), round(count() * 1000 / (max(stored_at_ms) - min(received_at_ms))), quantile(0.5)(stored_at_ms - received_at_ms), quantile(0.99)(stored_at_ms - received_at_ms) FROM events FORMAT TSV" | awk '{printf "%s of %s events, %s events/s from the first accept to the last row; accept → stored ms p50 %s p99 %s", $1, w, $2, $3, $4}' w="$want")"
    echo "postgres: $(pg "SELECT count(*), round(count(*) / extract(epoch FROM max(stored_at) - min(received_at))), round(1000 * extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY stored_at - received_at))), round(1000 * extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY stored_at - received_at))) FROM message_status_history" | awk -F'|' '{printf "%s status rows, %s rows/s; accept → stored ms p50 %s p99 %s", $1, $2, $3, $4}')"
    while read -r name pid; do
      echo "cpu_seconds $name $(awk -v a="$(cpu_of "$pid")" -v b="${before[$name]:-0}" 'BEGIN {printf "%.2f", a - b}') peak_rss $(rss_of "$pid")"
    done < <(named_pids)
    echo "cpu_seconds postgres(all backends) $(awk -v a="$(pg_cpu)" -v b="$pg_before" 'BEGIN {printf "%.2f", a - b}')"
    stop_pipeline
  done
} 2>&1 | tee "$OUT"
echo "results written to $OUT" >&2
