#!/usr/bin/env bash
# Run distcron on one machine on its embedded default: builds what is missing
# (the binary; the console's npm packages) and starts `distcron standalone`
# (the API and console on http://127.0.0.1:8070/; data in ./distcron-data).
# Extra arguments are passed on, e.g. `scripts/run.sh --listen 127.0.0.1:9000`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_rust
ensure_console
cargo build --release --bin distcron
exec ./target/release/distcron standalone --config config/standalone.json "$@"
