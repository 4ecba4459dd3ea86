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

from torch.utils.data import DataLoader

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data.checkpoint import data_from_checkpoint
from ..deploy.adaptive import load_query_table
from ..deploy.cascade import MAX_STEPS, TIES_SE, fit_cascade, score_configs
from ..errors import MutualNetError
from ..profiling import profile, resolve_device
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


def _frontier(ckpt: dict, args: argparse.Namespace, model) -> list[dict]:
    """The candidate steps: the frontier of the table, or the --steps configurations (their MFLOPs counted)."""
    if args.steps is None:
        return load_query_table(ckpt, args.table).frontier()
    for w, _ in args.steps:
        model.width_range.check(w, "--steps width")
    return [{"width": w, "resolution": r, "mflops": profile(model, w, r).mflops} for w, r in args.steps]


def run(args: argparse.Namespace) -> int:
    from ..data.datasets import random_subset  # the same seeded subset as `search --val-images`
    from .eval import run_cascade_on

    if (args.max_mflops is None) == (args.min_top1 is None):
        raise MutualNetError("give one target: --max-mflops (average MFLOPs) or --min-top1 (top-1 %)")
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    candidates = _frontier(ckpt, args, model)
    dev = resolve_device(args.device)
    data = data_from_checkpoint(ckpt, model, dataset=args.dataset, data_root=args.data_root, workers=args.workers)
    crop = max([*((ckpt.get("meta") or {}).get("resolutions") or []), *(c["resolution"] for c in candidates)])
    heldout = random_subset(data.build("holdout", crop), args.heldout_images, args.seed)
    model.to(dev)
    scores = score_configs(model, DataLoader(heldout, batch_size=args.batch_size, num_workers=data.workers),
                           candidates, device=dev)
    chains = [tuple(range(len(candidates)))] if args.steps is not None else None
    cascade = fit_cascade(scores, max_mflops=args.max_mflops, min_top1=args.min_top1, max_steps=args.max_steps,
                          grid=args.grid, chains=chains, ties_se=args.ties_se)
    cascade = type(cascade)(cascade.steps, cascade.fit | {"split": "holdout", "dataset": data.info})
    cascade.save(args.out)
    test = None
    if args.report_test:
        val = random_subset(data.build("val", crop), args.val_images, args.seed)
        test = run_cascade_on(model, cascade, val, args, data.workers, dev)
    if args.json:
        print(json.dumps({"cascade": cascade.to_dict(), "test": test and test["report"]}, indent=1))
        return 0
    for line in cascade.describe():
        print(line)
    if test is not None:
        r = test["report"]
        print(f"on {r['images']} test images: top-1 {r['top1']:.2f}%, {r['mflops']:.2f} MFLOPs on average; "
              "stopping at each step: " + ", ".join(f"{100 * s:.1f}%" for s in r["stop_share"]))
    print(f"wrote {args.out}")
    return 0
