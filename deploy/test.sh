#!/usr/bin/env bash
# The whole test suite: builds the workspace, brings up the local infrastructure
# (installing what is missing), and runs every unit, property and end-to-end test.
# usage: deploy/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)" >&2; exit 1; }
deploy/infra.sh deps
deploy/validate.sh
# The e2e tests spawn the real binaries from the same target directory.
cargo build --workspace --bins --locked
SWITCHBOARD_BIN="$CARGO_TARGET_DIR/debug" deploy/infra.sh up >/dev/null
# Each e2e test makes its own PostgreSQL and ClickHouse database (t + 10 hex digits);
# drop those of earlier runs so repeated runs do not pile them up.
for db in $(su postgres -c "psql -qAt -c \"SELECT datname FROM pg_database WHERE datname ~ '^t[0-9a-f]{10}$'\""); do
  su postgres -c "psql -q -c 'DROP DATABASE IF EXISTS $db'" >/dev/null 2>&1 || true
done
for db in $(curl -s "http://127.0.0.1:8123/?query=SELECT%20name%20FROM%20system.databases%20WHERE%20match(name,%20'%5Et%5B0-9a-f%5D%7B10%7D%24')"); do
  curl -s "http://127.0.0.1:8123/" --data-binary "DROP DATABASE IF EXISTS $db" >/dev/null || true
done
rm -rf "${TMPDIR:-/tmp}/switchboard-e2e"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary, the last of
# which is often a crate's empty doc-test run).
awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}' "$log"
[ "$status" -eq 0 ] || exit "$status"
[ $# -eq 0 ] || exit 0 # a chosen part of the suite: no chaos run
# A short chaos run (loadtest/chaos.sh runs longer ones): load while every part is killed,
# frozen and restarted, then an audit that fails if anything was lost or doubled. Seeded,
# so a failure can be replayed with the same actions.
timeout 900 "$CARGO_TARGET_DIR/debug/chaos" --duration 60s --interval 4s --seed 7 \
  --webhooks-per-sec 50 --sends-per-sec 10 --settle 180s
