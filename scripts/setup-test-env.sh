#!/usr/bin/env bash
# Installs and starts everything the test suite needs on a fresh Debian machine of this project's kind:
# Node 22 (from npm), Docker engine, a local registry, busybox test images, wabt, Chromium, Redis, etcd.
# Idempotent: safe to run again; each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

apt_pkgs=(docker.io busybox-static docker-registry wabt chromium redis-server etcd-server etcd-client iproute2 iptables util-linux procps)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  log "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x node_modules/.bin/node ] || [ ! -d node_modules/libp2p ]; then
  log "npm install"
  # `npm install` (not `npm ci`): npm 11 here writes lockfiles without other platforms' optional
  # packages (e.g. biome's darwin binaries), which `npm ci` then rejects as out of sync.
  ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm install --no-audit --no-fund >/dev/null
fi
ver=$(node_modules/.bin/node -p 'process.versions.node.split(".")[0]')
[ "$ver" -ge 22 ] || { echo "setup: node_modules/.bin/node is v$ver, need >= 22" >&2; exit 1; }

# Docker engine: no systemd here, so start dockerd ourselves; its log is size-capped by rotation below.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p /var/log/meshrun-test
  (dockerd --log-level=warn 2>&1 | head -c 20000000 > /var/log/meshrun-test/dockerd.log) &
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start; see /var/log/meshrun-test/dockerd.log" >&2; exit 1; }
fi

# Test image from Debian's static busybox (no registry reachable here).
if ! docker image inspect meshrun-test/busybox:1 >/dev/null 2>&1; then
  log "building meshrun-test/busybox:1"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bin" "$tmp/tmp" "$tmp/etc"
  cp /bin/busybox "$tmp/bin/"
  for c in $(/bin/busybox --list); do [ "$c" = busybox ] || ln -sf busybox "$tmp/bin/$c"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$tmp/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/sh' >> "$tmp/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$tmp/etc/group"
  tar -C "$tmp" -c . | docker import -c 'ENV PATH=/bin' - meshrun-test/busybox:1 >/dev/null
  rm -rf "$tmp"
fi
log "ready: node $(node_modules/.bin/node --version), docker $(docker version -f '{{.Server.Version}}')"
