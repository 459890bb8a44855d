#!/usr/bin/env bash
# The whole test suite: Rust unit/integration/doc tests, the Autobahn conformance cases, tests with
# real peers (Python websockets, Node ws, SocketAPI itself), the browser client's tests and the
# end-to-end tests in headless Chromium. Installs what it needs: system packages through
# scripts/setup.sh (redis-server, chromium), Python packages into target/py, npm packages into
# node_modules.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TERM_COLOR=never

passed=0; failed=0; failures=()
stage() { # stage NAME COMMAND...
  local name=$1; shift
  echo; echo "=================== $name"
  local start=$SECONDS
  if "$@"; then passed=$((passed+1)); echo "--- $name: ok ($((SECONDS-start)) s)"
  else failed=$((failed+1)); failures+=("$name"); echo "--- $name: FAILED ($((SECONDS-start)) s)"; fi
}

setup_python() {
  if [ ! -x target/py/bin/python ]; then python3 -m venv target/py || return 1; fi
  target/py/bin/pip install --quiet --disable-pip-version-check -r tests/peers/requirements.txt
}

stage "system packages" bash scripts/setup.sh
stage "python packages" setup_python
export PATH="$ROOT/target/py/bin:$PATH"
stage "build (release)" cargo build --release --bins --examples
# Where cargo puts the binaries (CARGO_TARGET_DIR lets a clean clone reuse an existing build).
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
export SWITCHBOARD_BIN="$RELEASE/switchboard"
export SWITCHBOARD_EXAMPLES_DIR="$RELEASE/examples"
stage "cargo test" cargo test --release --all-targets
stage "doc tests" cargo test --release --doc
stage "autobahn" bash scripts/autobahn.sh
[ -f tests/peers/run.sh ] && stage "real peers (python websockets, node ws)" bash tests/peers/run.sh
[ -f tests/socketapi_compat/run.sh ] && stage "SocketAPI comparison" bash tests/socketapi_compat/run.sh
[ -f clients/js/test.sh ] && stage "browser client" bash clients/js/test.sh

echo
echo "=================== summary"
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
