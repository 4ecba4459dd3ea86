#!/usr/bin/env bash
# The GPU benchmarks (about 15-25 minutes on one GPU). Usage: bash benchmarks/gpu.sh [MODEL] [BATCH]
# (defaults: mobilenet_v2 at 224 px, batch 128). Each step prints its side-by-side ratio:
#  1. training step fp32, then bf16 + channels_last: slimmable 4-sub-network step vs the same 4 dense models
#  2. the same step with weight slices through autograd's indexing, as the original code slices
#     (weight[:out, :in] in every forward): the reference our in-place slice gradient is compared with
#  3. the compiled step (torch.compile / inductor, run.compile) vs eager and vs dense, fp32 and bf16 + channels_last;
#     compilation time printed separately
#  4. peak memory of a MutualNet step vs one full-network step
#  5. a 200-iteration ImageNet-shaped run of `mutualnet train` (synthetic 224 px images, 1000 classes,
#     bf16 + channels_last), eager then compiled: images/s from its metrics
#  6. the distributed step on NCCL, 2 processes: our all-reduce after the last backward vs DDP with no_sync for
#     all but the last sub-network (bench_ddp.py; NCCL needs one GPU per process, so it is skipped, saying so,
#     on a machine with one GPU)
# Issue 19's comparison at a larger scale (MutualNet vs networks alone vs US-Net+/US-Net, 24 epochs x 3 seeds) is
# its own script, sized to one device call: bash benchmarks/gpu_compare.sh DATA_ROOT (see its header).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-../.venv/bin/python}"
MODEL="${1:-mobilenet_v2}"
BATCH="${2:-128}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" bench_train_step.py --device cuda --model "$MODEL" --batch "$BATCH" --repeats 20
"$PY" bench_train_step.py --device cuda --model "$MODEL" --batch "$BATCH" --repeats 20 --amp bf16 --channels-last
"$PY" bench_train_step.py --device cuda --model "$MODEL" --batch "$BATCH" --repeats 20 --amp bf16 --channels-last \
  --autograd-slicing
"$PY" bench_compile.py --device cuda --model "$MODEL" --batch "$BATCH" --repeats 20
"$PY" bench_compile.py --device cuda --model "$MODEL" --batch "$BATCH" --repeats 20 --amp bf16 --channels-last
"$PY" bench_memory.py --device cuda --model "$MODEL" --batch "$BATCH"
OUT="$(mktemp -d)"
for COMPILE in false true; do
  "$PY" -m mutualnet train --config ../configs/mobilenet_v2_imagenet.yaml --set model.name="$MODEL" \
    --set data.name=synthetic --set data.input_size=224 --set data.synthetic_length=$((BATCH * 200)) \
    --set data.batch_size="$BATCH" \
    --set data.workers=8 --set train.epochs=1 --set run.max_steps=200 --set run.device=cuda --set run.amp=bf16 \
    --set run.channels_last=true --set run.compile="$COMPILE" --set run.val_every=0 --set run.progress=false \
    --set run.out="$OUT/compile_$COMPILE" > /dev/null
  "$PY" - "$OUT/compile_$COMPILE/metrics.jsonl" "$COMPILE" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if '"train"' in line]
steady = [r["img_s"] for r in rows[20:] if r.get("img_s")]  # after warm-up (and compilation)
print(f"200-iteration ImageNet-shaped run, compile={sys.argv[2]}: median {statistics.median(steady):.0f} images/s "
      f"(min {min(steady):.0f}, max {max(steady):.0f}) over iterations 21-200")
PYEOF
done
rm -rf "$OUT"
NGPU="$(nvidia-smi -L 2>/dev/null | wc -l)"
if [ "$NGPU" -ge 2 ]; then
  "$PY" bench_ddp.py --backend nccl --device cuda --world 2 --model "$MODEL" --batch $((BATCH / 2)) --repeats 20
else
  echo "distributed step on NCCL: skipped ($NGPU GPU(s); 2 processes need 2 GPUs)"
fi
