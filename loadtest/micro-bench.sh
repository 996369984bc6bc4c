#!/usr/bin/env bash
# Micro-benchmarks (criterion): per-webhook signature checks and routing keys, every
# parser over its fixtures, Avro encoding and decoding of raw webhooks and events, event
# ids (connectors, codec); the send API's message, recipient and sender checks
# (connectors: send_validate/*); the normalizer's step from a decoded raw webhook to its
# events, the fan-out's webhook body of an event and its signature (processors:
# normalize/*, fanout/*); the PostgreSQL and ClickHouse sinks' rows of a 1,000-event batch
# (sinks: sink_rows/*). Writes each estimate to loadtest/results/micro-<timestamp>.txt;
# criterion's full reports stay in $CARGO_TARGET_DIR/criterion.
#
# usage: loadtest/micro-bench.sh [FILTER]   (a criterion filter, e.g. "verify")
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
mkdir -p loadtest/results
OUT=loadtest/results/micro-$(date -u +%Y%m%dT%H%M%SZ).txt
{
  echo "# loadtest/micro-bench.sh ${1:-}   ($(date -u +%FT%TZ), $(nproc) cores, $(git rev-parse --short HEAD))"
  echo "# benchmark: [lower bound, estimate, upper bound] of the time per iteration (criterion, 95 % confidence); thrpt: elements (webhooks, sends or events) per second"
  cargo bench -p switchboard-connectors -p switchboard-schemas -p switchboard-processors -p switchboard-sinks \
    --bench connectors --bench codec --bench processors --bench sinks -- ${1:+"$1"} 2>/dev/null |
    awk '
      /time:/ { n = $0; sub(/ *time:.*/, "", n); if (n != "") name = n
                t = $0; sub(/.*time: +/, "", t); print name ": " t; next }
      /thrpt:/ { t = $0; sub(/.*thrpt: +/, "", t); print name ": thrpt " t; next }
      /^[a-z]/ { name = $0 }'
} | tee "$OUT"
echo "results written to $OUT" >&2
