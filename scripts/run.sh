#!/usr/bin/env bash
# Run distcron on one machine on its embedded default: builds what is missing
# and starts `distcron standalone` (console and API on 127.0.0.1:8070).
# Extra arguments are passed on, e.g. `scripts/run.sh --listen 127.0.0.1:9000`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Rust: Debian 12's cargo is too old for edition 2024, so use rustup.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi
cargo build --release --bin distcron
exec ./target/release/distcron standalone --config config/standalone.json "$@"
