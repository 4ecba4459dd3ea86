"""``mutualnet detect``: train and evaluate a slimmable Mask R-CNN on COCO-format data.

    mutualnet detect train --annotations A --images DIR --backbone vgg16_bn --out RUN [--config F] [--set k=v]
    mutualnet detect eval --checkpoint RUN/last.pt --annotations A --images DIR --out DIR [--widths ...]
    mutualnet detect smoke-data --out DIR    (a tiny generated COCO-format set to try both on in a minute)

``eval`` calibrates BN per (width, scale) on the training images named in the checkpoint (or
``--calib-annotations/--calib-images``), computes COCO box / mask AP and MACs per configuration, and writes
``detection_table.json`` (+ ``.csv``; backbone and whole-detector MFLOPs are both columns), a query table
ranked by ``--metric`` that ``mutualnet select`` and ``mutualnet plot`` read, and two plots:
``ap_backbone_mflops.png`` (AP vs the backbone + FPN cost the width scales, the paper's axis) and
``ap_mflops.png`` (AP vs the whole detector, whose heads dominate at small widths).

Training: ``lr`` left unset follows the linear scaling rule, ``base_lr * batch_size / base_batch_size``
(0.02 per 16 images); ``max_iterations`` stops a run early (a short trial; the schedule keeps its epochs);
a loss that stops being finite or grows far above its running level stops the run with one error line.
"""

from __future__ import annotations

import argparse

from ..extras import require
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="Mask R-CNN on a slimmable backbone: train / eval (COCO format)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="detect_command", metavar="{train,eval,smoke-data}")
    dsub.required = True

    s = dsub.add_parser("smoke-data", help="write a tiny generated COCO-format set to try the commands on")
    s.add_argument("--out", required=True, help="new folder for train.json, train/, val.json, val/")
    s.add_argument("--train-images", type=A.positive_int, default=16)
    s.add_argument("--val-images", type=A.positive_int, default=8)
    s.set_defaults(func=run_smoke_data)

    t = dsub.add_parser("train", help="sandwich-rule training, one input scale per sub-network")
    t.add_argument("--config", help="YAML recipe (e.g. configs/detection/maskrcnn_vgg16_coco.yaml)")
    t.add_argument("--annotations", help="COCO instances JSON of the training set")
    t.add_argument("--images", help="training image folder")
    t.add_argument("--backbone", help="vgg16_bn (paper) or resnet50")
    t.add_argument("--out", help="run folder (config.yaml, metrics.jsonl, last.pt)")
    t.add_argument("--init", help="backbone weights: mutualnet classification checkpoint or torchvision state dict")
    t.add_argument("--epochs", type=A.positive_int)
    t.add_argument("--batch-size", type=A.positive_int)
    t.add_argument("--lr", type=A.positive_float)
    t.add_argument("--device", help="auto, cpu or cuda")
    t.add_argument("--resume", metavar="LAST_PT", help="continue a run from its last.pt (its config; --set may "
                   "change e.g. epochs)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting (repeatable), e.g. --set scales=[600,480]")
    t.set_defaults(func=run_train)

    e = dsub.add_parser("eval", help="COCO AP and MACs per (width, scale); AP-MFLOPs table and plot")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--annotations", required=True, help="COCO instances JSON to evaluate on")
    e.add_argument("--images", required=True, help="image folder of --annotations")
    e.add_argument("--out", required=True, help="folder for detection_table.json/.csv and ap_mflops.png")
    e.add_argument("--widths", type=A.float_list, help="widths to evaluate (default: 4 spread over the trained range)")
    e.add_argument("--scales", type=A.resolutions, help="input short sides (default: the training scales)")
    e.add_argument("--max-size", type=A.resolution, help="long-side cap (default: the training one)")
    e.add_argument("--calib-annotations", help="BN calibration data (default: the training data of the checkpoint)")
    e.add_argument("--calib-images", type=A.positive_int, default=200, metavar="N",
                   help="images per calibration (default 200)")
    e.add_argument("--calib-folder", help="image folder of --calib-annotations")
    e.add_argument("--no-calibrate", action="store_true", help="use the shared running BN statistics")
    e.add_argument("--mac-size", type=A.size, default=(480, 640), help="HxW image MACs are counted on (480x640)")
    e.add_argument("--metric", choices=("box_ap", "mask_ap"), default="box_ap", help="metric of the Pareto flags")
    e.add_argument("--batch-size", type=A.positive_int, default=2)
    e.add_argument("--device", default="auto")
    e.set_defaults(func=run_eval)


def run_smoke_data(args: argparse.Namespace) -> int:
    require("coco", "detection")
    from ..detection.smoke import write_smoke_data
    print("wrote " + ", ".join(f"{split}: {ann} + {imgs}/" for split, (ann, imgs) in
                               write_smoke_data(args.out, args.train_images, args.val_images).items()))
    return 0


def run_train(args: argparse.Namespace) -> int:
    require("coco", "detection")
    from ..detection import train_or_resume

    run, cfg = train_or_resume(args.config, args.set, resume=args.resume, annotations=args.annotations,
                               images=args.images, backbone=args.backbone, out=args.out, init=args.init,
                               epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device)
    print(f"resumed and trained to {run / 'last.pt'}" if args.resume else
          f"trained {cfg.backbone} Mask R-CNN, widths {list(cfg.width_range)}, scales {cfg.scales}: {run / 'last.pt'}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    require("coco", "detection")
    from ..detection import describe_detection_table
    from ..detection import run_eval as evaluate_detector

    table, written = evaluate_detector(
        args.checkpoint, args.annotations, args.images, args.out, widths=args.widths, scales=args.scales,
        calibrate=not args.no_calibrate, calib_annotations=args.calib_annotations, calib_folder=args.calib_folder,
        calib_images=args.calib_images, mac_size=args.mac_size, metric=args.metric, batch_size=args.batch_size,
        device=args.device, max_size=args.max_size)
    print("\n".join(describe_detection_table(table, written)))
    return 0
