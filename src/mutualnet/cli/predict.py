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

from ..deploy.adaptive import describe_predictions, predict_files
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
    out = predict_files(args.checkpoint, args.images, table=args.table, budget_mflops=args.budget_mflops,
                        budget_latency_ms=args.budget_latency_ms, topk=args.topk, device=args.device,
                        runtime=args.runtime, cascade=args.cascade)
    print(json.dumps(out, indent=1) if args.json else "\n".join(describe_predictions(out)))
    return 0
