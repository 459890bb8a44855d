#!/usr/bin/env bash
# Installs the JS dependencies (npm ci), builds the client (dist/ and assets/switchboard.js), and
# runs the node tests (clients/js/test) and the browser tests (tests-e2e) against real servers.
#   SWITCHBOARD_BIN           the `switchboard` binary   (default <repo>/target/release/switchboard)
#   SWITCHBOARD_EXAMPLES_DIR  dir of the built examples  (default <repo>/target/release/examples)
#   CHROMIUM                  browser for the e2e tests  (default /usr/bin/chromium)
#   SKIP_E2E=1                run the node tests only
# Build the servers first: cargo build --release --examples --bins
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$repo/target/release/switchboard}"
export SWITCHBOARD_EXAMPLES_DIR="${SWITCHBOARD_EXAMPLES_DIR:-$repo/target/release/examples}"
# node 20 has the WebSocket client behind a flag (node >= 22 has it on by default)
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 22 ]; then export NODE_OPTIONS="${NODE_OPTIONS:-} --experimental-websocket"; fi

npm_q() { npm "$@" --no-audit --no-fund --loglevel=error; }

cd "$here"
npm_q ci
npm run -s build
node build.mjs --size
npm run -s typecheck
# the committed bundle must be the one built from src (the Rust binary embeds it)
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 && ! git -C "$repo" diff --quiet -- assets/switchboard.js 2>/dev/null; then
  echo "warning: assets/switchboard.js differs from the committed bundle: commit the rebuilt one" >&2
fi

status=0
echo "== node tests (clients/js/test)"
node --test --test-concurrency=1 test/*.test.mjs || status=1

if [ "${SKIP_E2E:-0}" != 1 ]; then
  echo "== browser tests (tests-e2e)"
  cd "$repo/tests-e2e"
  npm_q ci
  node --test --test-concurrency=1 ./*.test.mjs || status=1
fi
exit $status
