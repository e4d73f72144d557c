#!/usr/bin/env bash
# Run one benchmark against fresh servers: `scripts/bench.sh <bench name>`.
# Starts etcd and the MongoDB-wire server on loopback with throwaway data
# directories (as scripts/test.sh does), runs `cargo bench --bench NAME`,
# and stops them. Benchmarks print figures; they assert nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/bench.sh <bench name> [criterion args]" >&2; exit 2; }
source scripts/services.sh
start_services
bench=$1; shift
if [ "$bench" = http_load ] && ! command -v wrk >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
cargo bench --bench "$bench" -- "$@"
