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
from ..errors import MutualNetError
from ..io import atomic_write
from ..layers import active_num_params, allow_uncalibrated, use_config
from ..search.table import QueryTable, pareto_frontier
from .data import CocoDetection, collate
from .model import SlimmableMaskRCNN

__all__ = ["calibrate_detector", "coco_results", "coco_eval", "evaluate_coco", "detector_macs", "evaluate_grid",
           "plot_table", "COST_AXES", "active_num_params"]


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


# the two cost axes: the whole detector (heads included, dominated by them at small widths) and the backbone
# (+ FPN), the part the width multiplier scales -- the paper's Fig. 10 axis
COST_AXES = {"mflops": ("pareto", "MFLOPs of the whole detector (MACs, fixed image)"),
             "backbone_mflops": ("pareto_backbone", "backbone + FPN MFLOPs (MACs, fixed image)")}


def plot_table(rows: list[dict], path: str | os.PathLike, title: str = "", cost: str = "mflops") -> Path:
    """AP vs ``cost`` (box and mask), one line per width, the Pareto frontier (box AP) highlighted.

    ``cost`` is ``mflops`` (the whole detector) or ``backbone_mflops`` (backbone + FPN), see ``COST_AXES``.
    """
    if cost not in COST_AXES:
        raise MutualNetError(f"unknown cost axis {cost!r}; use one of {', '.join(COST_AXES)}")
    flag, xlabel = COST_AXES[cost]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, key, name in ((axes[0], "box_ap", "box AP"), (axes[1], "mask_ap", "mask AP")):
        for w in sorted({r["width"] for r in rows}):
            pts = sorted((r[cost], 100 * r[key], r["resolution"]) for r in rows if r["width"] == w)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4, label=f"{w:g}x")
            for x, y, s in pts:
                ax.annotate(str(s), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        front = sorted((r[cost], 100 * r[key]) for r in rows if r.get(flag))
        if front:  # the legend lists only what is drawn
            ax.plot([p[0] for p in front], [p[1] for p in front], "k--" if len(front) > 1 else "k*", lw=1, ms=9,
                    label="Pareto (box AP)", zorder=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{name} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(title="width", fontsize=8)  # widths, and the frontier when it has a point
    if title:
        fig.suptitle(title)
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or None))
    finally:
        plt.close(fig)
    return path
