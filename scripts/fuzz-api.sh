#!/usr/bin/env bash
# The schema fuzzer: schemathesis (pinned, from PyPI) generates requests from
# the manager's /openapi.json, valid and invalid, and checks every answer
# against the document: no 5xx, statuses and bodies as declared, invalid
# input refused. It runs twice against a manager with no workers (so no
# generated command ever runs): once with an admin token, once with a viewer
# token. Fails on any failure or error; prints one figures line per token.
#
#   scripts/fuzz-api.sh            # starts its own etcd and MongoDB-wire server
#   FUZZ_EXAMPLES=500 scripts/fuzz-api.sh
#
# Needs target/debug/distcron-manager (cargo build). Reports go to
# target/fuzz/, outside the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

SCHEMATHESIS_VERSION=4.32.5
examples=${FUZZ_EXAMPLES:-100}
seed=${FUZZ_SEED:-20261121}

fuzz_venv=$PWD/target/fuzz-venv
installed=$("$fuzz_venv/bin/pip" show schemathesis 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed" != "$SCHEMATHESIS_VERSION" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $fuzz_venv"
  python3 -m venv "$fuzz_venv"
  "$fuzz_venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

manager=target/debug/distcron-manager
[ -x "$manager" ] || { echo "$manager is missing: run cargo build first" >&2; exit 1; }

# Our own servers unless the caller (scripts/test.sh) already started them.
if [ -z "${ETCD_ENDPOINTS:-}" ] || [ -z "${MONGODB_URI:-}" ]; then
  start_services
else
  state=$(mktemp -d /tmp/distcron-fuzz.XXXXXX)
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$state"' EXIT INT TERM
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

port=$(free_port)
base=http://127.0.0.1:$port
admin_token=$(python3 -c 'import secrets; print("fuzz-" + secrets.token_hex(16))')
# A fresh prefix and database: nothing of another test is seen or changed.
run_tag=fuzz$(date +%s%N)
DISTCRON_LISTEN=127.0.0.1:$port DISTCRON_ETCD_ENDPOINTS=$ETCD_ENDPOINTS \
  DISTCRON_ETCD_PREFIX=/$run_tag/ DISTCRON_MONGODB_URI=$MONGODB_URI DISTCRON_MONGODB_DATABASE=$run_tag \
  DISTCRON_ADMIN_TOKEN=$admin_token "$manager" >"$state/fuzz-manager.log" 2>&1 &
pids+=($!)
deadline=$((SECONDS + 60))
until curl -sf "$base/readyz" >/dev/null; do
  if [ $SECONDS -ge $deadline ] || ! kill -0 "${pids[-1]}" 2>/dev/null; then
    echo "the manager did not become ready within 60s; its log:" >&2
    cat "$state/fuzz-manager.log" >&2
    exit 1
  fi
  sleep 0.2
done

viewer_token=$(curl -sf -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
  -d '{"name":"fuzz viewer","role":"viewer"}' "$base/auth/tokens" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["token"])')

reports=$PWD/target/fuzz
rm -rf "$reports"; mkdir -p "$reports"
status=0
for role in admin viewer; do
  token_var=${role}_token
  log "schema fuzzer as $role ($examples cases per operation, seed $seed)"
  if ! "$fuzz_venv/bin/st" --config-file tests/fuzz/schemathesis.toml run "$base/openapi.json" \
      -H "Authorization: Bearer ${!token_var}" -n "$examples" --seed "$seed" \
      --no-color --report json --report-json-path "$reports/$role.json" >"$reports/$role.txt" 2>&1; then
    status=1
    cat "$reports/$role.txt" >&2
  fi
  python3 - "$role" "$reports/$role.json" <<'EOF'
import json, sys
role, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
ops, cases = r["operations"], r["test_cases"]
failures = sum(f["count"] for f in r["failures"])
print(f"fuzz {role}: {ops['tested']}/{ops['total']} operations, {cases['generated']} cases, "
      f"{failures} failures, {len(r['errors'])} errors, {r['running_time']:.0f} s")
EOF
done
if grep -q "panicked" "$state/fuzz-manager.log"; then
  echo "the manager panicked while fuzzed:" >&2
  grep -A5 panicked "$state/fuzz-manager.log" >&2
  status=1
fi
exit $status
