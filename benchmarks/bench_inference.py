"""Inference: an exported MutualNet sub-network vs torchvision's dense model with the same channels.

The sub-network of a slimmable MobileNet v2 at width ``w`` is exported (plain layers, BatchNorm folded) and
timed against ``torchvision.models.mobilenet_v2(width_mult=w)`` — the same channels and MACs — as it ships
(BN unfolded) and with its BN folded too, for a like-for-like view. Goal: exported / torchvision <= 1.0x.

    python benchmarks/bench_inference.py [--width 0.75] [--resolution 224] [--batch 1] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from _common import device_sync, header, ratio_text, rounds

import mutualnet as mn
from mutualnet.deploy import export_subnet, fold_batchnorm
from mutualnet.profiling import count_macs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--width", type=float, default=0.75)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    w, r = args.width, args.resolution
    model = mn.create_model("mobilenet_v2", width_range=(0.35, 1.0)).eval()
    ours, check = export_subnet(model, w, r, fold_bn=True, allow_uncalibrated=True)  # untrained: timing only
    ours = ours.to(dev).eval()
    tv = torchvision.models.mobilenet_v2(width_mult=w).eval()
    x = torch.randn(args.batch, 3, r, r, device=dev)
    tv_folded = torchvision.models.mobilenet_v2(width_mult=w).eval()
    fold_batchnorm(tv_folded, torch.randn(1, 3, r, r))
    tv, tv_folded = tv.to(dev), tv_folded.to(dev)
    macs = (count_macs(ours, x[:1]), count_macs(tv, x[:1]))

    def run(net):
        def f():
            with torch.inference_mode():
                net(x)
        return f

    header(f"inference, mobilenet_v2 width {w} at {r}px, batch {args.batch}", dev)
    t = rounds({"ours": run(ours), "tv": run(tv), "tv_folded": run(tv_folded)}, warmup=5, repeats=args.repeats,
               sync=device_sync(dev))
    print(f"MACs ours / torchvision          : {macs[0] / 1e6:.1f}M / {macs[1] / 1e6:.1f}M; "
          f"BN folded in ours: {check['folded']}")
    print(f"exported sub-network (BN folded) : {t['ours'].spread()}")
    print(f"torchvision mobilenet_v2(w)      : {t['tv'].spread()}")
    print(f"torchvision, BN folded too       : {t['tv_folded'].spread()}")
    print(f"ratio ours / torchvision         : {ratio_text(t['ours'], t['tv'])}   (goal <= 1.0x)")
    print(f"ratio ours / torchvision folded  : {ratio_text(t['ours'], t['tv_folded'])}")

if __name__ == "__main__":
    main()
