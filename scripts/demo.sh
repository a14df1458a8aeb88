#!/usr/bin/env bash
# The README's main command: installs the npm dependencies (including Node 22) when missing, then starts a
# local 3-node meshrun cluster on loopback, runs a sample job, prints the result and stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/node ] || [ ! -d node_modules/libp2p ]; then
  # `npm install` (not `npm ci`): npm 11 here writes lockfiles without other platforms' optional
  # packages (e.g. biome's darwin binaries), which `npm ci` then rejects as out of sync.
  ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm install --no-audit --no-fund >/dev/null
fi
# Docker is optional for the demo (it falls back to WASM); start the engine if it is installed but idle.
if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  mkdir -p /var/log/meshrun-test
  (dockerd --log-level=warn 2>&1 | head -c 20000000 > /var/log/meshrun-test/dockerd.log) &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
exec npm run --silent demo
