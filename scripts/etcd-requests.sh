#!/usr/bin/env bash
# Client requests etcd members have served so far, per gRPC method, summed
# over the members given (`host:port` of each client URL): every unary call,
# and every message clients sent on a stream (each lease keep-alive, each
# watch created), as the load test counts them. Take two readings and
# subtract to see where a cluster's requests go:
#   scripts/etcd-requests.sh 127.0.0.1:2379 127.0.0.1:22379 127.0.0.1:32379
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 HOST:PORT..." >&2; exit 2; }
for endpoint in "$@"; do
  curl -sf "http://$endpoint/metrics"
done | awk '
  /^grpc_server_(handled|msg_received)_total\{/ {
    match($0, /grpc_method="[^"]*"/); method = substr($0, RSTART + 13, RLENGTH - 14)
    unary = ($0 ~ /grpc_type="unary"/)
    if (($1 ~ /^grpc_server_handled_total/ && unary) || ($1 ~ /^grpc_server_msg_received_total/ && !unary))
      count[method] += $NF
  }
  END { for (m in count) if (count[m] > 0) print m, count[m] }' | sort
