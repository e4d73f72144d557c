#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine (as root):
#   installs what is missing, starts a fresh etcd and a MongoDB-wire server on
#   127.0.0.1 with throwaway data directories, runs formatting and lint checks,
#   every test, the schema fuzzer, the console's browser test, the Debian
#   package test and the `smoke` load test, then
#   stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
start_services
ensure_browser

# --- Checks and tests -------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --workspace --all-targets --no-fail-fast
log "schema fuzzer against /openapi.json (admin and viewer tokens)"
scripts/fuzz-api.sh
log "console in a browser"
node tests/browser/console.test.mjs
log "Debian package: build, install, check, run, purge (and nginx -t on the proxy example)"
scripts/test-package.sh
log "load test: smoke (1,000 jobs a minute; fails on a missing or duplicated tick)"
# Its report goes under target/: the committed ones change only on purpose.
scripts/loadtest.sh smoke --reports target/loadtest-reports
