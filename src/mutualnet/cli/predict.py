"""``mutualnet predict``: classify images at the best configuration for a budget.

Builds the runtime-adaptive model (shared weights + calibrated statistics + query table) from a
checkpoint, switches to the most accurate configuration within ``--budget-mflops`` (or
``--budget-latency-ms``), reads each image with the evaluation transform and prints its class and
confidence. With ``--cascade cascade.json`` (from ``mutualnet cascade``) each image instead runs the cascade's
configurations cheapest first until one is sure of it, and the line says which configuration that was.
"""

from __future__ import annotations

import argparse
import json

from ..deploy.adaptive import AdaptiveNet
from ..profiling import resolve_device
from ..search.table import config_text
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images at the best configuration for a budget", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="calibrated.pt from `mutualnet search` (or any checkpoint "
                   "with --table)")
    p.add_argument("--table", help="query table JSON (default: the checkpoint's embedded table)")
    p.add_argument("--budget-mflops", type=A.positive_float, help="compute budget in MFLOPs")
    p.add_argument("--budget-latency-ms", type=A.positive_float, help="latency budget (needs a table with latency)")
    p.add_argument("--topk", type=A.positive_int, default=1, help="classes to print per image")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runtime", default="eager", choices=["eager", "torchscript", "onnxruntime"],
                   help="run the slimmable model (eager) or the configuration's exported sub-network on TorchScript "
                        "or ONNX Runtime (CPU); a latency budget uses that runtime's column of the table")
    p.add_argument("--cascade", help="run this cascade (from `mutualnet cascade`) instead of one configuration")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("images", nargs="+", help="image files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    resolve_device(args.device)
    net = AdaptiveNet.from_checkpoint(args.checkpoint, args.table, device=args.device, runtime=args.runtime)
    if args.cascade is not None:
        return _predict_cascade(args, net)
    budget = args.budget_mflops is not None or args.budget_latency_ms is not None
    row = net.set_budget(mflops=args.budget_mflops, latency_ms=args.budget_latency_ms) if budget else net.config
    preds = net.predict(args.images, topk=max(1, args.topk))
    if args.json:
        keys = ("width", "resolution", "depth", "mflops", "top1", "latency_ms")  # depth None: full depth
        print(json.dumps({"config": {k: row.get(k) for k in keys},
                          "predictions": [{"image": str(img), "top": [p.__dict__ for p in ps]}
                                          for img, ps in zip(args.images, preds)]}, indent=1))
        return 0
    print(f"configuration: {config_text(row)} ({row['mflops']:.2f} MFLOPs, "
          f"table top-1 {row['top1']:.2f}%)")
    for img, ps in zip(args.images, preds):
        print(f"{img}\t" + "\t".join(f"{p.label} ({p.confidence:.3f})" for p in ps))
    return 0


def _predict_cascade(args: argparse.Namespace, net: AdaptiveNet) -> int:
    from ..deploy.cascade import Cascade
    from ..errors import MutualNetError

    if args.budget_mflops is not None or args.budget_latency_ms is not None:
        raise MutualNetError("give either a budget or --cascade, not both")
    net.set_cascade(Cascade.load(args.cascade))
    preds = net.predict(args.images, topk=max(1, args.topk))
    if args.json:
        print(json.dumps({"cascade": net.cascade.to_dict(),
                          "predictions": [{"image": str(img), "width": ps[0].width, "resolution": ps[0].resolution,
                                           "top": [{k: getattr(p, k) for k in ("index", "label", "confidence")}
                                                   for p in ps]} for img, ps in zip(args.images, preds)]}, indent=1))
        return 0
    print(f"cascade of {len(net.cascade.steps)} steps: " + ", ".join(
        f"width {s.width:g} at {s.resolution} px ({s.mflops:.2f} MFLOPs)" for s in net.cascade.steps))
    for img, ps in zip(args.images, preds):
        print(f"{img}\t" + "\t".join(f"{p.label} ({p.confidence:.3f})" for p in ps)
              + f"\twidth {ps[0].width:g} at {ps[0].resolution} px")
    return 0
