"""Depth as the third dimension: what it costs to switch a configuration, and what a 3-D training step costs.

1. Switch: ``mutualnet.set_config`` (the configuration's one writer: a check, then three writes on the state
   every layer shares) vs the former writer, which walked every module of the model and wrote each layer's
   state (re-implemented here as it was, for the side-by-side measurement). Microseconds per call, and
   ``AdaptiveNet.set_budget`` (selection + switch) on a table with a depth column.
2. Training step, 4 sub-networks per iteration: the 3-D sandwich (widths, resolutions and depths: the
   narrowest at the shallowest depth, the random ones at random depths) vs the 2-D one with the same widths and
   resolutions at full depth, on the same model; and the 2-D step on the elastic model vs the same weights with
   every stage a plain ``nn.Sequential`` (what the elastic stages cost at full depth). A new plan every round,
   alternated; ratios per round. Goal: the 3-D step within 5% of the 2-D one at the same number of
   sub-networks (<= 1.05x).

    python benchmarks/bench_depth.py [--model resnet20_cifar] [--batch 128] [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import torch
from _common import Timing, header, ratio_text
from torch import nn

import mutualnet as mn
from mutualnet.layers import ElasticSequential, check_resolution, is_slimmable, width_range_of
from mutualnet.train.step import sample_subnets, train_step


def former_set_config(model: nn.Module, width: float, resolution: int | None) -> None:
    """The writer before the configuration had one owner: checks, then every module's state, one by one."""
    resolution = check_resolution(model, resolution)
    width_range_of(model).check(width)
    for m in model.modules():
        if is_slimmable(m):
            m.slim_state.width = width
    model.slim_state.width = width
    for m in model.modules():
        if is_slimmable(m):
            m.slim_state.resolution = resolution
    model.slim_state.resolution = resolution


def switch_us(fn, configs: list[tuple], calls: int = 2000) -> list[float]:
    """CPU microseconds per call (this process's time: the machine's load does not count), one value per pass
    over ``calls`` calls cycling through ``configs``."""
    out = []
    for _ in range(5):
        t0 = time.process_time()
        for i in range(calls):
            fn(*configs[i % len(configs)])
        out.append((time.process_time() - t0) / calls * 1e6)
    return out


def bench_switch(names: list[str]) -> None:
    header("switching the configuration (CPU microseconds per call)", torch.device("cpu"))
    for name in names:
        model = mn.create_model(name)
        full = model.depth_range.hi
        elastic = mn.create_model(name, depth_range=(1, full))
        lo, hi = model.width_range
        res = mn.model_info(name).resolutions
        configs = [(lo, res[-1]), (hi, res[0]), ((lo + hi) / 2, res[1])]
        n = sum(1 for m in model.modules() if is_slimmable(m))
        new, old = [], []
        for _ in range(3):  # alternated
            new += switch_us(lambda w, r, m=model: mn.set_config(m, w, r), configs)
            old += switch_us(lambda w, r, m=model: former_set_config(m, w, r), configs)
        deep = switch_us(lambda w, r, m=elastic: mn.set_config(m, w, r, 1), configs)
        print(f"{name} ({n} slimmable layers): set_config {statistics.median(new):.2f} us "
              f"[{min(new):.2f}-{max(new):.2f}], with a depth {statistics.median(deep):.2f} us; the former writer "
              f"{statistics.median(old):.2f} us [{min(old):.2f}-{max(old):.2f}]: "
              f"{statistics.median(old) / statistics.median(new):.1f}x, n={len(new)} passes of 2000 calls")


def as_plain(model: nn.Module) -> nn.Module:
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, ElasticSequential):
            m.__class__ = nn.Sequential
    return plain


def bench_step(name: str, batch: int, repeats: int) -> None:
    info = mn.model_info(name)
    torch.manual_seed(0)
    model = mn.create_model(name, depth_range=(1, mn.create_model(name).depth_range.hi)).train()
    plain = as_plain(model)
    res = list(info.resolutions)
    x = torch.randn(batch, model.in_chans, res[0], res[0])
    y = torch.randint(0, model.num_classes, (batch,))
    g = torch.Generator().manual_seed(0)
    lo_hi = tuple(model.width_range)
    names = ("3-D", "2-D", "2-D plain stages")
    times = {k: Timing() for k in names}

    def step(net: nn.Module, plan: list) -> tuple[float, float]:
        net.zero_grad(set_to_none=True)
        t0, c0 = time.perf_counter(), time.process_time()
        train_step(net, x, y, plan)
        return time.perf_counter() - t0, time.process_time() - c0

    for i in range(repeats + 2):
        plan3 = sample_subnets("mutual", lo_hi, res, 4, g, depth_range=model.depth_range)
        plan2 = [dataclasses.replace(s, depth=None) for s in plan3]  # the same widths and resolutions
        for k, (net, plan) in zip(names, [(model, plan3), (model, plan2), (plain, plan2)]):
            wall, cpu = step(net, plan)
            if i >= 2:  # two warm-up rounds
                times[k].wall.append(wall)
                times[k].cpu.append(cpu)
    header(f"training step, {name}, batch {batch}, 4 sub-networks, a new plan each round", torch.device("cpu"))
    for k in names:
        print(f"{k:18s}: {times[k].spread()}")
    print(f"3-D / 2-D step (same widths and resolutions; depths drawn as the sampler draws them): "
          f"{ratio_text(times['3-D'], times['2-D'])}   (goal <= 1.05x)")
    print(f"2-D step, elastic stages / plain nn.Sequential stages (the mechanism at full depth): "
          f"{ratio_text(times['2-D'], times['2-D plain stages'])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bench_switch(["resnet20_cifar", "resnet50"])
    bench_step(args.model, args.batch, args.repeats)


if __name__ == "__main__":
    main()
