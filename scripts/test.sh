#!/usr/bin/env bash
# The project's one test command (README, CI): installs everything the tests need on a fresh machine of this
# kind (root, Debian, npm registry only), starts the Docker engine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
export PATH="$PWD/node_modules/.bin:$PATH"
# turbo must not phone home: there is no network here, and CI output stays clean.
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1
npm run --silent typecheck
npm run --silent lint
npm run --silent build
exec node scripts/run-tests.ts "$@"
