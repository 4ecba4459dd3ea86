"""``mutualnet ablate``: MutualNet trained once per training option and seed, one table (see mutualnet.ablation).

Every option runs the MutualNet arm of ``mutualnet compare`` with the same recipe, epochs and seeds plus its own
``--set`` overrides, against the unchanged recipe (``base``); the table gives the test top-1 of the full and the
narrowest configuration and of the frontier picked on held-out images, mean ± sd over seeds, the gain of each
option and whether it clears twice the seed spread. Default options: the lineage's changes
(zero_init, alpha, clip, subnets3). Rerun with the same --out to resume; --report-only tabulates what finished.
"""

from __future__ import annotations

import argparse
import sys

from ..ablation import OPTIONS, parse_option, run_ablation
from ..compare import parse_seeds
from ..errors import MutualNetError
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="MutualNet once per training option and seed, one table",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/ablation", help="output folder (rerun with the same folder to resume)")
    p.add_argument("--epochs", type=A.positive_int, default=3, help="training epochs of every run (default: 3)")
    p.add_argument("--seeds", type=A.library_arg(parse_seeds), default=[0, 1],
                   help="seeds of every option (default: 0,1)")
    p.add_argument("--option", dest="options", type=A.library_arg(parse_option), action="append",
                   metavar="NAME=KEY=VALUE",
                   help="an option to ablate, e.g. zi=model.zero_init_residual=true (repeatable; default: "
                        + ", ".join(f"{k}={','.join(v)}" for k, v in OPTIONS.items()) + ")")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the recipe of every run, baseline included (repeatable)")
    p.add_argument("--train-images", type=A.positive_int, help="a fixed subset of the training set (default: all)")
    p.add_argument("--calib-images", type=A.positive_int, default=2000,
                   help="BN calibration images per configuration (default: 2000)")
    p.add_argument("--val-images", type=A.positive_int, help="held-out images per configuration (default: all)")
    p.add_argument("--width-step", type=A.width_step, default=0.05, help="width step of every search (default: 0.05)")
    p.add_argument("--threads", type=A.threads, help="torch CPU threads (default: torch's)")
    p.add_argument("--report-only", action="store_true", help="train nothing: tabulate what has finished")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = [name for name, _ in args.options or []]
    if len(set(names)) != len(names):
        raise MutualNetError(f"--option names must differ, got {', '.join(names)}")
    options = dict(args.options) if args.options else None
    res = run_ablation(args.out, options, epochs=args.epochs, seeds=args.seeds, report_only=args.report_only,
                       overrides=args.overrides, train_images=args.train_images, calib_images=args.calib_images,
                       val_images=args.val_images, width_step=args.width_step, threads=args.threads,
                       progress=not args.no_progress)
    print((res.out / "ablation.md").read_text())
    print(f"table: {res.out / 'ablation.md'}; summary: {res.out / 'ablation.json'}")
    failed = sum(len(r.get("failed", {})) for r in res.rows)
    if failed:
        print(f"error: {failed} run(s) failed (the table says which and why); the others finished -- rerun the same "
              "command to try the failed ones again", file=sys.stderr)
        return 1
    return 0
