#!/usr/bin/env bash
# Create (or reuse) bench/.venv-llm with the text-generation peers (bench/requirements-llm.txt).
# llama-cpp-python builds llama.cpp from source: for a fixed x86_64 feature set (AVX2/FMA/F16C/AVX-512),
# not -march=native, so the venv runs on any of the project's hosts. Prints the venv's python.
set -euo pipefail
bench=$(cd "$(dirname "$0")" && pwd)
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
exec "$bench/../scripts/setup-venv.sh" "$bench/.venv-llm" "$bench/requirements-llm.txt"
