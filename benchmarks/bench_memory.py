"""Memory: peak memory of a MutualNet training step (4 sub-networks) vs one full-network step, same batch.

Each sub-network is backpropagated right after its forward, so only one graph is alive at a time; the
goal is <= 1.15x. The peak is the allocator's: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the
running sum of every allocation and free torch's CPU allocator makes during the step, recorded by
``torch.profiler`` (``profile_memory=True``). Resident-set growth is not used: it counts the C allocator's
slack and varies from run to run. Gradients exist in both variants (allocated up front), so the peak is
activations, saved tensors and workspaces. Both variants alternate in one process, ``--repeats`` times.

    python benchmarks/bench_memory.py [--model mobilenet_v2_cifar] [--batch 128] [--device cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import header
from torch.profiler import ProfilerActivity, profile

import mutualnet as mn
from mutualnet.train.step import SubNet, train_step


def peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Highest number of bytes allocated during ``fn()`` above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    now = top = 0
    for e in events:
        now += e.nbytes()  # > 0 allocation, < 0 free
        top = max(top, now)
    return top


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="mobilenet_v2_cifar")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    info = mn.model_info(args.model)
    model = mn.create_model(args.model).to(dev).train()
    lo, hi = model.width_range
    res = list(info.resolutions)
    x = torch.randn(args.batch, model.in_chans, res[0], res[0], device=dev)
    y = torch.randint(0, model.num_classes, (args.batch,), device=dev)
    plan = [SubNet(hi, res[0], "labels"), SubNet(lo, res[-1], "teacher"),
            SubNet(round((lo + hi) / 2, 3), res[1], "teacher"),
            SubNet(round(lo + 0.9 * (hi - lo), 3), res[0], "teacher")]
    for q in model.parameters():
        q.grad = torch.zeros_like(q)
    variants = {"full": lambda: F.cross_entropy(model(x), y).backward(),  # the plain step, written out
                "mutual": lambda: train_step(model, x, y, plan)}
    header(f"peak memory of a training step, {args.model}, batch {args.batch}", dev)
    for fn in variants.values():  # warm-up: first-call workspaces and caches
        fn()
    peaks: dict[str, list[int]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for k, fn in variants.items():
            peaks[k].append(peak_bytes(fn, dev))
    ratios = [m / f for m, f in zip(peaks["mutual"], peaks["full"])]
    kind = "allocator peak" + (" (torch.profiler)" if dev.type == "cpu" else " (max_memory_allocated)")

    def mib(v: list[int]) -> str:
        return f"{statistics.median(v) / 2**20:8.1f} MiB [{min(v) / 2**20:.1f}-{max(v) / 2**20:.1f}]"

    print(f"plan: {[(s.width, s.resolution) for s in plan]}; {kind}")
    print(f"one full-network step     : {mib(peaks['full'])}")
    print(f"MutualNet 4-sub-net step  : {mib(peaks['mutual'])}")
    print(f"ratio mutual / full       : {statistics.median(ratios):.3f}x [{min(ratios):.3f}-{max(ratios):.3f}], "
          f"n={len(ratios)}   (goal <= 1.15x)")


if __name__ == "__main__":
    main()
