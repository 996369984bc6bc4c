#!/usr/bin/env bash
# Bring the whole pipeline up locally (no Docker) and push sample traffic through it:
# builds release binaries, starts broker, schema registry, PostgreSQL and ClickHouse
# (installing what is missing), creates topics, starts gateway, normalizer, pg-sink,
# ch-sink, router, fanout, the BSP simulator (playing every BSP) and the client-endpoint
# simulator (playing a client's webhook receiver), then
# - sends every webhook fixture plus a few hundred realistic conversations (with
#   BSP-style repeats and out-of-order arrivals),
# - sends messages through the send API on every BSP and shows their statuses coming
#   back, and the signed webhooks the client endpoint received for them,
# - redrives the dead-lettered fixtures and backfills a new ClickHouse database with the
#   operator CLI (`switchboard`),
# and prints what landed in both stores.
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
export SWITCHBOARD_ADMIN_API_KEY=${SWITCHBOARD_ADMIN_API_KEY:-local-admin-key}
# The sample client endpoint is on loopback, which only an allow-list lets endpoints use.
export SWITCHBOARD_ENDPOINT_ALLOW_NETS=127.0.0.0/8
SIM=http://127.0.0.1:18090
# The simulator signs webhooks with the gateway's secrets and accepts these send
# credentials (the demo stores them, encrypted, through the admin API).
export SIM_SECRETS="{\"meta_app_secret\":\"$SWITCHBOARD_META_APP_SECRET\",\"meta_access_token\":\"local-meta-token\",
 \"dialog360_api_key\":\"local-360-key\",\"dialog360_webhook_token\":\"$SWITCHBOARD_DIALOG360_TOKEN\",
 \"aisensy_api_pwd\":\"local-aisensy-pwd\",\"aisensy_webhook_secret\":\"$SWITCHBOARD_AISENSY_WEBHOOK_SECRET\",
 \"gupshup_api_key\":\"local-gupshup-key\",\"gupshup_webhook_token\":\"$SWITCHBOARD_GUPSHUP_TOKEN\",
 \"twilio_auth_token\":\"$SWITCHBOARD_TWILIO_AUTH_TOKEN\",\"waha_api_key\":\"local-waha-key\",
 \"waha_hmac_key\":\"$SWITCHBOARD_WAHA_HMAC_KEY\",\"karix_api_key\":\"local-karix-key\",
 \"karix_webhook_token\":\"$SWITCHBOARD_KARIX_TOKEN\"}"

stop_pipeline() {
  for name in gateway normalizer pg-sink ch-sink router fanout replayer bsp-sim endpoint-sim; do
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

deploy/infra.sh deps
echo "== building release binaries"
cargo build --release --workspace --bins --locked
echo "== starting local infrastructure"
SWITCHBOARD_BIN=$BIN deploy/infra.sh up >/dev/null
"$BIN/switchboard" create-topics --partitions 6 2>/dev/null

stop_pipeline
mkdir -p "$PIDS"
start() { # name, extra env...
  local name=$1; shift
  env "$@" nohup "$BIN/$name" >"$RUN/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}
# The credentials keyring is made once and kept, so stored credentials stay readable.
mkdir -p "$RUN"
[ -s "$RUN/credentials.keys" ] || echo "k1:$(head -c 32 /dev/urandom | base64)" >"$RUN/credentials.keys"
export SWITCHBOARD_CREDENTIALS_KEYS=$(cat "$RUN/credentials.keys")
start bsp-sim SIM_ADDR=127.0.0.1:18090 SIM_GATEWAY_URL=http://127.0.0.1:8080
start endpoint-sim ENDPOINT_SIM_ADDR=127.0.0.1:18091
start gateway SWITCHBOARD_HTTP_ADDR=127.0.0.1:8080 SWITCHBOARD_OPS_ADDR=127.0.0.1:9100
start normalizer SWITCHBOARD_OPS_ADDR=127.0.0.1:9101
start pg-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:9102
start ch-sink SWITCHBOARD_OPS_ADDR=127.0.0.1:9103
start router SWITCHBOARD_OPS_ADDR=127.0.0.1:9104 SWITCHBOARD_GROUP_INSTANCE_ID=router-local-0 SWITCHBOARD_META_API_URL=$SIM/v21.0 \
  SWITCHBOARD_DIALOG360_API_URL=$SIM SWITCHBOARD_GUPSHUP_API_URL=$SIM SWITCHBOARD_TWILIO_API_URL=$SIM \
  SWITCHBOARD_WAHA_API_URL=$SIM SWITCHBOARD_AISENSY_API_URL=$SIM SWITCHBOARD_KARIX_API_URL=$SIM
start fanout SWITCHBOARD_OPS_ADDR=127.0.0.1:9105 SWITCHBOARD_GROUP_INSTANCE_ID=fanout-local-0
start replayer SWITCHBOARD_OPS_ADDR=127.0.0.1:9106
for port in 9100 9101 9102 9103 9104 9105 9106; do
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "service on :$port not ready; logs in $RUN" >&2; exit 1; }
done
echo "== pipeline up: gateway http://127.0.0.1:8080 (API: /v1/openapi.yaml), ops :9100-9106, BSP simulator $SIM, client endpoint simulator http://127.0.0.1:18091, logs in $RUN"

echo "== pushing sample webhook traffic"
"$BIN/loadgen" sample --messages 300

echo "== sending messages through the send API (router → simulated BSPs → status webhooks)"
DEMO_ENDPOINT_URL=http://127.0.0.1:18091/e/demo "$BIN/loadgen" sends

settle() {
  local last="" stable=0
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
}
echo "== waiting for the stores to settle (consumers join their groups, then catch up)"
settle

echo
echo "== dead letters (switchboard dlq list --counts)"
"$BIN/switchboard" dlq list --counts
echo "   The BSP fixtures are documentation payloads dated 2020-2025: outside the normalizer's"
echo "   400-day window around receipt, their events are dead-lettered as bad_timestamp."
echo "== redrive them with a wider window (switchboard dlq redrive --stage normalizer --reason bad_timestamp)"
SWITCHBOARD_EVENT_TIME_MAX_AGE=3650days "$BIN/switchboard" dlq redrive --stage normalizer --reason bad_timestamp
settle
echo "== backfill a new ClickHouse database from the last day of wa.events (switchboard replay start ...)"
curl -s "$SWITCHBOARD_CLICKHOUSE_URL/" --data-binary "DROP DATABASE IF EXISTS switchboard_backfill" >/dev/null
"$BIN/switchboard" replay start --source wa.events --from -1d --target clickhouse --clickhouse-database switchboard_backfill
echo "   events per type: live switchboard vs switchboard_backfill"
curl -s "$SWITCHBOARD_CLICKHOUSE_URL/" --data-binary "SELECT event_type, live, backfill FROM (SELECT event_type, count() AS live FROM switchboard.events GROUP BY event_type) ALL LEFT JOIN (SELECT event_type, count() AS backfill FROM switchboard_backfill.events GROUP BY event_type) USING event_type ORDER BY event_type FORMAT PrettyCompactMonoBlock"

echo
echo "== PostgreSQL: current status of messages"
psql "$SWITCHBOARD_DATABASE_URL" -c "SELECT bsp, direction, coalesce(status, '(inbound)') AS status, count(*) FROM messages GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
echo "== PostgreSQL: status history rows"
psql "$SWITCHBOARD_DATABASE_URL" -c "SELECT status, count(*) FROM message_status_history GROUP BY 1 ORDER BY 2 DESC"
echo "== ClickHouse: daily rollup per business number (switchboard.daily_summary)"
curl -s "$SWITCHBOARD_CLICKHOUSE_URL/" --data-binary "SELECT day, business_number, sent, delivered, read, failed FROM switchboard.daily_summary ORDER BY day DESC, business_number LIMIT 12 FORMAT PrettyCompactMonoBlock"
echo "== ClickHouse: delivery latency quantiles (ms) per business number and day"
curl -s "$SWITCHBOARD_CLICKHOUSE_URL/" --data-binary "SELECT day, business_number, quantilesMerge(0.5, 0.9, 0.99)(latency_quantiles) AS p50_p90_p99, countMerge(deliveries) AS deliveries FROM switchboard.daily_delivery_latency GROUP BY day, business_number ORDER BY day DESC, business_number LIMIT 12 FORMAT PrettyCompactMonoBlock"
echo "== PostgreSQL: sends by BSP and current status (outbound_messages joined to messages)"
psql "$SWITCHBOARD_DATABASE_URL" -c "SELECT o.bsp, o.state AS send_state, coalesce(m.status, '-') AS status, count(*) FROM outbound_messages o LEFT JOIN messages m ON m.bsp = o.bsp AND m.wamid = coalesce(o.wamid, o.message_id) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
echo "== dead letters (switchboard dlq list --counts; each letter: switchboard dlq list, switchboard dlq show):"
"$BIN/switchboard" dlq list --counts
echo "   (metrics: http://127.0.0.1:9101/metrics, :9102, :9103, router :9104, fanout :9105, replayer :9106, gateway :9100)"
echo "   Operations (replay, backfill, redrive): docs/operations.md"
echo "Stop everything with: deploy/run-local.sh down"
