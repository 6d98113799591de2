#!/usr/bin/env bash
# The whole test suite: prepares test data (Python venv, ONNX node tests, real models with ONNX
# Runtime reference outputs) and runs every Rust test in release mode.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=$(scripts/setup-venv.sh | tail -n 1)
export ODC_NODE_TESTS=$(scripts/prepare-node-tests.sh | tail -n 1)
export ODC_REAL_MODELS="$root/build/real-models"
if [ ! -f "$ODC_REAL_MODELS/.complete" ]; then
  "$py" scripts/real_models.py "$ODC_REAL_MODELS" --models resnet50,squeezenet,shufflenet,inception_v1,densenet121
  touch "$ODC_REAL_MODELS/.complete"
fi
cargo test --release --workspace "$@"
