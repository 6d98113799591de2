#!/usr/bin/env bash
# Create (or reuse) a Python venv with pinned requirements; reinstalls only when the requirements
# file changed. Default: the project's venv at .venv with scripts/requirements.txt; or
# `setup-venv.sh VENV_DIR REQUIREMENTS` (bench/setup-venv.sh does that).
# Prints the venv's python path on the last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${1:-$root/.venv}"
req="${2:-$root/scripts/requirements.txt}"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$venv/bin/python"
