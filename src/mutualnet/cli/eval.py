"""``mutualnet eval``: top-1 / top-5 of one or more configurations of any mutualnet checkpoint.

Works without a query table: a training checkpoint (``best.pt``), ``calibrated.pt``, a converted
torchvision or released checkpoint (``mutualnet convert``). Each configuration is evaluated on the
validation split of the checkpoint's dataset (``--dataset`` / ``--data-root`` override it) with the
BatchNorm statistics it has: its calibrated ones, or, at the top width, the shared running ones. A
narrower configuration without statistics is an error unless ``--calibrate`` re-estimates them first
from ``--calib-images`` training images (the paper's post-statistics; the checkpoint is not changed:
``mutualnet calibrate`` stores them).

``--cascade cascade.json`` (from ``mutualnet cascade``) evaluates a cascade instead: its top-1, average MFLOPs and
the share of images stopping at each step; ``--per-image`` prints the configuration each image stopped at.
"""

from __future__ import annotations

import argparse
import json

from torch.utils.data import DataLoader

from ..calibrate import is_calibrated
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data.checkpoint import data_from_checkpoint
from ..data.datasets import random_subset
from ..errors import MutualNetError
from ..layers import config_key
from ..profiling import resolve_device
from ..search.run import evaluate_checkpoint
from ..search.table import config_text
from . import _args as A
from ._args import add_data_args


def _config(text: str) -> tuple[float, int] | tuple[float, int, int]:
    """``WIDTH,RESOLUTION[,DEPTH]`` with the same bounds as every other command's width, resolution and depth."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected WIDTH,RESOLUTION[,DEPTH] (e.g. 0.5,160 or 0.5,160,2), got {text!r}")
    wr = (A.width(parts[0]), A.resolution(parts[1]))
    return wr if len(parts) == 2 else (*wr, A.positive_int(parts[2]))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy of one or more width x resolution configurations of a checkpoint",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="any mutualnet checkpoint (best.pt, calibrated.pt, converted)")
    p.add_argument("--config", dest="configs", type=_config, action="append", metavar="WIDTH,RESOLUTION[,DEPTH]",
                   help="a configuration to evaluate (repeatable; default: the top width at the highest resolution); "
                        "DEPTH: blocks each elastic stage runs, for a model trained with model.depth_range "
                        "(default: full depth)")
    add_data_args(p)
    p.add_argument("--calibrate", action="store_true",
                   help="re-estimate BN statistics of each configuration first (needed for widths without them)")
    p.add_argument("--calib-images", type=int, default=2000, help="training images for --calibrate (2000)")
    p.add_argument("--val-images", type=int, help="validation images (default: all)")
    p.add_argument("--batch-size", type=int, default=200, help="evaluation / calibration batch size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cascade", help="evaluate this cascade (from `mutualnet cascade`) instead of configurations")
    p.add_argument("--per-image", action="store_true", help="with --cascade: print the configuration each image "
                   "stopped at")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def run_cascade_on(model, cascade, dataset, args: argparse.Namespace, workers: int, dev) -> dict:
    """Run ``cascade`` on ``dataset``: its report (top-1, average MFLOPs, share per step) and per-image outcome."""
    import torch

    from ..deploy.cascade import model_runner, run_cascade

    run = model_runner(model)
    stops, preds, labels = [], [], []
    for x, y in DataLoader(dataset, batch_size=args.batch_size, num_workers=workers):
        out = run_cascade(cascade, x.to(dev).float(), run)
        stops.append(out.stop.cpu())
        preds.append(out.logits.argmax(-1).cpu())
        labels.append(torch.as_tensor(y))
    if not stops:
        raise MutualNetError("the validation set is empty")
    stop, pred, label = torch.cat(stops), torch.cat(preds), torch.cat(labels)
    return {"report": cascade.report(stop, pred == label), "stop": stop.tolist(), "pred": pred.tolist(),
            "label": label.tolist()}


def _eval_cascade(args: argparse.Namespace) -> int:
    from ..deploy.cascade import Cascade

    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    if args.calib_images <= 0 or args.batch_size <= 0 or (args.val_images is not None and args.val_images <= 0):
        raise MutualNetError("--calib-images, --batch-size and --val-images must be positive")
    dev = resolve_device(args.device)
    if args.configs:
        raise MutualNetError("give either --config or --cascade, not both")
    cascade = Cascade.load(args.cascade)
    for s in cascade.steps:
        model.width_range.check(s.width, "cascade width")
        if not (is_calibrated(model, s.width, s.resolution) or model.width_range.is_top(s.width)):
            raise MutualNetError(f"{config_key(s.width, s.resolution)} has no calibrated BatchNorm statistics in "
                                 f"{args.checkpoint}; was the cascade fitted on another checkpoint?")
    data = data_from_checkpoint(ckpt, model, dataset=args.dataset, data_root=args.data_root, workers=args.workers)
    crop = max([*((ckpt.get("meta") or {}).get("resolutions") or []), *(s.resolution for s in cascade.steps)])
    val = random_subset(data.build("val", crop), args.val_images, args.seed)
    res = run_cascade_on(model.to(dev), cascade, val, args, data.workers, dev)
    rep, name = res["report"], data.info["name"]
    images = [{"index": i, "label": y, "predicted": p, "width": cascade.steps[k].width,
               "resolution": cascade.steps[k].resolution} for i, (k, p, y) in
              enumerate(zip(res["stop"], res["pred"], res["label"]))]
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "dataset": data.info, "cascade": cascade.to_dict(),
                          "report": rep} | ({"images": images} if args.per_image else {}), indent=1))
        return 0
    fit = cascade.fit
    expected = (f" (expected on {fit['images']} held-out images: top-1 {fit['top1']:.2f}%, {fit['mflops']:.2f} "
                "MFLOPs)") if fit else ""
    print(f"cascade of {len(cascade.steps)} steps: top-1 {rep['top1']:.2f}% on {rep['images']} {name} validation "
          f"images, {rep['mflops']:.2f} MFLOPs on average{expected}")
    for k, (s, share) in enumerate(zip(cascade.steps, rep["stop_share"])):
        print(f"step {k}: width {s.width:g} at {s.resolution} px ({s.mflops:.2f} MFLOPs): {100 * share:.1f}% of "
              "images stop here")
    if args.per_image:
        for im in images:
            print(f"image {im['index']}: label {im['label']}, predicted {im['predicted']}, width {im['width']:g} at "
                  f"{im['resolution']} px")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.cascade is not None:
        return _eval_cascade(args)
    if args.per_image:
        raise MutualNetError("--per-image goes with --cascade")
    out = evaluate_checkpoint(args.checkpoint, args.configs, dataset=args.dataset, data_root=args.data_root,
                              workers=args.workers, seed=args.seed, recalibrate=args.calibrate,
                              calib_images=args.calib_images, val_images=args.val_images,
                              batch_size=args.batch_size, device=args.device)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for row in out["results"]:
        print(f"{config_text(row)}: top-1 {row['top1']:.2f}%, "
              f"top-5 {row['top5']:.2f}% on {row['images']} {out['dataset']['name']} validation images "
              f"({row['mflops']:.2f} MFLOPs; BN: {row['bn_statistics']})")
    return 0
