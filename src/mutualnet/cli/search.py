"""``mutualnet search``: calibrate BN and evaluate every width x resolution of a trained checkpoint.

Writes ``OUT/query_table.json`` and ``.csv`` (accuracy, MACs, params, optional latency, Pareto frontier)
and ``OUT/calibrated.pt`` (the checkpoint with every searched configuration's BN statistics and the
table under ``"query_table"``). A killed search started again with the same arguments continues.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ..data import build_dataset, preprocessing_of
from ..errors import MutualNetError
from ..io import clean_stale_temps, folder_lock
from ..models import model_info
from ..search import build_query_table, clear_search_state, width_grid
from ..search.build import STATS_DIR
from . import _args as A


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's meta 'dataset')")
    p.add_argument("--data-root", help="dataset folder (default: the checkpoint's)")
    p.add_argument("--workers", type=A.nonneg_int,
                   help="data loader workers (default: 0 for in-memory datasets, else 4)")
    p.add_argument("--seed", type=A.seed, default=0, help="seed of the calibration / validation subsets")


def checkpoint_model(path: str):
    """(checkpoint dict, model) of a mutualnet checkpoint, with one-line errors for bad files."""
    ckpt = load_checkpoint(path)
    return ckpt, model_from_checkpoint(ckpt).eval()


def data_builder(args: argparse.Namespace, ckpt: dict, model) -> tuple[Callable, dict, int]:
    """A ``(split, input_size) -> Dataset`` builder from the checkpoint's dataset meta and the overrides."""
    meta_ds = dict(ckpt.get("meta", {}).get("dataset") or {})
    name = args.dataset or meta_ds.get("name")
    if not name:
        raise MutualNetError(f"{args.checkpoint} does not record its dataset; pass --dataset (and --data-root)")
    root = args.data_root if args.data_root is not None else (meta_ds.get("root") if not args.dataset
                                                              or args.dataset == meta_ds.get("name") else None)
    cfg = ckpt.get("config") or {}  # the trainer's resolved config, when the checkpoint carries it
    cfg_data, cfg_run = cfg.get("data") or {}, cfg.get("run") or {}
    kw = {"val_resize_ratio": float(cfg_data.get("val_resize_ratio") or 0.875)}
    if name == "synthetic":  # same templates as in training: same seed
        kw |= {"num_classes": model.num_classes, "in_chans": model.in_chans,
               "synthetic_length": int(meta_ds.get("synthetic_length") or cfg_data.get("synthetic_length") or 512),
               "seed": int(meta_ds.get("seed") or cfg_run.get("seed") or 0)}
    workers = args.workers if args.workers is not None else (4 if name == "imagefolder" else 0)

    def build(split: str, size: int):
        return build_dataset(name, split, root=root, input_size=size, augment=False, **kw)

    info = {"name": name, "root": None if root is None else str(Path(root).expanduser().absolute())}
    return build, info, workers


def artefact_fields(meta: dict, resolutions: list[int]) -> dict:
    """Preprocessing and class names for a table or export, so it can be used without its checkpoint."""
    fields = {"preprocessing": preprocessing_of(meta if meta.get("preprocessing") or meta.get("resolutions")
                                                else {**meta, "resolutions": resolutions}).to_dict()}
    if meta.get("class_names"):
        fields["class_names"] = list(meta["class_names"])
    return fields


def search_resolutions(args: argparse.Namespace, ckpt: dict) -> list[int]:
    res = args.resolutions or ckpt.get("meta", {}).get("resolutions") or model_info(ckpt["model_name"]).resolutions
    return sorted({int(r) for r in res}, reverse=True)


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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ckpt, model = checkpoint_model(args.checkpoint)
    for name in ("calib_images", "eval_batch_size", "batch_size"):
        if getattr(args, name) <= 0:
            raise MutualNetError(f"--{name.replace('_', '-')} must be positive")
    if args.val_images is not None and args.val_images <= 0:
        raise MutualNetError("--val-images must be positive")
    lo, hi = model.width_range
    if args.widths:
        if not (lo - 1e-6 <= args.widths[0] <= args.widths[1] <= hi + 1e-6):
            raise MutualNetError(f"--widths {args.widths[0]:g},{args.widths[1]:g} is outside the trained range "
                                 f"[{lo:g}, {hi:g}]")
        lo, hi = args.widths
    widths = width_grid(lo, hi, args.width_step)
    resolutions = search_resolutions(args, ckpt)
    build, ds_info, workers = data_builder(args, ckpt, model)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise MutualNetError(f"--out {out} exists and is not a folder")
    top = resolutions[0]
    if args.resize_then_crop:
        val, calib = (lambda r: build("val", r)), (lambda r: build("train", r))
    else:
        val, calib = build("val", top), build("train", top)
    ckpt_meta = dict(ckpt.get("meta", {}))
    meta = {"model": ckpt["model_name"], "model_args": ckpt["model_args"],
            "checkpoint": os.path.abspath(args.checkpoint), "mode": ckpt_meta.get("mode"),
            "dataset": ds_info, **artefact_fields(ckpt_meta, resolutions)}
    with folder_lock(out, "search folder"):  # one search per folder; a killed one's temp files are removed
        for folder in (out, out / STATS_DIR):
            clean_stale_temps(folder)
        t0 = time.perf_counter()
        table = build_query_table(
            model, val, calib, resolutions=resolutions, widths=widths, calib_images=args.calib_images,
            val_images=args.val_images, halving=args.halving, batch_size=args.eval_batch_size, device=args.device,
            latency=args.latency, latency_batch_size=args.batch_size, threads=args.threads,
            resize_then_crop=args.resize_then_crop,
            state_dir=out, meta=meta, num_workers=workers, seed=args.seed, progress=not args.no_progress)
        table.save(out / "query_table.json")
        model.to("cpu")
        save_checkpoint(out / "calibrated.pt", model, meta=ckpt_meta | {"calibrated": True},
                        query_table=table.to_dict())
        clear_search_state(out)
    cal = table.meta["calibration"]
    best = max(table.rows, key=lambda r: r["top1"])
    print(f"searched {len(table)} configurations ({len(widths)} widths x {len(resolutions)} resolutions) in "
          f"{time.perf_counter() - t0:.1f}s; calibration {cal['images_per_s']} images/s, "
          f"{100 * (cal['share_of_search_time'] or 0):.0f}% of search time")
    print(f"best: width {best['width']:g} at {best['resolution']} px, top-1 {best['top1']:.2f}%, "
          f"{best['mflops']:.2f} MFLOPs; frontier: {sum(r['pareto'] for r in table.rows)} configurations")
    print(json.dumps({"table": str(out / "query_table.json"), "csv": str(out / "query_table.csv"),
                      "checkpoint": str(out / "calibrated.pt")}))
    return 0
