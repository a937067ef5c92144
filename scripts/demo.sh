#!/usr/bin/env bash
# The main job: emulator + function + the four outcomes over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh requirements.txt
exec "$PY" -m tools.demo
