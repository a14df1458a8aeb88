#!/usr/bin/env bash
# The project's one test command (README, CI): installs everything the tests need on a fresh machine of this
# kind (root, Debian, npm registry only), starts the Docker engine, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
export PATH="$PWD/node_modules/.bin:$PATH"
npm run --silent typecheck
npm run --silent lint
npm run --silent build
exec node scripts/run-tests.ts "$@"
