#!/usr/bin/env bash
# Make the ONNX backend node-test suite available to the conformance runner and prints its path.
# Uses ../shared/onnx-node-tests when present; otherwise generates it from onnx==1.23.2 into
# build/onnx-node-tests (once).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared="$root/../shared/onnx-node-tests"
if [ -d "$shared" ]; then
  (cd "$shared" && pwd)
  exit 0
fi
out="$root/build/onnx-node-tests"
if [ ! -f "$out/.complete" ]; then
  py=$("$root/scripts/setup-venv.sh" | tail -n 1)
  rm -rf "$out"
  mkdir -p "$out"
  "$py" "$root/scripts/gen_onnx_node_tests.py" "$out" >&2
  touch "$out/.complete"
fi
echo "$out"
