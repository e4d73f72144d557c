#!/usr/bin/env bash
# The package test (part of scripts/test.sh): build the .deb, install it on
# this machine, check its files, modes, user and configs, verify the systemd
# units, run the installed `distcron standalone` with the installed config on
# a loopback port as the `distcron` user, save and run a job through the API,
# and check the nginx example with `nginx -t`. Then purge the package, its
# data and its user, and stop everything it started.
# Run as root on a machine where the package is not otherwise installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

fail() { echo "package test: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (it installs the package)"
if dpkg-query -W -f='${Status}' distcron 2>/dev/null | grep -q "install ok installed"; then
  fail "distcron is already installed here; this test installs and purges it"
fi

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

deb=$(scripts/package.sh | tail -1)
work=$(mktemp -d /tmp/distcron-package.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  dpkg --purge distcron >/dev/null 2>&1 || true
  rm -rf /var/lib/distcron /var/lib/distcron-worker /etc/distcron "$work"
  if getent passwd distcron >/dev/null; then userdel distcron 2>/dev/null || true; fi
  if getent group distcron >/dev/null; then groupdel distcron 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

log "dpkg -i $deb"
dpkg -i "$deb" >/dev/null

# Files, modes, owners.
check_mode() { # PATH MODE OWNER:GROUP
  local got
  got=$(stat -c '%a %U:%G' "$1") || fail "$1 is missing"
  [ "$got" = "$2 $3" ] || fail "$1 is '$got', expected '$2 $3'"
}
for bin in distcron distcron-manager distcron-worker; do check_mode "/usr/bin/$bin" 755 root:root; done
for role in manager worker standalone; do
  check_mode "/etc/distcron/$role.json" 640 root:distcron
  check_mode "/lib/systemd/system/distcron-$role.service" 644 root:root
done
check_mode /var/lib/distcron 700 distcron:distcron
check_mode /var/lib/distcron-worker 700 root:root
[ -f /usr/share/distcron/webroot/index.html ] || fail "the console is missing"
[ -f /usr/share/distcron/webroot/node_modules/jquery/dist/jquery.min.js ] || fail "jQuery is missing"
shell=$(getent passwd distcron | cut -d: -f7)
[ "$shell" = /usr/sbin/nologin ] || fail "the distcron user has shell '$shell'"
conffiles=$(dpkg-query -W -f='${Conffiles}' distcron)
for role in manager worker standalone; do
  grep -q "/etc/distcron/$role.json" <<<"$conffiles" || fail "/etc/distcron/$role.json is not a conffile"
done
log "package files, modes, user and conffiles: ok"

# systemd units.
for unit in /lib/systemd/system/distcron-*.service; do
  out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
done
log "systemd-analyze verify: ok"

# The installed standalone, as its unit would run it.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
runuser -u distcron -- /usr/bin/distcron standalone --config /etc/distcron/standalone.json \
  --listen "127.0.0.1:$port" >"$work/standalone.log" 2>&1 &
pid=$!
wait_until() { # SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { cat "$work/standalone.log" >&2; fail "$what within the deadline"; }
    kill -0 "$pid" 2>/dev/null || { cat "$work/standalone.log" >&2; fail "standalone exited"; }
    sleep 0.2
  done
}
wait_until 30 "standalone ready" curl -sf "$base/readyz"
check_mode /var/lib/distcron/admin.token 600 distcron:distcron
token=$(cat /var/lib/distcron/admin.token)
auth=(-H "Authorization: Bearer $token")
curl -sf "${auth[@]}" -H 'Content-Type: application/json' \
  -d '{"name":"package-check","command":"echo ran from the package as $(id -un)","cronExpr":"@yearly"}' \
  "$base/job/save" >/dev/null || fail "saving a job failed"
ran() {
  curl -sf "${auth[@]}" -d name=package-check "$base/job/run" >/dev/null
  curl -sf "${auth[@]}" "$base/job/log?name=package-check" | grep -q 'ran from the package as distcron'
}
wait_until 30 "a run of the saved job" ran
log "installed standalone saved and ran a job as the distcron user: ok"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

# The nginx example, with a throwaway certificate at its paths.
mkdir -p "$work/nginx/ssl" "$work/nginx/logs"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=cron.example.com \
  -keyout "$work/nginx/ssl/privkey.pem" -out "$work/nginx/ssl/fullchain.pem" 2>/dev/null
sed "s#/etc/ssl/distcron/#$work/nginx/ssl/#" config/nginx/distcron.conf >"$work/nginx/distcron.conf"
cat >"$work/nginx/nginx.conf" <<CONF
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events {}
http {
    access_log off;
    include $work/nginx/distcron.conf;
}
CONF
out=$(nginx -t -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>&1) || fail "nginx -t: $out"
log "nginx -t accepts config/nginx/distcron.conf: ok"
log "package: $(basename "$deb"), $(du -h "$deb" | cut -f1)"
