#!/usr/bin/env bash
# Side-by-side benchmarks: the same load generator (bench/loadgen, `switchboard-bench`) against
# Switchboard (examples/socketapi_docs, examples/echo), SocketAPI 0.2.0 on uvicorn
# (bench/peers/socketapi), uWebSockets.js (bench/peers/uws) and a minimal tokio-websockets server
# (bench/loadgen/src/bin/raw_broadcast.rs). Each measurement starts its server fresh.
#
#   scripts/bench.sh SCENARIO [--quick]      SCENARIO: fanout | latency | channels | idle | echo | all | compare | deflate
#   (latency: only the fixed-rate fan-out cases, which fanout runs last; compare: fan-out 1k x 64 B and
#   idle memory, the two figures a change must not regress — run it with
#   SERVERS="switchboard-base switchboard" BASELINE_DIR=DIR, DIR holding an older build's socketapi_docs
#   and echo, to interleave old and new builds — or SERVERS="switchboard switchboard-history" for the
#   cost of history on the same build, SERVERS="switchboard switchboard-auth" for the cost of
#   authenticated connections (HS256 tokens on every connection); COMPARE_IDLE=0 for the fan-out alone,
#   COMPARE_MESSAGES=N publications per fan-out run, 2000 by default;
#   deflate: permessage-deflate, issue 17 — fan-out 1k subscribers x a ~1 KiB JSON order, the
#   subscribers on the loadgen's own client offering permessage-deflate as browsers do (bytes read
#   per delivery counted), then idle memory with compression agreed; run it with
#   SERVERS="switchboard switchboard-deflate uws uws-deflate": the -deflate servers accept the offer
#   (Switchboard `--compression on`, uWS.js SHARED_COMPRESSOR), the others ignore it;
#   DEFLATE_MESSAGES=N publications per run, 2000 by default; DEFLATE_IDLE=N connections, 10000)
#
# Results: one JSON line per measurement appended to target/bench/results.jsonl (the loadgen's
# line plus "session"), then a markdown table (medians, ratios vs Switchboard) on stdout.
# Env knobs: RUNS (3; SocketAPI always 1), SERVERS ("switchboard uws raw socketapi"),
#   MAX_CONNS (18000: the hard `ulimit -n` here is 20000), CARGO_TARGET_DIR (/work/target-bench),
#   SKIP_BUILD=1, BENCH_CLIENT_THREADS (2).
# Everything listens on and connects to 127.0.0.x only; every run is bounded in count and time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SCENARIO=${1:-}
QUICK=0
[ "${2:-}" = "--quick" ] && QUICK=1
case "$SCENARIO" in fanout|latency|channels|idle|echo|all|compare|deflate) ;; *)
  echo "usage: scripts/bench.sh fanout|latency|channels|idle|echo|all|compare|deflate [--quick]" >&2; exit 2;;
esac

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
B=$CARGO_TARGET_DIR/release
OUT=$ROOT/target/bench
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
SESSION=$(date -u +%Y%m%dT%H%M%SZ)-$SCENARIO; [ $QUICK = 1 ] && SESSION=$SESSION-quick
RUNS=${RUNS:-3}
[ $QUICK = 1 ] && RUNS=${RUNS_QUICK:-1}
SERVERS=${SERVERS:-switchboard uws raw socketapi}
MAX_CONNS=${MAX_CONNS:-18000}
PY=${PYTHON:-$ROOT/target/py/bin/python}

# Many connections: as many descriptors as allowed (the hard limit here is 20000, see BENCHMARKS.md).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 200000 2>/dev/null || true
echo "# session $SESSION, ulimit -n $(ulimit -n), ip_local_port_range $(cat /proc/sys/net/ipv4/ip_local_port_range | tr '\t' ' ')" >&2

# --- setup --------------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  echo "# build (release, $CARGO_TARGET_DIR)" >&2
  nice -n 10 cargo build --release --quiet -p switchboard-bench -p switchboard --bins --example socketapi_docs --example echo
fi
if [[ " $SERVERS " == *" uws"* ]] && [ ! -d bench/peers/uws/node_modules/uWebSockets.js ]; then
  (cd bench/peers/uws && npm ci --no-audit --no-fund --silent)
fi
if [[ " $SERVERS " == *" socketapi "* ]] && ! "$PY" -c 'import socketapi, uvicorn' 2>/dev/null; then
  [ -x "$PY" ] || python3 -m venv "$ROOT/target/py"
  "$ROOT/target/py/bin/pip" install --quiet --disable-pip-version-check -r bench/peers/socketapi/requirements.txt
  PY=$ROOT/target/py/bin/python
fi

# --- servers ------------------------------------------------------------------------------------
PORT=9300
AUTH_SECRET=bench-secret-not-for-production
SRV_PID=""
stop_server() {
  if [ -n "$SRV_PID" ]; then
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  SRV_PID=""
}
trap stop_server EXIT

# start_server NAME KIND(pubsub|echo): sets SRV_PID and URL.
start_server() {
  local name=$1 kind=$2
  PORT=$((PORT + 1))
  local log=$OUT/server-$name.log
  case "$name" in
    switchboard)
      if [ "$kind" = echo ]; then "$B/examples/echo" --bind "127.0.0.1:$PORT" >"$log" 2>&1 &
      else "$B/examples/socketapi_docs" --bind "127.0.0.1:$PORT" >"$log" 2>&1 &
      fi
      SRV_PID=$!; URL=ws://127.0.0.1:$PORT/ ;;
    switchboard-history)
      # The same server with history on its `chat` channel (1000 publications, 300 s).
      "$B/examples/socketapi_docs" --bind "127.0.0.1:$PORT" --chat-history 1000 >"$log" 2>&1 &
      SRV_PID=$!; URL=ws://127.0.0.1:$PORT/ ;;
    switchboard-deflate)
      # The same server accepting permessage-deflate offers, without context takeover.
      "$B/examples/socketapi_docs" --bind "127.0.0.1:$PORT" --compression on >"$log" 2>&1 &
      SRV_PID=$!; URL=ws://127.0.0.1:$PORT/ ;;
    switchboard-auth)
      # The same server requiring HS256 tokens; the loadgen authenticates every connection with
      # `?token=` (a token per user, expiring in an hour: an identity and a deadline each).
      "$B/examples/socketapi_docs" --bind "127.0.0.1:$PORT" --hmac-secret "$AUTH_SECRET" >"$log" 2>&1 &
      SRV_PID=$!; URL=ws://127.0.0.1:$PORT/ ;;
    switchboard-base)
      # An older build, for before/after comparisons (BASELINE_DIR: its socketapi_docs and echo).
      if [ "$kind" = echo ]; then "${BASELINE_DIR:?set BASELINE_DIR}/echo" --bind "127.0.0.1:$PORT" >"$log" 2>&1 &
      else "${BASELINE_DIR:?set BASELINE_DIR}/socketapi_docs" --bind "127.0.0.1:$PORT" >"$log" 2>&1 &
      fi
      SRV_PID=$!; URL=ws://127.0.0.1:$PORT/ ;;
    raw)
      "$B/raw_broadcast" --bind "127.0.0.1:$PORT" >"$log" 2>&1 &
      SRV_PID=$!; URL=ws://127.0.0.1:$PORT/; [ "$kind" = echo ] && URL=${URL}echo ;;
    uws)
      node bench/peers/uws/server.js "$PORT" >"$log" 2>&1 &
      SRV_PID=$!; URL=ws://127.0.0.1:$PORT/; [ "$kind" = echo ] && URL=${URL}echo ;;
    uws-deflate)
      # uWS.js with its shared compressor: a publication compressed once for all subscribers.
      UWS_COMPRESSION=shared node bench/peers/uws/server.js "$PORT" >"$log" 2>&1 &
      SRV_PID=$!; URL=ws://127.0.0.1:$PORT/ ;;
    socketapi)
      (cd bench/peers/socketapi && exec "$PY" -m uvicorn app:app --host 127.0.0.1 --port "$PORT" --log-level warning \
        --ws-max-size 2097152 --backlog 4096) >"$log" 2>&1 &
      SRV_PID=$!; URL=ws://127.0.0.1:$PORT/ ;;
  esac
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then sleep 0.2; return 0; fi
    sleep 0.05
  done
  echo "server $name did not start:" >&2; cat "$log" >&2; return 1
}

# measure NAME KIND LOADGEN-ARGS...: fresh server, one loadgen run, result appended.
measure() {
  local name=$1 kind=$2; shift 2
  start_server "$name" "$kind"
  echo "## $name: $*" >&2
  local line auth=()
  [ "$name" = switchboard-auth ] && auth=(--token-secret "$AUTH_SECRET")
  if line=$(timeout 300 "$B/switchboard-bench" "$@" "${auth[@]}" --url "$URL" --server "$name" --server-pid "$SRV_PID" \
      --tag "$SESSION" 2> >(grep -v '^\[connect\] [0-9]* / [0-9]* subscribed, ' >&2)); then
    echo "$line" >>"$RESULTS"
    echo "$line" | cut -c1-400 >&2
  else
    echo "   (loadgen failed or timed out: $name $*)" >&2
  fi
  stop_server
}

# each CONFIG... : every server (SocketAPI once), RUNS rounds, interleaved.
servers_for() { # KIND
  local s
  for s in $SERVERS; do
    [ "$1" = echo ] && [ "$s" = socketapi ] && continue   # SocketAPI has no plain echo endpoint
    echo "$s"
  done
}
each() {
  local kind=$1; shift
  local run s
  for run in $(seq "$RUNS"); do
    for s in $(servers_for "$kind"); do
      [ "$s" = socketapi ] && [ "$run" -gt 1 ] && continue
      measure "$s" "$kind" "$@"
    done
  done
}

# --- scenarios ----------------------------------------------------------------------------------
fanout() {
  local subs sizes msgs
  if [ $QUICK = 1 ]; then subs="1000"; sizes="64"; else subs="1000 10000 $MAX_CONNS"; sizes="64 1024"; fi
  for n in $subs; do
    for size in $sizes; do
      # ~2M deliveries per run (fewer at the 20 s publishing cap for slow servers)
      msgs=$((2000000 / n)); [ $QUICK = 1 ] && msgs=500
      each pubsub fanout --subs "$n" --size "$size" --messages "$msgs" --publish-secs 20 --max-secs 240
    done
  done
  latency
}
latency() {
  # Latency at equal load: a fixed 200k deliveries/s (below every server's capacity but SocketAPI's,
  # which is left out here), 64 B, 5 s.
  local saved=$SERVERS
  SERVERS=${SERVERS/socketapi/}
  if [ $QUICK = 1 ]; then
    each pubsub fanout --subs 1000 --size 64 --rate 200 --messages 400 --max-secs 120
  else
    each pubsub fanout --subs 1000 --size 64 --rate 200 --messages 1000 --max-secs 120
    each pubsub fanout --subs 10000 --size 64 --rate 20 --messages 100 --max-secs 120
  fi
  SERVERS=$saved
}
channels() {
  local n=10000 msgs=50000
  [ $QUICK = 1 ] && n=1000 && msgs=5000
  each pubsub channels --channels "$n" --size 64 --messages "$msgs" --publish-secs 20 --max-secs 240
}
idle() {
  local n=$MAX_CONNS
  [ $QUICK = 1 ] && n=2000
  each pubsub idle --conns "$n" --settle-secs 3 --max-secs 240
}
echo_() {
  local secs=10
  [ $QUICK = 1 ] && secs=3
  each echo echo --conns 100 --size 20 --secs "$secs"
  each echo echo --conns 500 --size 16384 --secs "$secs"
}

compare() {
  local n=$MAX_CONNS
  [ $QUICK = 1 ] && n=2000
  [ "${COMPARE_IDLE:-1}" = 1 ] || n=0
  each pubsub fanout --subs 1000 --size 64 --messages "${COMPARE_MESSAGES:-2000}" --publish-secs 20 --max-secs 240
  [ "$n" -gt 0 ] && each pubsub idle --conns "$n" --settle-secs 3 --max-secs 240
  return 0
}

deflate_() {
  local n=${DEFLATE_IDLE:-10000} msgs=${DEFLATE_MESSAGES:-2000}
  [ $QUICK = 1 ] && n=1000 && msgs=300
  each pubsub fanout --subs 1000 --size 1024 --payload json --deflate --messages "$msgs" --publish-secs 20 --max-secs 240
  # The same with subscribers that count compressed publications without inflating them: on two
  # shared cores, inflating 1000 copies of each publication in the loadgen bounds the rate above.
  each pubsub fanout --subs 1000 --size 1024 --payload json --deflate --no-inflate --messages "$msgs" --publish-secs 20 --max-secs 240
  [ "$n" -gt 0 ] && each pubsub idle --conns "$n" --deflate --settle-secs 3 --max-secs 240
  return 0
}

case "$SCENARIO" in
  deflate) deflate_ ;;
  compare) compare ;;
  fanout) fanout ;;
  latency) latency ;;
  channels) channels ;;
  idle) idle ;;
  echo) echo_ ;;
  all) fanout; idle; echo_; channels ;;
esac

# --- table --------------------------------------------------------------------------------------
python3 "$ROOT/scripts/plot.py" --table --session "$SESSION" "$RESULTS"
