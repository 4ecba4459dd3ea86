"""Evaluate a slimmable detector per (width, scale): COCO AP, MACs, and the AP-MFLOPs table.

* **BN calibration** (:func:`calibrate_detector`): the backbone's BN statistics of a configuration are
  re-estimated from training images resized to that scale by the classifier's own loop
  (:func:`mutualnet.calibrate.calibrate_batches`, with the detector's transform + backbone as the forward);
  see :mod:`mutualnet.detection.model` for why detection training keeps batch statistics.
* **AP** (:func:`evaluate_coco`): predictions are mapped back to COCO category ids and image coordinates,
  boxes written as XYWH, masks thresholded at 0.5 and RLE-encoded with ``pycocotools.mask``; pycocotools'
  ``COCOeval`` computes box AP ('bbox') and mask AP ('segm') at IoU 0.50:0.05:0.95.
* **MACs** (:func:`detector_macs`): multiply-accumulates (``torch.utils.flop_counter`` FLOPs / 2, convolutions
  and matrix products only; RoIAlign, NMS, interpolation, BN and activations are not counted) of one image of a
  fixed size (default 480 x 640, resized by the detector's transform to the configuration's scale and padded
  to a multiple of 32): backbone + FPN + RPN head over the whole image, the box head on the RPN's
  ``post_nms_top_n`` proposals, and the mask head on ``detections_per_img`` boxes -- the fixed counts
  MMDetection's FLOPs counter also assumes, since the real counts depend on the image.
* **The table** (:func:`evaluate_grid`) is a :class:`mutualnet.search.QueryTable` whose metric is ``box_ap``
  or ``mask_ap``: ``mutualnet select`` and ``mutualnet plot`` read it like a classification table.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from ..calibrate import calibrate_batches
from ..checkpoint import load_checkpoint
from ..errors import MutualNetError
from ..layers import active_num_params, allow_uncalibrated, use_config
from ..profiling import resolve_device
from ..search.plot import plot_detection_table
from ..search.table import QueryTable, pareto_frontier
from .data import CocoDetection, collate
from .model import SlimmableMaskRCNN, detector_from_checkpoint

__all__ = ["calibrate_detector", "coco_results", "coco_eval", "evaluate_coco", "detector_macs", "evaluate_grid",
           "active_num_params", "run_eval", "describe_detection_table"]


def _loader(dataset: CocoDetection, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def calibrate_detector(model: SlimmableMaskRCNN, dataset: CocoDetection, width: float, scale: int, *,
                       num_images: int = 200, batch_size: int = 2) -> str:
    """Estimate exact BN statistics of (``width``, ``scale``) from ``num_images`` images of ``dataset``.

    Only the backbone has BatchNorm; the images go through the detector's own transform (resize, normalise,
    pad) and the backbone. Returns the configuration key the statistics are stored under.
    """
    n = min(num_images, len(dataset))
    if n < 1:
        raise MutualNetError("calibration needs at least one image")
    device = _device(model)
    batches = ([im.to(device) for im in images] for images, _ in _loader(Subset(dataset, range(n)), batch_size))
    return calibrate_batches(model, batches, width, scale, forward=model.backbone_features).key


def coco_results(outputs: list[dict], image_ids: list[int], cat_ids: list[int], *, masks: bool = True) -> list[dict]:
    """torchvision detections (original image coordinates) -> COCO result dicts for ``COCO.loadRes``."""
    results = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().cpu().double()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        scores = out["scores"].detach().cpu().tolist()
        cats = [cat_ids[int(label) - 1] for label in out["labels"].detach().cpu()]
        rles = [None] * len(scores)
        if masks and "masks" in out:
            binary = (out["masks"].detach().cpu()[:, 0] > 0.5).numpy().astype(np.uint8)
            rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
            for rle in rles:
                rle["counts"] = rle["counts"].decode("ascii")
        for box, score, cat, rle in zip(xywh, scores, cats, rles):
            row = {"image_id": int(image_id), "category_id": int(cat), "bbox": [round(v, 2) for v in box],
                   "score": float(score)}
            if rle is not None:
                row["segmentation"] = rle
            results.append(row)
    return results


def coco_eval(coco_gt: COCO, results: list[dict], image_ids: list[int], iou_types: tuple[str, ...] = ("bbox", "segm"),
              ) -> dict[str, list[float]]:
    """pycocotools' COCOeval summary (12 numbers; ``[0]`` is AP@[.50:.95]) per IoU type.

    No detections at all gives AP 0 (``loadRes`` cannot take an empty list).
    """
    stats: dict[str, list[float]] = {}
    for iou_type in iou_types:
        if not results:
            stats[iou_type] = [0.0] * 12
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(json.loads(json.dumps(results)))  # loadRes may modify its input
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.params.imgIds = list(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats[iou_type] = [float(v) for v in ev.stats]
    return stats


@torch.no_grad()
def evaluate_coco(model: SlimmableMaskRCNN, dataset: CocoDetection, width: float, scale: int, *,
                  batch_size: int = 2, progress: bool = False) -> dict:
    """Box and mask AP of the detector at (``width``, ``scale``) on ``dataset`` (uses calibrated BN if present)."""
    model.eval()
    device = _device(model)
    results, seen = [], []
    it = _loader(dataset, batch_size)
    with use_config(model, width, scale):
        for images, targets in tqdm(it, desc=f"eval w{width:g} s{scale}", leave=False, disable=not progress):
            outputs = model([im.to(device) for im in images])
            ids = [int(t["image_id"]) for t in targets]
            results += coco_results(outputs, ids, dataset.cat_ids)
            seen += ids
    stats = coco_eval(dataset.coco, results, seen)
    return {"box_ap": stats["bbox"][0], "mask_ap": stats["segm"][0], "box_ap50": stats["bbox"][1],
            "mask_ap50": stats["segm"][1], "num_detections": len(results)}


def _macs(fn) -> int:  # noqa: ANN001
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


@torch.no_grad()
def detector_macs(model: SlimmableMaskRCNN, width: float, scale: int, image_size: tuple[int, int] = (480, 640),
                  ) -> dict:
    """MACs of one ``image_size`` (H, W) image at (``width``, ``scale``); see the module docstring for what counts.

    Returns ``{"macs", "backbone_macs" (backbone + FPN), "params" (active), "input_size" (H, W after resize and
    padding)}``. The detector's mode, width and scale are restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with use_config(model, width, scale), allow_uncalibrated(model):  # MACs do not depend on BN statistics
            p = next(model.parameters())
            batch, _ = model.preprocess([torch.zeros(3, *image_size, device=p.device, dtype=p.dtype)])
            x = batch.tensors
            h, w = batch.image_sizes[0]
            feats: dict[str, Tensor] = {}
            backbone = _macs(lambda: feats.update(model.backbone(x)))
            rpn = _macs(lambda: model.rpn.head(list(feats.values())))
            heads = model.roi_heads

            def boxes(n: int) -> list[Tensor]:  # n boxes spread over the image, sizes 32..256 px
                t = torch.linspace(0, 1, n, device=p.device, dtype=p.dtype)
                side = 32 + 224 * t.flip(0)
                x0, y0 = t * (w - 1) * 0.5, t.roll(n // 2) * (h - 1) * 0.5
                return [torch.stack([x0, y0, (x0 + side).clamp(max=w), (y0 + side).clamp(max=h)], 1)]

            n_prop = model.rpn.post_nms_top_n()
            box = _macs(lambda: heads.box_predictor(heads.box_head(heads.box_roi_pool(feats, boxes(n_prop),
                                                                                      batch.image_sizes))))
            n_det = heads.detections_per_img
            mask = _macs(lambda: heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(feats, boxes(n_det),
                                                                                          batch.image_sizes))))
            params = active_num_params(model)
    finally:
        model.train(was_training)
    return {"macs": int(backbone + rpn + box + mask), "backbone_macs": int(backbone), "params": int(params),
            "input_size": [int(x.shape[-2]), int(x.shape[-1])]}


def evaluate_grid(model: SlimmableMaskRCNN, dataset: CocoDetection, widths: list[float], scales: list[int], *,
                  calib_dataset: CocoDetection | None = None, calib_images: int = 200, batch_size: int = 2,
                  mac_image_size: tuple[int, int] = (480, 640), metric: str = "box_ap",
                  meta: dict | None = None) -> QueryTable:
    """The AP-MFLOPs table: a :class:`~mutualnet.search.QueryTable` ranked by ``metric``, a row per (width, scale).

    Rows hold ``width``, ``resolution`` (the scale), ``macs``, ``params``, ``mflops``, ``latency_ms`` (None:
    not measured), ``pareto``, and ``box_ap`` / ``mask_ap`` (and AP50s) in place of top-1 / top-5. BN is
    calibrated per row on ``calib_dataset`` unless it is None.
    """
    rows = []
    configs = [(float(w), int(s)) for s in sorted(set(scales), reverse=True) for w in sorted(set(widths))]
    for w, s in tqdm(configs, desc="detect eval", disable=len(configs) < 2):
        if calib_dataset is not None:
            calibrate_detector(model, calib_dataset, w, s, num_images=calib_images, batch_size=batch_size)
        with allow_uncalibrated(model, calib_dataset is None):  # no calibration data: running statistics, as asked
            ap = evaluate_coco(model, dataset, w, s, batch_size=batch_size)
        cost = detector_macs(model, w, s, mac_image_size)
        rows.append({"width": w, "resolution": s, **ap, "macs": cost["macs"], "backbone_macs": cost["backbone_macs"],
                     "params": cost["params"], "mflops": cost["macs"] / 1e6,
                     "backbone_mflops": cost["backbone_macs"] / 1e6, "latency_ms": None,
                     "mac_input_size": cost["input_size"], "calibrated": calib_dataset is not None})
    table = QueryTable(rows, dict(meta or {}), metric=metric)
    backbone_front = {id(r) for r in pareto_frontier(table.rows, "backbone_macs", metric)}
    for r in table.rows:  # the frontier by the cost the width scales (the paper's axis), beside the whole detector's
        r["pareto_backbone"] = id(r) in backbone_front
    return table


def run_eval(checkpoint: str | os.PathLike, annotations: str | os.PathLike, images: str | os.PathLike,
             out: str | os.PathLike, *, widths: list[float] | None = None, scales: list[int] | None = None,
             calibrate: bool = True, calib_annotations: str | None = None, calib_folder: str | None = None,
             calib_images: int = 200, mac_size: tuple[int, int] = (480, 640), metric: str = "box_ap",
             batch_size: int = 2, device: str = "auto", max_size: int | None = None) -> tuple[QueryTable, list[Path]]:
    """What ``mutualnet detect eval`` does: :func:`evaluate_grid` of a detection checkpoint on COCO-format data,
    written to ``out`` as ``detection_table.json`` (+ ``.csv``) and two plots (AP vs the whole detector's and vs
    the backbone's MFLOPs).

    Args:
        widths, scales: The grid (default: 4 widths spread over the trained range; the training scales).
        calibrate, calib_annotations, calib_folder, calib_images: BN calibration per (width, scale) on the
            training images the checkpoint names (or these); ``calibrate=False``: the shared running statistics.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``; ``max_size``: the long-side cap (default: the
            training one).

    Returns:
        The table and the files written.
    """
    dataset = CocoDetection(annotations, images)  # data problems surface before the checkpoint is read
    ckpt = load_checkpoint(checkpoint)
    model = detector_from_checkpoint(ckpt)
    cat_ids = ckpt.get("meta", {}).get("dataset", {}).get("cat_ids")
    if cat_ids is not None and list(cat_ids) != dataset.cat_ids:
        raise MutualNetError(f"{annotations} has categories {dataset.cat_ids}, the detector was trained on "
                             f"{list(cat_ids)}")
    model.to(resolve_device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device))
    if max_size is not None:
        model.max_size = max_size
    lo, hi = model.width_range
    widths = widths or sorted({round(lo + (hi - lo) * i / 3, 3) for i in range(4)})
    for w in widths:
        model.width_range.check(w)
    calib = None
    if calibrate:
        data = ckpt.get("meta", {}).get("dataset", {})
        ann, folder = calib_annotations or data.get("annotations"), calib_folder or data.get("images")
        if not ann or not folder or not Path(ann).is_file():
            raise MutualNetError("BN calibration needs training images: pass --calib-annotations and --calib-folder "
                                 "(or --no-calibrate)")
        calib = CocoDetection(ann, folder)
    meta = {"checkpoint": str(checkpoint), "model": ckpt["model_name"], "annotations": str(annotations),
            "mac_image_size": list(mac_size), "max_size": model.max_size,
            "macs": "conv/matmul MACs of backbone+FPN+RPN on the image, box head on the RPN's post-NMS proposals, "
                    "mask head on detections_per_img boxes"}
    table = evaluate_grid(model, dataset, widths, scales or list(model.scales), calib_dataset=calib,
                          calib_images=calib_images, batch_size=batch_size, mac_image_size=mac_size, metric=metric,
                          meta=meta)
    out = Path(out)
    title = f"{ckpt['model_name']} on {Path(annotations).name}"
    return table, [table.save(out / "detection_table.json"),
                   plot_detection_table(table.rows, out / "ap_mflops.png", title=title),
                   plot_detection_table(table.rows, out / "ap_backbone_mflops.png", title=title,
                                        cost="backbone_mflops")]


def describe_detection_table(table: QueryTable, written: list[Path]) -> list[str]:
    """The lines ``mutualnet detect eval`` prints for :func:`run_eval`'s result: one per (width, scale), then the
    files."""
    return [f"{'width':>6} {'scale':>5} {'box AP (%)':>10} {'mask AP (%)':>11} {'backbone MFLOPs':>15} {'MFLOPs':>10} "
            f"{'pareto':>6}"] + [
        f"{r['width']:>6.3f} {r['resolution']:>5d} {100 * r['box_ap']:>10.2f} {100 * r['mask_ap']:>11.2f} "
        f"{r['backbone_mflops']:>15.1f} {r['mflops']:>10.1f} {'*' if r['pareto'] else '':>6}" for r in table.rows] + [
        f"wrote {written[0]}, {written[1]} (whole detector) and {written[2]} (backbone + FPN)"]
