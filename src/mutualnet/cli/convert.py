"""``mutualnet convert``: turn released MutualNet / US-Net weights or torchvision weights into a checkpoint.

``--released FILE`` reads a MobileNet v1/v2 checkpoint of the official MutualNet or US-Net code
(``{'model': <DataParallel state dict>}``, per-width BN statistics); ``--torchvision FILE --model NAME``
reads a torchvision ImageNet state dict (width 1.0). The result is a mutualnet checkpoint that
``export``, ``predict`` and ``search`` accept. See docs/interop.md for the supported key layout.
"""

from __future__ import annotations

import argparse

from ..deploy.interop import convert_checkpoint
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert released MutualNet/US-Net or torchvision weights to a checkpoint",
                       description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--released", help="official MutualNet / US-Net MobileNet checkpoint (.pt)")
    src.add_argument("--torchvision", help="torchvision state dict (.pth)")
    p.add_argument("--arch", choices=["mobilenet_v1", "mobilenet_v2"], help="released architecture (default: inferred)")
    p.add_argument("--widths", type=A.float_list, help="the released run's width_mult_list (default: inferred)")
    p.add_argument("--model", help="our model name for --torchvision weights (e.g. resnet50)")
    p.add_argument("--out", required=True, help="mutualnet checkpoint to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    desc = convert_checkpoint(args.out, released=args.released, torchvision=args.torchvision, arch=args.arch,
                              widths=args.widths, model=args.model)
    print(f"wrote {args.out}: {desc}")
    return 0
