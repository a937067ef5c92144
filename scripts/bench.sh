#!/usr/bin/env bash
# The benchmark: private emulator and function, table on stdout, figures in
# bench-results.json. Extra arguments go to `python -m bench.benchmark`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh requirements-dev.txt
exec "$PY" -m bench.benchmark "$@"
