#!/usr/bin/env bash
# Installs Ferry on this host: the built tree under /opt/ferry, ferryd and
# ferryctl in /usr/local/bin, the config (kept if present) in /etc/ferry and
# the systemd unit. Run from a checkout as root after `npm run build`.
#   npm run install:system [-- --prefix DIR]   (DIR for a staged install)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=""
if [[ ${1:-} == --prefix ]]; then prefix=${2:?--prefix needs a directory}; fi

[[ -f dist/src/daemon/ferryd.js && -f native/build/Release/ferry_native.node && -f build/bpf/xdp_lb.bpf.o ]] || {
  echo "install-system: build first (npm run build)" >&2; exit 1; }

opt="$prefix/opt/ferry"
mkdir -p "$opt" "$prefix/usr/local/bin" "$prefix/etc/ferry" "$prefix/etc/systemd/system"
rm -rf "$opt.new"
mkdir -p "$opt.new/native/build/Release"
cp -r package.json package-lock.json README.md dist build bpf api config systemd bin node_modules "$opt.new/"
cp native/build/Release/ferry_native.node "$opt.new/native/build/Release/"
# Runtime packages only (no download: prune removes, never fetches).
(cd "$opt.new" && npm prune --omit=dev --no-audit --no-fund --loglevel=error)
rm -rf "$opt.old"
[[ -d $opt ]] && mv "$opt" "$opt.old"
mv "$opt.new" "$opt"
rm -rf "$opt.old"

for b in ferryd ferryctl; do
  printf '#!/bin/sh\nexec /usr/bin/env node %s/bin/%s.js "$@"\n' /opt/ferry "$b" > "$prefix/usr/local/bin/$b"
  chmod 0755 "$prefix/usr/local/bin/$b"
done
[[ -f $prefix/etc/ferry/ferry.yaml ]] || install -m 0640 config/ferry.yaml "$prefix/etc/ferry/ferry.yaml"
install -m 0644 systemd/ferry.service "$prefix/etc/systemd/system/ferry.service"
# BIRD beside ferryd, for bgp.enabled (not enabled here: systemctl enable --now ferry-bird).
install -m 0644 systemd/ferry-bird.service "$prefix/etc/systemd/system/ferry-bird.service"
if [[ -z $prefix ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  echo "installed; edit /etc/ferry/ferry.yaml, then: systemctl enable --now ferry"
else
  echo "installed under ${prefix:-/}"
fi
