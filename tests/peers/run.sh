#!/usr/bin/env bash
# Real peers against the echo example: Python `websockets` (pytest) and Node `ws` (node --test).
# Starts three echo servers on free loopback ports (default limits, which accept permessage-deflate;
# --max-message-size 1024; --compression off),
# runs both suites, stops the servers, prints each runner's summary and exits non-zero on any failure.
#
# Needs the release examples (cargo build --release --examples, or SWITCHBOARD_EXAMPLES_DIR), a Python
# with the packages of requirements.txt (target/py, made by scripts/test.sh, is used when present),
# and node + npm (packages installed here by `npm ci` from package-lock.json).
set -uo pipefail
cd "$(dirname "$0")"
PEERS=$PWD
ROOT=$(cd ../.. && pwd)
BIN=${SWITCHBOARD_EXAMPLES_DIR:-$ROOT/target/release/examples}
PY=python3
[ -x "$ROOT/target/py/bin/python" ] && PY=$ROOT/target/py/bin/python
LOGS=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$LOGS"
}
trap cleanup EXIT

if [ ! -x "$BIN/echo" ]; then
  echo "real peers: $BIN/echo not found (cargo build --release --examples)" >&2
  exit 1
fi

# start_echo NAME ARGS...: starts the echo example on a free port and prints its ws:// URL.
start_echo() {
  local name=$1; shift
  "$BIN/echo" --bind 127.0.0.1:0 "$@" > "$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
  local url=""
  for _ in $(seq 100); do
    url=$(sed -n 's/^echo listening on \(ws:\/\/[0-9.:]*\).*/\1/p' "$LOGS/$name.log")
    [ -n "$url" ] && break
    sleep 0.05
  done
  [ -n "$url" ] || { echo "echo ($name) did not start:" >&2; cat "$LOGS/$name.log" >&2; return 1; }
  URL_OUT=$url
}

start_echo default || exit 1
export ECHO_URL=$URL_OUT
start_echo small --max-message-size 1024 || exit 1
export ECHO_SMALL_URL=$URL_OUT
start_echo plain --compression off || exit 1
export ECHO_PLAIN_URL=$URL_OUT
echo "echo servers: $ECHO_URL (default limits), $ECHO_SMALL_URL (--max-message-size 1024), $ECHO_PLAIN_URL (--compression off)"

failed=()

echo "== python (websockets)"
if "$PY" -c 'import websockets, pytest' 2>/dev/null || "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt; then
  "$PY" -m pytest -q -p no:cacheprovider test_echo.py 2>&1 | tee "$LOGS/py.out"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=(python)
else
  echo "could not install the Python packages"; failed+=(python)
fi

echo "== node (ws)"
if [ ! -d node_modules/ws ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --silent --no-audit --no-fund || failed+=(npm-ci)
fi
node --test --test-reporter=spec echo.test.mjs 2>&1 | tee "$LOGS/node.out"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=(node)

# The servers must have survived everything (no panic, still listening).
for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || failed+=("echo-exited"); done
if grep -l -i "panicked" "$LOGS"/*.log >/dev/null 2>&1; then failed+=(echo-panicked); grep -i -A5 panicked "$LOGS"/*.log; fi

echo
echo "== real peers summary"
echo "python: $(grep -E '(passed|failed|error)' "$LOGS/py.out" 2>/dev/null | tail -n 1)"
echo "node:   $(grep -E '^ℹ (tests|pass|fail) ' "$LOGS/node.out" 2>/dev/null | tr '\n' ' ')"
if [ ${#failed[@]} -gt 0 ]; then
  echo "real peers: FAILED (${failed[*]})"
  exit 1
fi
echo "real peers: all passed"
