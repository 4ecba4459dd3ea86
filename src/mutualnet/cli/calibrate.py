"""``mutualnet calibrate``: add one (width, resolution)'s BN statistics to a checkpoint.

Any width in the trained range works, not only the query table's grid. The output is the input
checkpoint (everything kept) with the new statistics; ``--out`` may name the input file (atomic write).
"""

from __future__ import annotations

import argparse

from ..search.run import calibrate_checkpoint
from . import _args as A
from ._args import add_data_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="re-estimate BN statistics of one width x resolution", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="mutualnet checkpoint")
    p.add_argument("--width", type=A.width, required=True, help="any width in the trained range")
    p.add_argument("--resolution", type=A.resolution, required=True, help="input side in pixels")
    p.add_argument("--depth", type=A.positive_int, help="blocks each elastic stage runs (default: full depth)")
    p.add_argument("--out", required=True, help="checkpoint to write (may be --checkpoint itself)")
    add_data_args(p)
    p.add_argument("--calib-images", type=A.positive_int, default=2000, help="training images to use (default 2000)")
    p.add_argument("--crop-size", type=A.resolution,
                   help="evaluation crop the images are taken at before the on-device resize (default: the "
                        "checkpoint's highest training resolution)")
    p.add_argument("--batch-size", type=A.positive_int, default=200)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    res = calibrate_checkpoint(args.checkpoint, args.width, args.resolution, args.out, dataset=args.dataset,
                               data_root=args.data_root, workers=args.workers, seed=args.seed,
                               calib_images=args.calib_images, crop_size=args.crop_size, batch_size=args.batch_size,
                               device=args.device, depth=args.depth)
    print(f"calibrated {res.key} on {res.num_images} images in {res.seconds:.2f}s "
          f"({res.images_per_s:.0f} images/s); wrote {args.out}")
    return 0
