#!/usr/bin/env bash
# Builds native/ferry_native.node against Node's installed headers (no download).
set -euo pipefail
cd "$(dirname "$0")/.."
args=(rebuild --directory native --loglevel=warn)
if [[ -f /usr/include/node/node.h ]]; then args+=(--nodedir=/usr); fi
exec npx --no-install node-gyp "${args[@]}"
