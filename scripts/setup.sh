#!/usr/bin/env bash
# Installs the system packages the test suite needs, if missing: redis-server (broker tests),
# chromium (browser end-to-end tests), python3-venv. Uses sudo when not root.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v node >/dev/null || need+=(nodejs npm)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing: ${need[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package may start a system redis on 6379; the tests start their own.
if command -v service >/dev/null; then $SUDO service redis-server stop >/dev/null 2>&1 || true; fi
