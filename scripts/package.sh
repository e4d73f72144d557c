#!/usr/bin/env bash
# Build the Debian package: target/debian/distcron_<version>_<arch>.deb.
#
#   scripts/package.sh
#
# Contents: the three binaries in /usr/bin, the systemd units in
# /lib/systemd/system, default configs in /etc/distcron (conffiles, so
# upgrades keep local edits), the console in /usr/share/distcron/webroot, the
# README in /usr/share/doc/distcron. Installing creates the `distcron` system
# user and /var/lib/distcron (0700); purging keeps the data directories.
#
# Built with dpkg-deb from a staged tree: Debian's own tool, and the whole
# recipe is this page (cargo-deb would add a compile of its own to every run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_rust
ensure_console

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
log "cargo build --release (distcron binaries)"
cargo build --release --bins -p distcron

stage=target/debian/distcron_${version}_${arch}
rm -rf "$stage"
install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
  "$stage/etc/distcron" "$stage/usr/share/distcron" "$stage/usr/share/doc/distcron"
for bin in distcron distcron-manager distcron-worker; do
  install -m 0755 -s "target/release/$bin" "$stage/usr/bin/$bin"
done
install -m 0644 config/systemd/*.service "$stage/lib/systemd/system/"
for role in manager worker standalone; do
  install -m 0640 "config/deb/$role.json" "$stage/etc/distcron/$role.json"
done
# The console: its own files and the npm packages it serves.
install -d -m 0755 "$stage/usr/share/distcron/webroot/node_modules"
cp -r webroot/index.html webroot/favicon.svg webroot/css webroot/js "$stage/usr/share/distcron/webroot/"
for pkg in jquery bootstrap chart.js; do
  install -d -m 0755 "$stage/usr/share/distcron/webroot/node_modules/$pkg"
  cp -r "webroot/node_modules/$pkg/dist" "webroot/node_modules/$pkg/package.json" \
    "$stage/usr/share/distcron/webroot/node_modules/$pkg/"
done
install -m 0644 README.md "$stage/usr/share/doc/distcron/README.md"
cp -r docs "$stage/usr/share/doc/distcron/"
find "$stage/usr/share" -type d -exec chmod 0755 {} +
find "$stage/usr/share" -type f -exec chmod 0644 {} +

installed_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: distcron
Version: $version
Architecture: $arch
Maintainer: distcron developers <distcron@localhost>
Installed-Size: $installed_kb
Depends: libc6 (>= 2.34), libgcc-s1, adduser
Section: admin
Priority: optional
Description: distributed cron: every tick runs once across a fleet of workers
 distcron runs scheduled shell commands on a fleet of workers over etcd and
 MongoDB, exactly once per tick, keeping every run's output. One binary also
 runs everything on one machine (distcron standalone).
 .
 Units: distcron-manager, distcron-worker, distcron-standalone (none enabled).
EOF
printf '%s\n' /etc/distcron/manager.json /etc/distcron/worker.json \
  /etc/distcron/standalone.json >"$stage/DEBIAN/conffiles"

cat >"$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd distcron >/dev/null; then
    adduser --system --group --home /var/lib/distcron --no-create-home \
      --shell /usr/sbin/nologin --quiet distcron
  fi
  install -d -m 0700 -o distcron -g distcron /var/lib/distcron
  install -d -m 0700 -o root -g root /var/lib/distcron-worker
  # The configs may hold secrets: readable by root and the service user.
  chown root:distcron /etc/distcron/*.json
  chmod 0640 /etc/distcron/*.json
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
  fi
fi
exit 0
EOF
cat >"$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  for unit in distcron-manager distcron-worker distcron-standalone; do
    systemctl stop "$unit.service" >/dev/null 2>&1 || true
  done
fi
exit 0
EOF
cat >"$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
# The data directories (job history, tokens) and the user are kept, even on
# purge: remove /var/lib/distcron* and the distcron user by hand if unwanted.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
exit 0
EOF
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

deb=target/debian/distcron_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
log "built $deb ($(du -h "$deb" | cut -f1), installed ${installed_kb} KiB)"
echo "$deb"
