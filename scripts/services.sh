# Shared by scripts/test.sh and scripts/bench.sh: install what the servers
# need, then `start_services` starts a fresh etcd and MongoDB-wire server on
# 127.0.0.1 and exports ETCD_ENDPOINTS and MONGODB_URI. Everything started is
# stopped when the calling script exits.
# Source it from the repository root.
# shellcheck shell=bash

log() { printf '== %s\n' "$*" >&2; }

# The MongoDB-wire test server's version, pinned.
NX_27017_VERSION=0.8.1
AIOSMTPD_VERSION=1.4.6

# Rust: Debian 12's cargo is too old for edition 2024, so use rustup.
ensure_rust() {
  if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null; then
    command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

install_missing() {
  missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  command -v curl >/dev/null || missing+=(curl)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  ensure_rust
  # The MongoDB-wire server lives in a venv inside target/, rebuilt with the
  # tree; pinned, so a fresh machine gets the version the tests passed on.
  venv=$PWD/target/test-venv
  # (sed reads all of pip's output: grep -q would stop early, and pipefail
  # would then count pip's broken pipe as "not installed".)
  installed=$("$venv/bin/pip" show nx-27017 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ ! -x "$venv/bin/nx-27017" ] || [ "$installed" != "$NX_27017_VERSION" ]; then
    log "installing nx-27017 $NX_27017_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "nx-27017==$NX_27017_VERSION"
  fi
  # The SMTP sink of the notification tests (tests/notify.rs starts it).
  installed=$("$venv/bin/pip" show aiosmtpd 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ "$installed" != "$AIOSMTPD_VERSION" ]; then
    log "installing aiosmtpd $AIOSMTPD_VERSION into $venv"
    "$venv/bin/pip" install -q "aiosmtpd==$AIOSMTPD_VERSION"
  fi
}

# The console's npm packages (jQuery, Bootstrap), pinned by package-lock.json.
ensure_console() {
  command -v npm >/dev/null || {
    log "installing nodejs and npm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  }
  if [ ! -d webroot/node_modules/jquery ] || [ webroot/package-lock.json -nt webroot/node_modules/.package-lock.json ]; then
    log "npm ci in webroot/"
    (cd webroot && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# The browser test's needs: Debian's chromium, and playwright-core to drive it.
ensure_browser() {
  ensure_console
  command -v chromium >/dev/null || {
    log "installing chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  }
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    log "npm ci in tests/browser/"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

start_services() {
  install_missing
  state=$(mktemp -d /tmp/distcron-test.XXXXXX)
  pids=()
  cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$state"
  }
  trap cleanup EXIT INT TERM

  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

  # wait_for NAME SECONDS COMMAND...: poll a readiness check until a deadline.
  wait_for() {
    local name=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
      if [ $SECONDS -ge $deadline ]; then
        echo "$name did not become ready within ${seconds}s; its log:" >&2
        cat "$state/$name.log" >&2 || true
        exit 1
      fi
      sleep 0.2
    done
  }

  # The shared etcd of the test command. The Rust tests start their own
  # members (tests/support/etcd.rs) only to stop and restart them.
  etcd_port=$(free_port); etcd_peer=$(free_port)
  etcd --name distcron-test --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "distcron-test=http://127.0.0.1:$etcd_peer" ${ETCD_EXTRA_FLAGS:-} >"$state/etcd.log" 2>&1 &
  pids+=($!)
  wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

  # The shared MongoDB-wire server. Tests that stop and restart one start
  # their own (tests/support/mongo.rs); the load harness measures its own.
  mongo_port=$(free_port)
  "$venv/bin/nx-27017" --host 127.0.0.1 -p "$mongo_port" --data-dir "$state/mongo" \
    --log-file "$state/mongo-server.log" --pid-file "$state/mongo.pid" >"$state/mongo.log" 2>&1 &
  pids+=($!)
  wait_for mongo 30 python3 -c "import socket; socket.create_connection(('127.0.0.1', $mongo_port), 1)"

  export ETCD_ENDPOINTS="127.0.0.1:$etcd_port"
  export MONGODB_URI="mongodb://127.0.0.1:$mongo_port/?directConnection=true"
  # For tests that run (and stop) a MongoDB-wire server of their own.
  export NX_27017_BIN="$venv/bin/nx-27017"
  # The Python that runs the SMTP sink (`python -m aiosmtpd`).
  export AIOSMTPD_PYTHON="$venv/bin/python"
  log "etcd at $ETCD_ENDPOINTS, MongoDB-wire server at $MONGODB_URI"
}
