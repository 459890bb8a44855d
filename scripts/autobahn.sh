#!/usr/bin/env bash
# Runs the Autobahn conformance cases (kosoku) against the echo example (server side) and with the
# autobahn_client example (client side); fails if any case is not OK. INFORMATIONAL cases (7.1.6,
# 7.13.*) carry no verdict in Autobahn and are allowed. 12.* and 13.* are permessage-deflate: the
# echo example accepts offers by default, the client example makes one; UNIMPLEMENTED fails.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KOSOKU:=kosoku}"
BIN=${SWITCHBOARD_EXAMPLES_DIR:-target/release/examples}
OUT=target/autobahn
rm -rf "$OUT" && mkdir -p "$OUT"
CASES=(-i '1.*' -i '2.*' -i '3.*' -i '4.*' -i '5.*' -i '6.*' -i '7.*' -i '9.*' -i '10.*' -i '12.*' -i '13.*')
PORT_S=${AUTOBAHN_SERVER_PORT:-19001}
PORT_C=${AUTOBAHN_CLIENT_PORT:-19002}

"$BIN/echo" --bind 127.0.0.1:$PORT_S > "$OUT/echo.log" 2>&1 &
ECHO_PID=$!
trap 'kill $ECHO_PID 2>/dev/null || true; kill ${FUZZ_PID:-} 2>/dev/null || true' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PORT_S) 2>/dev/null && break; sleep 0.1; done

echo "== autobahn: server (echo example)"
"$KOSOKU" -m fuzzingclient 127.0.0.1:$PORT_S -o "$OUT/server" -p 2 "${CASES[@]}" > "$OUT/server.log" 2>&1 || true
tail -n 2 "$OUT/server.log"

echo "== autobahn: client (autobahn_client example)"
"$KOSOKU" -m fuzzingserver 127.0.0.1:$PORT_C -o "$OUT/client" "${CASES[@]}" > "$OUT/client.log" 2>&1 &
FUZZ_PID=$!
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PORT_C) 2>/dev/null && break; sleep 0.1; done
"$BIN/autobahn_client" --server ws://127.0.0.1:$PORT_C --agent switchboard > "$OUT/autobahn_client.log" 2>&1
# The fuzzing server writes its reports after the last connection; wait until it says so (the
# file appears before it is complete).
for _ in $(seq 300); do grep -q "wrote reports" "$OUT/client.log" 2>/dev/null && break; sleep 0.1; done
sleep 0.2
kill $FUZZ_PID 2>/dev/null || true

python3 - "$OUT/server/index.json" "$OUT/client/index.json" <<'PY'
import json, sys, collections
bad = 0
for path in sys.argv[1:]:
    report = json.load(open(path))
    for agent, cases in report.items():
        counts = collections.Counter(c["behavior"] for c in cases.values())
        print(f"{path}: {agent}: {len(cases)} cases {dict(counts)}")
        for case, c in sorted(cases.items()):
            ok = c["behavior"] in ("OK", "INFORMATIONAL") and c["behaviorClose"] in ("OK", "INFORMATIONAL")
            if not ok:
                bad += 1
                print(f"  FAILED {case}: {c['behavior']} / close {c['behaviorClose']}")
        if len(cases) < 500:
            bad += 1
            print(f"  only {len(cases)} cases ran")
print(f"autobahn: {'all cases OK' if bad == 0 else f'{bad} failing'}")
sys.exit(1 if bad else 0)
PY
