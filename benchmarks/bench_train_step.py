"""Training step: our 4-sub-network step on one slimmable model vs the same 4 sub-networks as dense models.

Both sides run the identical plan (widths, resolutions, losses, one backward per sub-network); the dense
side uses plain ``nn.Conv2d``/``nn.BatchNorm2d`` models materialised at each width. The slimmable side is
:func:`mutualnet.train.step.train_step` itself. Forward hooks on the models split every sub-network's time
into forward (the model's ``forward``) and backward (the loss, ``backward`` and the switch to the next
sub-network), so a narrow sub-network is compared with its dense twin. The two sides alternate round by
round; every ratio is taken per round and printed as median [min-max] over the rounds, wall and CPU time.
Goals: step <= 1.02x dense, a narrow sub-network's backward <= 1.03x its dense twin's.

    python benchmarks/bench_train_step.py [--model mobilenet_v2_cifar] [--batch 64] [--device cpu]
        [--amp none|bf16] [--channels-last] [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time

import torch
import torch.nn.functional as F
from _common import Timing, device_sync, header, ratio_text

import mutualnet as mn
from mutualnet.data import resize_batch
from mutualnet.train.step import SubNet, distill_loss, train_step


class Marks:
    """(wall, cpu) clock readings at the start and end of every model forward and of the whole step."""

    def __init__(self, sync) -> None:
        self.sync, self.points = sync, []

    def mark(self, *_) -> None:
        self.sync()
        self.points.append((time.perf_counter(), time.process_time()))

    def phases(self) -> list[tuple[float, float]]:
        """``[(wall, cpu)]`` of forward 1, backward 1, forward 2, ...: differences of successive marks."""
        p = self.points[1:]  # from the first forward's start
        return [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(p)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="mobilenet_v2_cifar")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = device_sync(dev)
    info = mn.model_info(args.model)
    model = mn.create_model(args.model).to(dev).train()
    lo, hi = model.width_range
    res = list(info.resolutions)
    plan = [SubNet(hi, res[0], "labels"), SubNet(lo, res[-1], "teacher"),
            SubNet(round(lo + 0.33 * (hi - lo), 3), res[1], "teacher"),
            SubNet(round(lo + 0.66 * (hi - lo), 3), res[2], "teacher")]
    dense = [mn.materialize(model, s.width).to(dev).train() for s in plan]
    model.set_width(hi)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    for d in dense:
        d.to(memory_format=fmt)
    x = torch.randn(args.batch, model.in_chans, res[0], res[0], device=dev).to(memory_format=fmt)
    y = torch.randint(0, model.num_classes, (args.batch,), device=dev)
    autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if args.amp == "bf16"
                else contextlib.nullcontext())
    current = [Marks(sync)]
    for net in [model, *dense]:
        net.register_forward_pre_hook(lambda *a: current[0].mark())
        net.register_forward_hook(lambda *a: current[0].mark())

    def slim() -> None:
        model.zero_grad(set_to_none=True)
        train_step(model, x, y, plan, autocast=autocast)

    def dense_step() -> None:
        teacher = None
        for net, sub in zip(dense, plan):
            net.zero_grad(set_to_none=True)
            with autocast:
                logits = net(resize_batch(x, sub.resolution))
            loss = F.cross_entropy(logits.float(), y) if teacher is None else distill_loss(logits, teacher)
            loss.backward()
            if teacher is None:
                teacher = logits.detach()

    steps = {"slimmable": slim, "dense": dense_step}
    for fn in steps.values():  # warm-up
        fn()
        fn()
    total = {k: Timing() for k in steps}
    phase = {k: [Timing() for _ in range(2 * len(plan))] for k in steps}  # fwd 1, bwd 1, fwd 2, ...
    for _ in range(args.repeats):
        for k, fn in steps.items():
            m = current[0] = Marks(sync)
            m.mark()
            fn()
            m.mark()
            total[k].wall.append(m.points[-1][0] - m.points[0][0])
            total[k].cpu.append(m.points[-1][1] - m.points[0][1])
            for t, (w, c) in zip(phase[k], m.phases(), strict=True):
                t.wall.append(w)
                t.cpu.append(c)

    header(f"training step, {args.model}, batch {args.batch}, amp {args.amp}, "
           f"channels_last {args.channels_last}", dev)
    print(f"plan: {[(s.width, s.resolution) for s in plan]}")
    s, d = total["slimmable"], total["dense"]
    print(f"slimmable 4-sub-network step : {s.spread()}  ({args.batch / s.median:.0f} img/s)")
    print(f"4 dense models, same plan    : {d.spread()}  ({args.batch / d.median:.0f} img/s)")
    for i, sub in enumerate(plan):
        for j, what in enumerate(("forward ", "backward")):
            a, b = phase["slimmable"][2 * i + j], phase["dense"][2 * i + j]
            print(f"  ({sub.width:g}, {sub.resolution}) {what} vs dense twin: {a.median * 1e3:8.2f} vs "
                  f"{b.median * 1e3:8.2f} ms, {ratio_text(a, b)}")
    print(f"ratio slimmable / dense      : {ratio_text(s, d)}   (goal <= 1.02x)")


if __name__ == "__main__":
    main()
