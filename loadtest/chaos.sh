#!/usr/bin/env bash
# Chaos run: steady webhook, send and fan-out load through the whole pipeline while each
# binary is killed with kill -9 or frozen with SIGSTOP at random, PostgreSQL and
# ClickHouse are crashed and restarted, and the broker is killed and restarted on durable
# (postgres) storage; then an audit of every store, the BSP simulator and the receiver
# against what the load generator was told (e2e/src/bin/chaos.rs). Exits non-zero if
# anything acknowledged was lost or doubled, or a send reached the BSP twice.
#
# usage: loadtest/chaos.sh [--duration 300s] [--interval 10s] [--webhooks-per-sec 100]
#                          [--sends-per-sec 20] [--seed N] [--settle 300s]
# The output (the actions, then the audit table) is also kept in loadtest/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
PROFILE=${CHAOS_PROFILE:-release}
mkdir -p loadtest/results
OUT=loadtest/results/chaos-$(date -u +%Y%m%dT%H%M%SZ).txt

deploy/infra.sh deps >&2
if [ "$PROFILE" = release ]; then
  cargo build --release --workspace --bins --locked >&2
else
  cargo build --workspace --bins --locked >&2
fi
SWITCHBOARD_BIN=$CARGO_TARGET_DIR/$PROFILE deploy/infra.sh up >/dev/null
"$CARGO_TARGET_DIR/$PROFILE/chaos" "$@" 2>&1 | tee "$OUT"
exit "${PIPESTATUS[0]}"
