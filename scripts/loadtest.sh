#!/usr/bin/env bash
# Run a load-test scenario: `scripts/loadtest.sh <scenario>` (smoke, seed-10k,
# burst, max, chaos, compare; see loadtest/scenarios/). Installs etcd and the
# MongoDB-wire server if missing, builds the release binaries, and runs the
# harness, which starts its own 3-member etcd, log store, managers and
# workers on 127.0.0.1 and stops them all. Reports go to loadtest/reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
install_missing
# The peer of the `compare` scenario, pinned, in the same venv.
APSCHEDULER_VERSION=3.10.4
venv=$PWD/target/test-venv
if [ "$("$venv/bin/pip" show apscheduler 2>/dev/null | sed -n 's/^Version: //p' || true)" != "$APSCHEDULER_VERSION" ]; then
  log "installing APScheduler $APSCHEDULER_VERSION into $venv"
  "$venv/bin/pip" install -q "apscheduler==$APSCHEDULER_VERSION"
fi
log "cargo build --release (distcron binaries and the harness)"
cargo build --release --bins -p distcron -p distcron-loadtest
export NX_27017_BIN="$PWD/target/test-venv/bin/nx-27017"
exec ./target/release/loadtest "$@"
