"""``mutualnet compare``: MutualNet vs US-Net vs US-Net+ vs independent networks (and the boost), one plot.

Every arm trains with the demo's recipe and is searched like ``mutualnet search``; with ``--seeds`` each arm runs
once per seed and the table gives mean ± standard deviation per budget, beside each arm's training compute.
Each budget's configuration is picked on 5,000 held-out training images (the recipe's data.holdout, never trained
on) and its test-set top-1 is reported; `--set data.holdout=0` picks on the test set as before.
For a quick look shrink it: ``--train-images 5000 --val-images 1000 --epochs 1 --arms mutualnet,usnet+``.
"""

from __future__ import annotations

import argparse

from ..compare import ARMS, parse_seeds, run_compare
from ..demo import DEMO_RECIPE
from ..errors import MutualNetError
from . import _args as A


def _arms(s: str) -> list[str]:
    arms = [a.strip() for a in s.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise argparse.ArgumentTypeError(f"unknown arm {bad[0] if bad else s!r}; choose from {', '.join(ARMS)}")
    return arms


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the paper's comparison at small scale on Fashion-MNIST",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/compare", help="output folder (rerun with the same folder to resume)")
    p.add_argument("--epochs", type=A.positive_int,
                   help=f"training epochs of every arm (default: the demo's, {DEMO_RECIPE['train']['epochs']})")
    p.add_argument("--seeds", type=A.library_arg(parse_seeds), default=[0],
                   help="run every arm once per seed, e.g. 0,1 (default: 0)")
    p.add_argument("--arms", type=_arms, help=f"arms to run, comma-separated (default: all: {','.join(ARMS)})")
    p.add_argument("--train-images", type=A.positive_int,
                   help="train every arm on this many training images, a fixed random subset (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the recipe of every arm, as `mutualnet train --set` (repeatable)")
    p.add_argument("--data-root", help="Fashion-MNIST folder (default: Debian's)")
    p.add_argument("--singles", type=A.configs, help="independent networks as WIDTH@RES,... "
                                                    "(default: top, middle and bottom of the range)")
    p.add_argument("--no-boost", action="store_true", help="skip the single-network boost (same as leaving "
                                                           "'boost' out of --arms)")
    p.add_argument("--width-step", type=A.width_step, default=0.05, help="width step of every search (default: 0.05)")
    p.add_argument("--calib-images", type=A.positive_int, default=2000,
                   help="BN calibration images per configuration (default: 2000)")
    p.add_argument("--val-images", type=A.positive_int,
                   help="held-out (or, without data.holdout, test) images per configuration (default: all)")
    p.add_argument("--threads", type=A.threads, help="torch CPU threads (default: torch's)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the results of what has finished in --out (a look at a long run)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    arms = [a for a in (args.arms or ARMS) if not (args.no_boost and a == "boost")]
    if not arms:
        raise MutualNetError("no arm left to run (--no-boost removed the only one)")
    res = run_compare(args.out, epochs=args.epochs, data_root=args.data_root, seeds=args.seeds, arms=arms,
                      train_images=args.train_images, overrides=args.overrides, singles=args.singles,
                      width_step=args.width_step, calib_images=args.calib_images, val_images=args.val_images,
                      threads=args.threads, progress=not args.no_progress, report_only=args.report_only)
    print((res.out / "results.md").read_text())
    print(f"plot: {res.out / 'compare.png'}; summary: {res.out / 'compare.json'}; "
          f"{res.seconds / 60:.1f} min in all (resumed parts included)")
    return 0
