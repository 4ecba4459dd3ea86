"""``mutualnet cascade``: fit a cascade of configurations on held-out images and write it (anytime inference).

Each input runs the cascade's configurations cheapest first and stops at the first whose maximum softmax
probability exceeds that step's threshold (``mutualnet.deploy.cascade``). The steps are chosen among the query
table's frontier (or given with --steps) and the thresholds fitted on the checkpoint's held-out training images
(``data.holdout``: never trained on, not the test set) to an average budget (--max-mflops) or a top-1
(--min-top1). The test set is only reported (--report-test). `predict --cascade` and `eval --cascade` run the
file; `export --cascade` writes it as a bundle that runs without mutualnet.
"""

from __future__ import annotations

import argparse
import json

from ..deploy.cascade import MAX_STEPS, TIES_SE, describe_test_report, fit_checkpoint_cascade
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cascade", help="fit a cascade (each input stops at the cheapest configuration sure of it) "
                       "on held-out images", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="calibrated.pt from `mutualnet search`")
    p.add_argument("--table", help="query table JSON whose frontier gives the candidate steps (default: the "
                   "checkpoint's)")
    p.add_argument("--max-mflops", type=A.positive_float, help="average MFLOPs budget: the most accurate cascade "
                   "within it")
    p.add_argument("--min-top1", type=A.float_arg(0.0, 100.0), help="top-1 (%%) target: the cheapest cascade "
                   "reaching it")
    p.add_argument("--steps", type=A.configs, metavar="W@R,...",
                   help="the steps, cheapest first (default: chosen among the frontier's configurations)")
    p.add_argument("--max-steps", type=A.int_arg(1, MAX_STEPS), default=3,
                   help="most steps of a chosen cascade (default 3)")
    p.add_argument("--grid", type=A.int_arg(2, 1000), default=48,
                   help="threshold candidates per step: quantiles of the held-out confidences (default 48)")
    p.add_argument("--ties-se", type=A.float_arg(0.0, 10.0), default=TIES_SE,
                   help="held-out top-1 differences below this many standard errors count as noise: --max-mflops "
                   "keeps the costliest cascade that close to the most accurate, --min-top1 needs the target plus "
                   f"that margin (default {TIES_SE:g}; 0: the plain most accurate / cheapest)")
    p.add_argument("--heldout-images", type=A.positive_int, help="held-out images to fit on (default: all)")
    p.add_argument("--report-test", action="store_true", help="also run the fitted cascade on the test set")
    p.add_argument("--val-images", type=A.positive_int, help="test images for --report-test (default: all)")
    p.add_argument("--batch-size", type=A.positive_int, default=200)
    p.add_argument("--device", default="cpu")
    A.add_data_args(p)
    p.add_argument("--out", required=True, help="cascade JSON to write (atomically)")
    p.add_argument("--json", action="store_true", help="print the cascade (and the test report) as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cascade, test = fit_checkpoint_cascade(
        args.checkpoint, args.out, max_mflops=args.max_mflops, min_top1=args.min_top1, steps=args.steps,
        table=args.table, max_steps=args.max_steps, grid=args.grid, ties_se=args.ties_se,
        heldout_images=args.heldout_images, report_test=args.report_test, val_images=args.val_images,
        batch_size=args.batch_size, device=args.device, dataset=args.dataset, data_root=args.data_root,
        workers=args.workers, seed=args.seed)
    if args.json:
        print(json.dumps({"cascade": cascade.to_dict(), "test": test}, indent=1))
        return 0
    print("\n".join([*cascade.describe(), *([describe_test_report(test)] if test else []), f"wrote {args.out}"]))
    return 0
