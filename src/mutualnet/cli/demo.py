"""``mutualnet demo``: train MutualNet on Fashion-MNIST, calibrate, search, print the query table, plot it."""

from __future__ import annotations

import argparse

from ..demo import format_table, run_demo
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", description=__doc__,
                       help="the main job: MutualNet on Fashion-MNIST end to end (6.4 min on 2 idle CPU cores)")
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
    t = res.table
    print()
    print(format_table(t))
    full = res.full
    cheapest = min(t.rows, key=lambda r: r["macs"])
    front = t.frontier()
    split = t.meta.get("split", "test")
    print(f"top-1 measured on the {'held-out training images (data.holdout)' if split == 'holdout' else 'test set'}"
          + ("; the test set's in parentheses (reported, never selected on)"
             if any("test_top1" in r for r in t.rows) else ""))
    print()

    def top1(r: dict) -> str:
        return f"top-1 {r['top1']:.2f}%" + (f" ({r['test_top1']:.2f}% on the test set)" if "test_top1" in r else "")

    print(f"full configuration (width {full['width']:g}, {full['resolution']} px): {top1(full)}, "
          f"{full['mflops']:.2f} MFLOPs")
    print(f"cheapest configuration (width {cheapest['width']:g}, {cheapest['resolution']} px): "
          f"{top1(cheapest)}, {cheapest['mflops']:.2f} MFLOPs")
    print(f"{len(front)} of {len(t)} configurations are on the frontier; "
          f"{len({r['resolution'] for r in front})} resolutions appear on it")
    print(f"plot: {res.plot}   table: {res.search_dir / 'query_table.csv'}   "
          f"deployable checkpoint: {res.search_dir / 'calibrated.pt'}")
    print(f"pick a budget: mutualnet select --table {res.search_dir / 'query_table.json'} --max-mflops 5")
    train_s, search_s = whole_run_seconds(res)
    print(f"done in {res.seconds / 60:.1f} min; the whole run, resumed parts included: training "
          f"{train_s / 60:.1f} min, search {search_s / 60:.1f} min")
    return 0


def whole_run_seconds(res) -> tuple[float, float]:
    """Seconds of training and of the search over every invocation of the run (a resumed demo's ``seconds``
    covers only its own part): the trainer's and the search's own clocks, which survive resumes."""
    from ..checkpoint import load_checkpoint

    train_s = float(load_checkpoint(res.run_dir / "last.pt").get("train_state", {}).get("elapsed_s", 0.0))
    timing = res.table.meta.get("timing_s") or {}
    search_s = sum(float(timing.get(k, 0.0)) for k in ("calib_s", "eval_s", "profile_s", "latency_s"))
    return train_s, search_s
