#!/usr/bin/env bash
# Installs what Ferry needs on a fresh Debian machine (as root) and the npm
# packages, then returns quickly on every later run. Used by `npm test`,
# `npm run demo` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make g++ python3 systemd
              iproute2 ethtool tcpdump util-linux kmod openssl iputils-ping curl iptables nftables conntrack bird2
              etcd-server chromium clang-format)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# node-gyp builds against Node's own headers when the distribution ships them.
if [[ -f /usr/include/node/node.h ]]; then
  export npm_config_nodedir=/usr
fi

# npm ci only when the lockfile changed since the last install.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# bpffs: systemd mounts it on a real host; mount it where it is missing.
if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  if [[ $(id -u) -eq 0 ]]; then mount -t bpf bpf /sys/fs/bpf; fi
fi
