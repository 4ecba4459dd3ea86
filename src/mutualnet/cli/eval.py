"""``mutualnet eval``: top-1 / top-5 of one or more configurations of any mutualnet checkpoint.

Works without a query table: a training checkpoint (``best.pt``), ``calibrated.pt``, a converted
torchvision or released checkpoint (``mutualnet convert``). Each configuration is evaluated on the
validation split of the checkpoint's dataset (``--dataset`` / ``--data-root`` override it) with the
BatchNorm statistics it has: its calibrated ones, or, at the top width, the shared running ones. A
narrower configuration without statistics is an error unless ``--calibrate`` re-estimates them first
from ``--calib-images`` training images (the paper's post-statistics; the checkpoint is not changed:
``mutualnet calibrate`` stores them).

``--cascade cascade.json`` (from ``mutualnet cascade``) evaluates a cascade instead: its top-1, average MFLOPs and
the share of images stopping at each step; ``--per-image`` prints the configuration each image stopped at.
"""

from __future__ import annotations

import argparse
import json

from ..deploy.cascade import describe_cascade_evaluation, evaluate_checkpoint_cascade
from ..errors import MutualNetError
from ..search.run import describe_evaluation, evaluate_checkpoint
from . import _args as A
from ._args import add_data_args


def _config(text: str) -> tuple[float, int] | tuple[float, int, int]:
    """``WIDTH,RESOLUTION[,DEPTH]`` with the same bounds as every other command's width, resolution and depth."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected WIDTH,RESOLUTION[,DEPTH] (e.g. 0.5,160 or 0.5,160,2), got {text!r}")
    wr = (A.width(parts[0]), A.resolution(parts[1]))
    return wr if len(parts) == 2 else (*wr, A.positive_int(parts[2]))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy of one or more width x resolution configurations of a checkpoint",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="any mutualnet checkpoint (best.pt, calibrated.pt, converted)")
    p.add_argument("--config", dest="configs", type=_config, action="append", metavar="WIDTH,RESOLUTION[,DEPTH]",
                   help="a configuration to evaluate (repeatable; default: the top width at the highest resolution); "
                        "DEPTH: blocks each elastic stage runs, for a model trained with model.depth_range "
                        "(default: full depth)")
    add_data_args(p)
    p.add_argument("--calibrate", action="store_true",
                   help="re-estimate BN statistics of each configuration first (needed for widths without them)")
    p.add_argument("--calib-images", type=int, default=2000, help="training images for --calibrate (2000)")
    p.add_argument("--val-images", type=int, help="validation images (default: all)")
    p.add_argument("--batch-size", type=int, default=200, help="evaluation / calibration batch size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cascade", help="evaluate this cascade (from `mutualnet cascade`) instead of configurations")
    p.add_argument("--per-image", action="store_true", help="with --cascade: print the configuration each image "
                   "stopped at")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data = {"dataset": args.dataset, "data_root": args.data_root, "workers": args.workers, "seed": args.seed}
    if args.cascade is not None:
        if args.configs:
            raise MutualNetError("give either --config or --cascade, not both")
        out = evaluate_checkpoint_cascade(args.checkpoint, args.cascade, val_images=args.val_images,
                                          batch_size=args.batch_size, device=args.device,
                                          calib_images=args.calib_images, per_image=args.per_image, **data)
        print(json.dumps(out, indent=1) if args.json else "\n".join(describe_cascade_evaluation(out)))
        return 0
    if args.per_image:
        raise MutualNetError("--per-image goes with --cascade")
    out = evaluate_checkpoint(args.checkpoint, args.configs, recalibrate=args.calibrate, calib_images=args.calib_images,
                              val_images=args.val_images, batch_size=args.batch_size, device=args.device, **data)
    print(json.dumps(out, indent=1) if args.json else "\n".join(describe_evaluation(out)))
    return 0
