"""Training step: our 4-sub-network step on one slimmable model vs the same 4 sub-networks as dense models.

Both sides run the identical plan (widths, resolutions, losses, one backward per sub-network); the dense
side uses plain ``nn.Conv2d``/``nn.BatchNorm2d`` models materialised at each width. The ratio is the
weight-sharing overhead (goal <= 1.03x).

    python benchmarks/bench_train_step.py [--model mobilenet_v2_cifar] [--batch 64] [--device cpu]
        [--amp none|bf16] [--channels-last]
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F
from _common import device_sync, header, interleaved

import mutualnet as mn
from mutualnet.train.step import SubNet, distill_loss, resize, train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="mobilenet_v2_cifar")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    dev = torch.device(args.device)
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

    def slim() -> None:
        model.zero_grad(set_to_none=True)
        train_step(model, x, y, plan, autocast=autocast)

    def dense_step() -> None:
        teacher = None
        for net, sub in zip(dense, plan):
            net.zero_grad(set_to_none=True)
            with autocast:
                logits = net(resize(x, sub.resolution))
            loss = F.cross_entropy(logits.float(), y) if teacher is None else distill_loss(logits, teacher)
            loss.backward()
            if teacher is None:
                teacher = logits.detach()

    header(f"training step, {args.model}, batch {args.batch}, amp {args.amp}, "
           f"channels_last {args.channels_last}", dev)
    t = interleaved({"slimmable": slim, "dense": dense_step}, repeats=args.repeats, sync=device_sync(dev))
    print(f"plan: {[(s.width, s.resolution) for s in plan]}")
    print(f"slimmable 4-sub-network step : {t['slimmable'] * 1e3:8.1f} ms  ({args.batch / t['slimmable']:.0f} img/s)")
    print(f"4 dense models, same plan    : {t['dense'] * 1e3:8.1f} ms  ({args.batch / t['dense']:.0f} img/s)")
    print(f"ratio slimmable / dense      : {t['slimmable'] / t['dense']:.3f}x   (goal <= 1.03x)")


if __name__ == "__main__":
    main()
