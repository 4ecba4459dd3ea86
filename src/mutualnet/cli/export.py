"""``mutualnet export``: one configuration as a plain network (state dict, TorchScript or ONNX).

Pick the configuration by ``--width``/``--resolution``, or by a budget (``--max-mflops`` /
``--max-latency-ms``) looked up in a query table (``--table``, else the one ``mutualnet search`` embeds
in its ``calibrated.pt``). The configuration must hold calibrated BatchNorm statistics, except the top
width (whose shared running statistics are its own); ``--allow-uncalibrated`` overrides this with a
warning. The file is checked against the slimmable model and written atomically.

``--cascade cascade.json`` (from ``mutualnet cascade``) exports a cascade instead: ``--out`` is a folder with one
TorchScript (or ONNX) file per step and ``cascade.json`` (thresholds, preprocessing, class names), runnable
without mutualnet (docs/cascade.md has the snippet).
"""

from __future__ import annotations

import argparse

from ..deploy.cascade import export_checkpoint_cascade
from ..deploy.export import FORMATS, export_checkpoint
from ..errors import MutualNetError
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export one width x resolution as a plain PyTorch / TorchScript / ONNX model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="mutualnet checkpoint (calibrated.pt from `mutualnet search`)")
    p.add_argument("--width", type=A.width, help="width multiplier (default: the top of the trained range)")
    p.add_argument("--resolution", type=A.resolution,
                   help="input side in pixels (default: the highest trained resolution)")
    p.add_argument("--depth", type=A.positive_int, help="blocks each elastic stage keeps (a model trained with "
                   "model.depth_range; default: full depth); the skipped blocks are absent from the export")
    p.add_argument("--max-mflops", type=A.positive_float, help="pick the best configuration within this many MFLOPs")
    p.add_argument("--max-latency-ms", type=A.positive_float, help="pick the best configuration within this latency")
    p.add_argument("--table", help="query table JSON for budgets (default: the checkpoint's embedded table)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from --out's suffix, else pt)")
    p.add_argument("--out", required=True, help="output file (written atomically)")
    p.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm layers instead of folding them")
    p.add_argument("--cascade", help="export this cascade (from `mutualnet cascade`) as a bundle folder at --out "
                   "(format torchscript or onnx)")
    p.add_argument("--allow-uncalibrated", action="store_true",
                   help="export a configuration without calibrated BN statistics (shared running statistics)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.cascade is not None:
        if any(v is not None for v in (args.width, args.resolution, args.max_mflops, args.max_latency_ms, args.table)):
            raise MutualNetError("--cascade exports the cascade's own configurations; drop --width/--resolution/"
                                 "--max-mflops/--max-latency-ms/--table")
        cascade, out, fmt = export_checkpoint_cascade(args.checkpoint, args.cascade, args.out, fmt=args.format)
        steps = ", ".join(f"width {s.width:g} at {s.resolution} px" for s in cascade.steps)
        print(f"exported a cascade of {len(cascade.steps)} steps to {out}/ [{fmt}]: {steps}; run it with "
              "docs/cascade.md's snippet")
        return 0
    done = export_checkpoint(args.checkpoint, args.out, fmt=args.format, width=args.width, resolution=args.resolution,
                             depth=args.depth, max_mflops=args.max_mflops, max_latency_ms=args.max_latency_ms,
                             table=args.table, fold_bn=not args.no_fold_bn, allow_uncalibrated=args.allow_uncalibrated)
    print("\n".join(done.describe()))
    return 0
