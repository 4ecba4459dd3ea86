"""``mutualnet search``: calibrate BN and evaluate every width x resolution of a trained checkpoint.

Writes ``OUT/query_table.json`` and ``.csv`` (accuracy, MACs, params, optional latency, Pareto frontier)
and ``OUT/calibrated.pt`` (the checkpoint with every searched configuration's BN statistics and the
table under ``"query_table"``). A killed search started again with the same arguments continues.
Under ``torchrun --nproc_per_node N -m mutualnet search ...`` the distinct networks are split across the N
processes (``OUT/shard-k``) and merged into the same outputs by rank 0 (not with ``--halving``).
"""

from __future__ import annotations

import argparse

from ..search.run import search_checkpoint
from . import _args as A
from ._args import add_data_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="calibrate + evaluate every width x resolution (query table)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="trained mutualnet checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    add_data_args(p)
    p.add_argument("--width-step", type=A.width_step, default=0.05, help="width grid step (default 0.05)")
    p.add_argument("--widths", type=A.widths, help="LO,HI sub-range of the trained widths to search")
    p.add_argument("--resolutions", type=A.resolutions,
                   help="input sides (default: the checkpoint's training resolutions)")
    p.add_argument("--calib-images", type=A.positive_int, default=2000,
                   help="training images per BN calibration (2000)")
    p.add_argument("--calib-tol", type=A.positive_float, metavar="TOL",
                   help="stop a calibration before --calib-images once no BN mean moved by TOL standard deviations "
                        "nor variance by TOL of itself in the last batch (default: all images; 0.03 lowered top-1 "
                        "by up to 2 points and changed the frontier in docs/benchmarks.md)")
    p.add_argument("--val-images", type=A.positive_int, help="validation images (default: all)")
    p.add_argument("--halving", type=float, metavar="FRACTION",
                   help="successive halving: validate every network on this fraction of the images first, then "
                        "only those that can still reach the frontier on twice as many, up to all (e.g. 0.125)")
    p.add_argument("--eval-batch-size", type=A.positive_int, default=200, help="calibration / evaluation batch size")
    p.add_argument("--latency", action="store_true", help="also measure median forward latency")
    p.add_argument("--device", default="cpu", help="cpu or cuda (search and latency)")
    p.add_argument("--threads", type=A.threads, help="CPU threads (default: torch's)")
    p.add_argument("--batch-size", type=A.positive_int, default=1, help="batch size for --latency (default 1)")
    p.add_argument("--resize-then-crop", action="store_true",
                   help="evaluate each resolution with its own Resize+CenterCrop (default: resize the crop of "
                        "the highest resolution on the device, as in the paper)")
    p.add_argument("--split", choices=("holdout", "test"),
                   help="measure the table on the checkpoint's held-out training images (data.holdout; the "
                        "default when it has them) or on the test set (the default otherwise)")
    p.add_argument("--no-test", action="store_true",
                   help="with --split holdout, skip the test-set columns (test_top1/test_top5, reported only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    res = search_checkpoint(
        args.checkpoint, args.out, dataset=args.dataset, data_root=args.data_root, workers=args.workers,
        seed=args.seed, width_step=args.width_step, widths=args.widths, resolutions=args.resolutions,
        calib_images=args.calib_images, val_images=args.val_images, halving=args.halving,
        calib_tol=args.calib_tol, batch_size=args.eval_batch_size, device=args.device, latency=args.latency,
        latency_batch_size=args.batch_size, threads=args.threads,
        resize_then_crop=args.resize_then_crop, split=args.split, report_test=not args.no_test,
        progress=not args.no_progress)
    print("\n".join(res.describe()))
    return 0
