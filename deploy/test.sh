#!/usr/bin/env bash
# The whole test suite: builds the workspace, brings up the local infrastructure
# (installing what is missing), and runs every unit, property and end-to-end test.
# usage: deploy/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)" >&2; exit 1; }
# The e2e tests spawn the real binaries from the same target directory.
cargo build --workspace --bins --locked
SWITCHBOARD_BIN="$CARGO_TARGET_DIR/debug" deploy/infra.sh up >/dev/null
cargo test --workspace --locked "$@"
