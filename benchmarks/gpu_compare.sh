#!/usr/bin/env bash
# Issue 19's comparison at a larger scale on one GPU: MutualNet, the networks trained alone, US-Net+ and US-Net on
# the full Fashion-MNIST training set (5,000 held out, picks on them, test reported), more epochs and seeds than
# the CPU run of docs/results.md. Every seed x arm is its own process, all at once on the one GPU (a ResNet-20 at
# 28 px uses a sliver of it; 12 processes keep it busy), each stopped (SIGTERM: saved, resumable) when the time
# budget ends; a rerun resumes them all, and the closing report-only pass tabulates whatever has finished.
# Usage: bash benchmarks/gpu_compare.sh DATA_ROOT [OUT]
#   DATA_ROOT: a Fashion-MNIST folder (the device has no internet: copy /usr/share/datasets/fashion-mnist into
#   the work tree, e.g. data/fashion-mnist, and carry it). Environment: EPOCHS (24), SEEDS ("0 1 2"),
#   ARMS ("mutualnet independent usnet+ usnet"), BUDGET_S (seconds of training before the stop: 480),
#   EXTRA (more `mutualnet compare` flags, e.g. to shrink it), PYTHON.
# Not yet run on a GPU (none has been lent): the 480 s budget is an estimate, and a rerun continues the runs.
set -euo pipefail
DATA="${1:?usage: bash benchmarks/gpu_compare.sh DATA_ROOT [OUT]}"
OUT="${2:-runs/gpu_compare}"
PY="${PYTHON:-$(dirname "$0")/../.venv/bin/python}"
EPOCHS="${EPOCHS:-24}"
SEEDS="${SEEDS:-0 1 2}"
ARMS="${ARMS:-mutualnet independent usnet+ usnet}"
BUDGET_S="${BUDGET_S:-480}"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
mkdir -p "$OUT"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
pids=()  # stopped with SIGTERM: a script's background jobs ignore SIGINT, mutualnet saves on either
for seed in $SEEDS; do
  for arm in $ARMS; do
    OMP_NUM_THREADS=1 timeout --signal=TERM --kill-after=60 "$BUDGET_S" "$PY" -m mutualnet compare --out "$OUT" \
      --data-root "$DATA" --epochs "$EPOCHS" --seeds "$seed" --arms "$arm" --threads 1 --no-progress \
      "${EXTRA_ARGS[@]}" > "$OUT/seed${seed}_${arm}.log" 2>&1 &
    pids+=($!)
  done
done
unfinished=0
for pid in "${pids[@]}"; do wait "$pid" || unfinished=$((unfinished + 1)); done
echo "runs stopped by the budget or failed: $unfinished of ${#pids[@]} (rerun to resume; logs: $OUT/seed*_*.log)"
"$PY" -m mutualnet compare --out "$OUT" --data-root "$DATA" --epochs "$EPOCHS" --seeds "${SEEDS// /,}" \
  --arms "${ARMS// /,}" --report-only --no-progress "${EXTRA_ARGS[@]}"
