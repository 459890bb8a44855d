#!/usr/bin/env bash
# Builds the echo servers + load client, runs Autobahn conformance (kosoku),
# echo throughput and idle-memory measurements, and prints a markdown table.
#
#   bench/ws-crates/run.sh [all|build|conformance|echo|mem|summary]
#
# Env knobs (defaults are what docs/decisions/0001-websocket-crate.md used):
#   RUNS=3 SMALL_MSGS=10000 LARGE_MSGS=5000 CONNS=100 MEM_CONNS=10000
#   AB_PARALLEL=1 CANDIDATES="tokio-websockets tungstenite fastwebsockets yawc"
#   CARGO_TARGET_DIR (default /work/target-wscmp)
# Everything binds to 127.0.0.1 only.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-wscmp}"
BIN="$CARGO_TARGET_DIR/release"
OUT="$HERE/reports"
RUNS="${RUNS:-3}"
CONNS="${CONNS:-100}"
SMALL_MSGS="${SMALL_MSGS:-10000}"
LARGE_MSGS="${LARGE_MSGS:-5000}"
MEM_CONNS="${MEM_CONNS:-10000}"
AB_PARALLEL="${AB_PARALLEL:-1}"
CANDIDATES="${CANDIDATES:-tokio-websockets tungstenite fastwebsockets yawc}"
mkdir -p "$OUT"

SRV_PID=""
cleanup() { if [ -n "$SRV_PID" ]; then kill "$SRV_PID" 2>/dev/null || true; wait "$SRV_PID" 2>/dev/null || true; fi; SRV_PID=""; }
trap cleanup EXIT

# start_server CANDIDATE PORT [extra args]: starts it and waits for "listening".
start_server() {
  local cand="$1" port="$2"; shift 2
  local log="$OUT/server-$cand-$port.log"
  "$BIN/server-$cand" --bind "127.0.0.1:$port" "$@" >"$log" 2>&1 &
  SRV_PID=$!
  for _ in $(seq 100); do grep -q listening "$log" && return 0; sleep 0.05; done
  echo "server $cand did not start" >&2; cat "$log" >&2; return 1
}

build() {
  echo "## build" >&2
  nice -n 10 cargo build --release --quiet
}

conformance() {
  echo "## conformance (kosoku fuzzingclient, -p $AB_PARALLEL)" >&2
  : >"$OUT/autobahn.jsonl"
  local port=9301
  # label|binary|server args|kosoku case selection
  local specs=()
  for c in $CANDIDATES; do specs+=("$c|$c||1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.* 10.*"); done
  case " $CANDIDATES " in *" yawc "*)
    specs+=("yawc+deflate|yawc|--deflate|1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.* 10.* 12.* 13.*");; esac
  for spec in "${specs[@]}"; do
    IFS='|' read -r label cand sargs cases <<<"$spec"
    port=$((port + 1))
    # shellcheck disable=SC2086
    start_server "$cand" "$port" $sargs
    local incl=() dir="$OUT/autobahn/$label"
    for k in $cases; do incl+=(-i "$k"); done
    rm -rf "$dir"
    local t0 t1
    t0=$(date +%s.%N)
    kosoku -m fuzzingclient "127.0.0.1:$port" -o "$dir" -p "$AB_PARALLEL" "${incl[@]}" >"$OUT/kosoku-$label.log" 2>&1 || true
    t1=$(date +%s.%N)
    cleanup
    [ -f "$dir/index.json" ] || { echo "kosoku wrote no index for $label, see $OUT/kosoku-$label.log" >&2; continue; }
    python3 - "$label" "$dir/index.json" "$t0" "$t1" "$cases" >>"$OUT/autobahn.jsonl" <<'PY'
import json, sys, collections
label, path, t0, t1, cases = sys.argv[1:]
idx = json.load(open(path))
(agent,) = idx.values()
c = collections.Counter(v["behavior"] for v in agent.values())
failed = sorted((k for k, v in agent.items() if v["behavior"] not in ("OK", "INFORMATIONAL")),
                key=lambda s: [int(x) for x in s.split(".")])
print(json.dumps({"candidate": label, "cases": len(agent), "selection": cases,
                  "counts": dict(c), "not_ok": failed, "secs": round(float(t1) - float(t0), 1)}))
PY
    tail -1 "$OUT/autobahn.jsonl" | cut -c1-300 >&2
  done
}

echo_bench() {
  echo "## echo throughput ($RUNS runs, $CONNS conns)" >&2
  : >"$OUT/echo.jsonl"
  for run in $(seq "$RUNS"); do
    local i=0
    for c in $CANDIDATES; do
      i=$((i + 1))
      start_server "$c" $((9400 + run * 10 + i))
      for sc in "small $SMALL_MSGS 20 --text" "large $LARGE_MSGS 16384"; do
        read -r name msgs size text <<<"$sc"
        line=$("$BIN/loadgen" echo --addr "127.0.0.1:$((9400 + run * 10 + i))" --conns "$CONNS" \
               --msgs "$msgs" --size "$size" --pid "$SRV_PID" $text)
        echo "{\"candidate\":\"$c\",\"run\":$run,\"scenario\":\"$name\",\"loadavg1\":$(cut -d' ' -f1 /proc/loadavg),\"result\":$line}" | tee -a "$OUT/echo.jsonl" >&2
      done
      cleanup
    done
  done
}

mem_bench() {
  echo "## idle memory ($RUNS runs, $MEM_CONNS conns, fresh server each)" >&2
  : >"$OUT/mem.jsonl"
  for run in $(seq "$RUNS"); do
    local i=0
    for c in $CANDIDATES; do
      i=$((i + 1))
      local port=$((9500 + run * 10 + i))
      start_server "$c" "$port"
      line=$("$BIN/loadgen" mem --addr "127.0.0.1:$port" --conns "$MEM_CONNS" --pid "$SRV_PID")
      echo "{\"candidate\":\"$c\",\"run\":$run,\"loadavg1\":$(cut -d' ' -f1 /proc/loadavg),\"result\":$line}" | tee -a "$OUT/mem.jsonl" >&2
      cleanup
      sleep 1
    done
  done
}

summary() {
  python3 "$HERE/summarize.py" "$OUT"
}

case "${1:-all}" in
  build) build ;;
  conformance) build; conformance ;;
  echo) build; echo_bench ;;
  mem) build; mem_bench ;;
  summary) summary ;;
  all) build; conformance; echo_bench; mem_bench; summary ;;
  *) echo "usage: $0 [all|build|conformance|echo|mem|summary]" >&2; exit 2 ;;
esac
