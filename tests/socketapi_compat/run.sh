#!/usr/bin/env bash
# Compares Switchboard's socketapi_docs example with the real SocketAPI (app.py under uvicorn):
# the same scripted exchanges against both, replies asserted equal up to the documented extensions.
# Needs target/py (scripts/test.sh installs tests/peers/requirements.txt, which includes
# requirements.txt here) and the example built in release (or SWITCHBOARD_EXAMPLES_DIR).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
PYTHON=${PYTHON:-$ROOT/target/py/bin/python}
export SWITCHBOARD_EXAMPLES_DIR=${SWITCHBOARD_EXAMPLES_DIR:-$ROOT/target/release/examples}
exec "$PYTHON" compare.py "$@"
