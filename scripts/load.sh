#!/usr/bin/env bash
# The load run over HTTP; exits 1 if any reply or stored state is wrong.
# Extra arguments go to `python -m bench.load`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh requirements-dev.txt
exec "$PY" -m bench.load "$@"
