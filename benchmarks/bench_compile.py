"""Compiled training step: the 4-sub-network step of a ``torch.compile``'d slimmable model (``run.compile``)
vs the same step in eager mode and vs the same 4 sub-networks as dense eager models.

Compilation (one graph per distinct sub-network, see :mod:`mutualnet.train.compiled`) is timed separately:
the first compiled step minus a steady one, and the number of steps after which it is paid back. Then the
three variants run in alternated rounds; each prints its median, min-max over rounds, and its ratio to the
dense eager step (goal: compiled <= 0.8x for resnet20_cifar batch 128 and mobilenet_v2_cifar batch 64).

    python benchmarks/bench_compile.py [--model resnet20_cifar] [--batch 128] [--repeats 10] [--threads 2]
        [--device cuda] [--amp bf16] [--channels-last]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from _common import device_sync, header

import mutualnet as mn
from mutualnet.data import resize_batch
from mutualnet.train.compiled import CompiledModel
from mutualnet.train.step import SubNet, distill_loss, train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    dev = torch.device(args.device)
    sync = device_sync(dev)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = mn.model_info(args.model)
    model = mn.create_model(args.model).to(dev, memory_format=fmt).train()
    lo, hi = model.width_range
    res = list(info.resolutions)
    plan = [SubNet(hi, res[0], "labels"), SubNet(lo, res[-1], "teacher"),
            SubNet(round(lo + 0.33 * (hi - lo), 3), res[1], "teacher"),
            SubNet(round(lo + 0.66 * (hi - lo), 3), res[2], "teacher")]
    dense = [mn.materialize(model, s.width).to(dev, memory_format=fmt).train() for s in plan]
    model.set_width(hi)
    compiled = CompiledModel(model)
    cplan = compiled.snap_subnets(plan)
    x = torch.randn(args.batch, model.in_chans, res[0], res[0], device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, model.num_classes, (args.batch,), device=dev)

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16) if args.amp == "bf16" else contextlib.nullcontext()

    def eager() -> None:
        model.zero_grad(set_to_none=True)
        train_step(model, x, y, plan, autocast=autocast())

    def comp() -> None:
        model.zero_grad(set_to_none=True)
        train_step(compiled, x, y, cplan, autocast=autocast())

    def dense_step() -> None:
        teacher = None
        for net, sub in zip(dense, plan):
            net.zero_grad(set_to_none=True)
            with autocast():
                logits = net(resize_batch(x, sub.resolution))
            loss = F.cross_entropy(logits.float(), y) if teacher is None else distill_loss(logits, teacher)
            loss.backward()
            if teacher is None:
                teacher = logits.detach()

    header(f"compiled training step, {args.model}, batch {args.batch}, amp {args.amp}, "
           f"channels_last {args.channels_last}", dev)
    t0 = time.perf_counter()
    comp()
    sync()
    first = time.perf_counter() - t0
    fns = {"dense eager": dense_step, "slimmable eager": eager, "slimmable compiled": comp}
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    compile_s = first - med["slimmable compiled"]
    saved = med["slimmable eager"] - med["slimmable compiled"]
    print(f"plan: {[(s.width, s.resolution) for s in plan]}; graphs: {len(plan)} sub-networks")
    print(f"compilation: {compile_s:.1f} s (first compiled step {first:.1f} s); "
          + (f"paid back after {compile_s / saved:.0f} steps" if saved > 0 else "never paid back (no saving)"))
    for k, v in times.items():
        print(f"{k:20s}: {med[k] * 1e3:8.1f} ms  (min {min(v) * 1e3:.1f}, max {max(v) * 1e3:.1f}, n={len(v)})  "
              f"{med[k] / med['dense eager']:.3f}x dense eager; cpu {cmed[k] * 1e3:.1f} ms, "
              f"{cmed[k] / cmed['dense eager']:.3f}x")
    print(f"ratio compiled / dense eager: {med['slimmable compiled'] / med['dense eager']:.3f}x wall, "
          f"{cmed['slimmable compiled'] / cmed['dense eager']:.3f}x cpu   (goal <= 0.8x)")


if __name__ == "__main__":
    main()
