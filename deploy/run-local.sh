#!/usr/bin/env bash
# Bring the whole pipeline up locally (no Docker) and push sample traffic through it:
# builds release binaries, starts broker, schema registry, PostgreSQL and ClickHouse
# (installing what is missing), creates topics, starts gateway, normalizer, pg-sink and
# ch-sink, sends every fixture plus a few hundred realistic conversations (with BSP-style
# repeats and out-of-order arrivals), then prints what landed in both stores.
#
# usage: deploy/run-local.sh [up]    start (or restart) the pipeline and push the sample
#        deploy/run-local.sh down    stop the pipeline and the local infrastructure
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
RUN=${SWITCHBOARD_RUN:-/tmp/switchboard}
BIN=$CARGO_TARGET_DIR/release
PIDS=$RUN/pipeline

export SWITCHBOARD_KAFKA_BROKERS=127.0.0.1:9092
export SWITCHBOARD_SCHEMA_REGISTRY_URL=http://127.0.0.1:8081
export SWITCHBOARD_DATABASE_URL=postgres://switchboard:switchboard@127.0.0.1:5432/switchboard
export SWITCHBOARD_CLICKHOUSE_URL=http://127.0.0.1:8123
export SWITCHBOARD_META_APP_SECRET=${SWITCHBOARD_META_APP_SECRET:-local-meta-app-secret}
export SWITCHBOARD_META_VERIFY_TOKEN=${SWITCHBOARD_META_VERIFY_TOKEN:-local-verify-token}
export SWITCHBOARD_DIALOG360_TOKEN=${SWITCHBOARD_DIALOG360_TOKEN:-local-360dialog-token}
export SWITCHBOARD_GUPSHUP_TOKEN=${SWITCHBOARD_GUPSHUP_TOKEN:-local-gupshup-token}
export SWITCHBOARD_AISENSY_WEBHOOK_SECRET=${SWITCHBOARD_AISENSY_WEBHOOK_SECRET:-local-aisensy-secret}
export SWITCHBOARD_KARIX_TOKEN=${SWITCHBOARD_KARIX_TOKEN:-local-karix-token}
export SWITCHBOARD_TWILIO_AUTH_TOKEN=${SWITCHBOARD_TWILIO_AUTH_TOKEN:-local-twilio-auth-token}
export SWITCHBOARD_WAHA_HMAC_KEY=${SWITCHBOARD_WAHA_HMAC_KEY:-local-waha-hmac-key}
export SWITCHBOARD_PUBLIC_URL=http://127.0.0.1:8080

stop_pipeline() {
  for name in gateway normalizer pg-sink ch-sink; do
    f=$PIDS/$name.pid
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
  done
}

if [ "${1:-up}" = down ]; then
  stop_pipeline
  deploy/infra.sh down
  exit 0
fi

echo "== building release binaries"
cargo build --release --workspace --bins --locked
echo "== starting local infrastructure"
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null
"$BIN/switchboard-admin" create-topics 6 2>/dev/null

stop_pipeline
mkdir -p "$PIDS"
start() { # name, extra env...
  local name=$1; shift
  env "$@" nohup "$BIN/$name" >"$RUN/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}
start gateway SWITCHBOARD_HTTP_ADDR=127.0.0.1:8080
start normalizer SWITCHBOARD_OPS_ADDR=127.0.0.1:9101
start pg-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:9102
start ch-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:9103
for port in 8080 9101 9102 9103; do
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "service on :$port not ready; logs in $RUN" >&2; exit 1; }
done
echo "== pipeline up: gateway http://127.0.0.1:8080, ops :9101-9103, logs in $RUN"

echo "== pushing sample traffic"
"$BIN/loadgen" sample --messages 300

echo "== waiting for the stores to settle (consumers join their groups, then catch up)"
last="" stable=0
for _ in $(seq 1 90); do
  pg=$(psql "$SWITCHBOARD_DATABASE_URL" -qAtc "SELECT count(*) FROM message_status_history" 2>/dev/null || echo 0)
  ch=$(curl -s "$SWITCHBOARD_CLICKHOUSE_URL/?query=SELECT%20count()%20FROM%20switchboard.events" 2>/dev/null || echo 0)
  if [ "$pg-$ch" = "$last" ] && [ "${pg:-0}" -gt 0 ]; then
    stable=$((stable + 1)); [ $stable -ge 3 ] && break
  else
    stable=0
  fi
  last="$pg-$ch"; sleep 1
done
echo "   $pg status events in PostgreSQL, $ch events in ClickHouse"

echo
echo "== PostgreSQL: current status of messages"
psql "$SWITCHBOARD_DATABASE_URL" -c "SELECT bsp, direction, coalesce(status, '(inbound)') AS status, count(*) FROM messages GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
echo "== PostgreSQL: status history rows"
psql "$SWITCHBOARD_DATABASE_URL" -c "SELECT status, count(*) FROM message_status_history GROUP BY 1 ORDER BY 2 DESC"
echo "== ClickHouse: daily rollup per business number (switchboard.daily_summary)"
curl -s "$SWITCHBOARD_CLICKHOUSE_URL/" --data-binary "SELECT day, business_number, sent, delivered, read, failed FROM switchboard.daily_summary ORDER BY day DESC, business_number LIMIT 12 FORMAT PrettyCompactMonoBlock"
echo "== ClickHouse: delivery latency quantiles (ms) per business number and day"
curl -s "$SWITCHBOARD_CLICKHOUSE_URL/" --data-binary "SELECT day, business_number, quantilesMerge(0.5, 0.9, 0.99)(latency_quantiles) AS p50_p90_p99, countMerge(deliveries) AS deliveries FROM switchboard.daily_delivery_latency GROUP BY day, business_number ORDER BY day DESC, business_number LIMIT 12 FORMAT PrettyCompactMonoBlock"
echo "== dead letters on wa.webhooks.dlq since the normalizer started, by reason:"
curl -s http://127.0.0.1:9101/metrics | awk -F'[{}"]' '/^switchboard_normalizer_dead_letters_total/ {split($0, v, " "); printf "   %s: %s\n", $3, v[length(v)]}'
echo "   (all metrics: http://127.0.0.1:9101/metrics, :9102, :9103, gateway :8080/metrics)"
echo "Stop everything with: deploy/run-local.sh down"
