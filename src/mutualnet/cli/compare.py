"""``mutualnet compare``: MutualNet vs US-Net vs US-Net+ vs independent networks (and the boost), one plot."""

from __future__ import annotations

import argparse

from ..compare import run_compare
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the paper's comparison at small scale on Fashion-MNIST",
                       description=__doc__)
    p.add_argument("--out", default="runs/compare", help="output folder (rerun with the same folder to resume)")
    p.add_argument("--epochs", type=A.positive_int, help="training epochs of every arm (default: the demo's, 2)")
    p.add_argument("--data-root", help="Fashion-MNIST folder (default: Debian's)")
    p.add_argument("--singles", type=A.configs, help="independent networks as WIDTH@RES,... "
                                                    "(default: top, middle and bottom of the range)")
    p.add_argument("--no-boost", action="store_true", help="skip the single-network boost ([0.9, 1.0])")
    p.add_argument("--width-step", type=A.width_step, default=0.05)
    p.add_argument("--calib-images", type=A.positive_int, default=2000)
    p.add_argument("--val-images", type=A.positive_int, help="validation images per configuration (default: all)")
    p.add_argument("--threads", type=A.threads)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    res = run_compare(args.out, epochs=args.epochs, data_root=args.data_root, singles=args.singles,
                      boost=not args.no_boost, width_step=args.width_step, calib_images=args.calib_images,
                      val_images=args.val_images, threads=args.threads, progress=not args.no_progress)
    print((res.out / "results.md").read_text())
    print(f"plot: {res.out / 'compare.png'}; summary: {res.out / 'compare.json'}; "
          f"{res.seconds / 60:.1f} min")
    return 0
