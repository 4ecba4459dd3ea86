#!/usr/bin/env bash
# The training-step benchmark on a CUDA device: fp32, then bf16 + channels_last (a few minutes on one GPU).
# Usage: bash benchmarks/gpu.sh [MODEL] [BATCH]      (defaults: mobilenet_v2 at 224 px, batch 128)
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-../.venv/bin/python}"
MODEL="${1:-mobilenet_v2}"
BATCH="${2:-128}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" bench_train_step.py --device cuda --model "$MODEL" --batch "$BATCH" --repeats 20
"$PY" bench_train_step.py --device cuda --model "$MODEL" --batch "$BATCH" --repeats 20 --amp bf16 --channels-last
"$PY" bench_memory.py --device cuda --model "$MODEL" --batch "$BATCH"
