#!/usr/bin/env bash
# Create (or reuse) the benchmark venv at bench/.venv with the pinned runtimes in
# bench/requirements.txt (onnx, numpy, onnxruntime, tract); reinstalls only when that file changed.
# Prints the venv's python path on the last line.
set -euo pipefail
bench=$(cd "$(dirname "$0")" && pwd)
venv="$bench/.venv"
req="$bench/requirements.txt"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$venv/bin/python"
