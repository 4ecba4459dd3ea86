"""``mutualnet demo``: train MutualNet on Fashion-MNIST, calibrate, search, print the query table, plot it."""

from __future__ import annotations

import argparse

from ..demo import run_demo
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", description=__doc__,
                       help="the main job: MutualNet on Fashion-MNIST end to end (about 25 min on 2 CPU cores)")
    p.add_argument("--out", default="runs/demo", help="output folder (rerun with the same folder to resume)")
    p.add_argument("--epochs", type=A.positive_int, help="training epochs (default 3)")
    p.add_argument("--data-root", help="Fashion-MNIST folder (default: Debian's /usr/share/datasets/fashion-mnist)")
    p.add_argument("--width-step", type=A.width_step, default=0.05, help="query-table width step (default 0.05)")
    p.add_argument("--calib-images", type=A.positive_int, default=2000, help="images per BN calibration (default 2000)")
    p.add_argument("--val-images", type=A.positive_int,
                   help="validation images per configuration (default: all 10,000)")
    p.add_argument("--threads", type=A.threads, help="CPU threads (default: torch's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the recipe, e.g. --set optim.lr=0.2 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    res = run_demo(args.out, epochs=args.epochs, data_root=args.data_root, overrides=args.overrides,
                   width_step=args.width_step, calib_images=args.calib_images, val_images=args.val_images,
                   threads=args.threads, progress=not args.no_progress)
    print("\n".join(res.describe()))
    return 0
