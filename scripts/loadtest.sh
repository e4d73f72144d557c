#!/usr/bin/env bash
# Run a load-test scenario: `scripts/loadtest.sh <scenario>` (smoke, seed-10k,
# burst, max, chaos; see loadtest/scenarios/). Installs etcd and the
# MongoDB-wire server if missing, builds the release binaries, and runs the
# harness, which starts its own 3-member etcd, log store, managers and
# workers on 127.0.0.1 and stops them all. Reports go to loadtest/reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
install_missing
log "cargo build --release (distcron binaries and the harness)"
cargo build --release --bins -p distcron -p distcron-loadtest
export NX_27017_BIN="$PWD/target/test-venv/bin/nx-27017"
exec ./target/release/loadtest "$@"
