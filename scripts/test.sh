#!/usr/bin/env bash
# Runs the test suite. The emulator tests start their own Firestore emulator
# on a free loopback port and stop it at the end.
#   scripts/test.sh              everything
#   scripts/test.sh tests/unit   the pure unit tests only (no emulator)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh requirements-dev.txt
exec "$PY" -m pytest "$@"
