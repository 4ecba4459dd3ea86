"""``mutualnet convert``: turn released MutualNet / US-Net weights or torchvision weights into a checkpoint.

``--released FILE`` reads a MobileNet v1/v2 checkpoint of the official MutualNet or US-Net code
(``{'model': <DataParallel state dict>}``, per-width BN statistics); ``--torchvision FILE --model NAME``
reads a torchvision ImageNet state dict (width 1.0). The result is a mutualnet checkpoint that
``export``, ``predict`` and ``search`` accept. See docs/interop.md for the supported key layout.
"""

from __future__ import annotations

import argparse

from ..checkpoint import atomic_save, checkpoint_dict
from ..deploy.interop import load_torchvision_weights, released_checkpoint
from ..errors import MutualNetError
from ..models import create_model, model_info
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
    if args.released:
        ckpt = released_checkpoint(args.released, arch=args.arch, widths=args.widths)
        meta = ckpt["meta"]
        uncomputed = meta.get("uncomputed_widths") or []
        have = [w for w in meta["released_widths"] if w not in uncomputed]
        desc = f"{ckpt['model_name']} with per-width statistics for widths {have}"
        if uncomputed:
            desc += (f"; widths {uncomputed} were saved with BatchNorm's initial statistics (mean 0, variance 1: "
                     "never computed) and are refused until calibrated (mutualnet calibrate, or eval --calibrate)")
    else:
        if not args.model:
            raise MutualNetError("--torchvision needs --model (e.g. resnet50, mobilenet_v2, vgg16_bn)")
        info = model_info(args.model)
        model = create_model(args.model, width_range=(info.width_range[0], 1.0))
        load_torchvision_weights(model, args.torchvision)
        ckpt = checkpoint_dict(model, {"resolutions": list(info.resolutions), "mode": "torchvision",
                                       "dataset": {"name": "imagefolder", "num_classes": model.num_classes,
                                                   "in_chans": 3, "input_size": 224}})
        desc = f"{args.model} (torchvision weights at width 1.0)"
    atomic_save(ckpt, args.out)
    print(f"wrote {args.out}: {desc}")
    return 0
