#!/usr/bin/env bash
# Tenant isolation: another tenant's fan-out and send latency (p50/p99) alone and beside a
# noisy tenant (1,000 failing strict endpoints; a 20,000-send backlog on an 80-mps
# number), RUNS runs each in a fresh pipeline, medians printed (e2e/src/bin/isolation.rs).
#
# usage: loadtest/isolation-bench.sh [RUNS] [extra isolation args, e.g. --part fanout]
# The output is also kept in loadtest/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
RUNS=${1:-3}
shift || true
mkdir -p loadtest/results
OUT=loadtest/results/isolation-$(date -u +%Y%m%dT%H%M%SZ).txt

deploy/infra.sh deps >&2
cargo build --release --workspace --bins --locked >&2
SWITCHBOARD_BIN=$CARGO_TARGET_DIR/release deploy/infra.sh up >/dev/null
"$CARGO_TARGET_DIR/release/isolation" --runs "$RUNS" "$@" 2>&1 | tee "$OUT"
exit "${PIPESTATUS[0]}"
