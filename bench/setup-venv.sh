#!/usr/bin/env bash
# Create (or reuse) the benchmark venv at bench/.venv with the pinned runtimes in
# bench/requirements.txt (onnx, numpy, onnxruntime, tract); reinstalls only when that file changed.
# Prints the venv's python path on the last line.
set -euo pipefail
bench=$(cd "$(dirname "$0")" && pwd)
exec "$bench/../scripts/setup-venv.sh" "$bench/.venv" "$bench/requirements.txt"
