"""Memory: peak memory of a MutualNet training step (4 sub-networks) vs one full-network step, same batch.

Each sub-network is backpropagated right after its forward, so only one graph is alive at a time;
the goal is <= 1.15x. On CUDA the peak is ``torch.cuda.max_memory_allocated``; on CPU each variant runs
in a fresh subprocess and the peak resident-set growth during the step is measured (ru_maxrss).

    python benchmarks/bench_memory.py [--model mobilenet_v2_cifar] [--batch 128] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
import torch.nn.functional as F
from _common import header

import mutualnet as mn
from mutualnet.train.step import SubNet, train_step


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_variant(model_name: str, batch: int, variant: str, device: str) -> int:
    dev = torch.device(device)
    torch.manual_seed(0)
    info = mn.model_info(model_name)
    model = mn.create_model(model_name).to(dev).train()
    lo, hi = model.width_range
    res = list(info.resolutions)
    x = torch.randn(batch, model.in_chans, res[0], res[0], device=dev)
    y = torch.randint(0, model.num_classes, (batch,), device=dev)
    plan = [SubNet(hi, res[0], "labels")]
    if variant == "mutual":
        plan += [SubNet(lo, res[-1], "teacher"), SubNet(round((lo + hi) / 2, 3), res[1], "teacher"),
                 SubNet(round(lo + 0.9 * (hi - lo), 3), res[0], "teacher")]
    # grads exist in both variants: allocate them up front so only activations differ
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    if dev.type == "cuda":
        train_step(model, x, y, plan)  # warm-up (cuDNN workspaces)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step(model, x, y, plan)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = _rss_bytes()
    if variant == "full":  # the plain step, written out
        F.cross_entropy(model(x), y).backward()
    else:
        train_step(model, x, y, plan)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="mobilenet_v2_cifar")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.model, args.batch, args.variant, args.device)))
        return
    header(f"peak memory of a training step, {args.model}, batch {args.batch}", torch.device(args.device))
    peaks = {}
    for variant in ("full", "mutual"):
        if args.device.startswith("cuda"):
            peaks[variant] = run_variant(args.model, args.batch, variant, args.device)
        else:
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--batch", str(args.batch),
                                  "--device", args.device, "--variant", variant],
                                 check=True, capture_output=True, text=True).stdout
            peaks[variant] = int(out.strip().splitlines()[-1])
    print(f"one full-network step     : {peaks['full'] / 2**20:8.1f} MiB")
    print(f"MutualNet 4-sub-net step  : {peaks['mutual'] / 2**20:8.1f} MiB")
    print(f"ratio mutual / full       : {peaks['mutual'] / peaks['full']:.3f}x   (goal <= 1.15x)")


if __name__ == "__main__":
    main()
