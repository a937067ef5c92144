# shellcheck shell=bash
# Sourced by the other scripts: makes .venv from a requirements file if it
# is missing or the file changed since it was last installed.
# Usage: . scripts/venv.sh requirements-dev.txt
_dm_req="$1"
_dm_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_dm_venv="$_dm_root/.venv"
_dm_stamp="$_dm_venv/.installed-$(basename "$_dm_req")"
if [ ! -x "$_dm_venv/bin/python" ]; then
  python3 -m venv "$_dm_venv"
fi
if [ ! -f "$_dm_stamp" ] || [ "$_dm_root/$_dm_req" -nt "$_dm_stamp" ] \
   || [ "$_dm_root/requirements.txt" -nt "$_dm_stamp" ]; then
  "$_dm_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$_dm_root/$_dm_req"
  touch "$_dm_stamp"
fi
# shellcheck disable=SC2034  # read by the scripts that source this one
PY="$_dm_venv/bin/python"
