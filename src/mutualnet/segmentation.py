"""Per-pixel (segmentation) networks: mean IoU per (width, resolution), and their query table.

MutualNet's deployment story is the same for a segmentation network as for a classifier (paper, Sec. 3.4):
calibrate each configuration's BatchNorm statistics, measure it, keep the table, select within a budget. Only the
measure differs, as detection's AP does:

* **mean IoU** (:func:`confusion_matrix`, :func:`segmentation_scores`): a ``C x C`` confusion matrix of
  (label, prediction) over every labelled pixel, pixels labelled ``ignore_index`` (255, the VOC / Cityscapes
  convention torchvision's references follow) left out; IoU of a class is ``TP / (TP + FP + FN)``, and the mean is
  over the classes that occur in the labels or the predictions (a class absent from both has no IoU, where
  torchvision's reference would print NaN). Scores are in [0, 1], as the table's AP is.
* **where it is measured**: each image goes in at the configuration's resolution (resized as the model's
  preprocessing says, as the classification search does), and the output map is resized (bilinear) to the labels'
  size before the arg-max, so every configuration is scored on the same pixels.
* **the table** (:func:`search_segmentation`): a :class:`~mutualnet.search.QueryTable` with metric ``miou``, a row
  per (width, resolution) with ``miou``, ``pixel_acc``, MACs and parameters, BN calibrated per row by
  :func:`mutualnet.calibrate.calibrate`; ``mutualnet select`` and ``mutualnet plot`` read it as any other table.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .calibrate import calibrate
from .data.preprocess import model_preprocessing, resize_batch
from .errors import MutualNetError
from .layers import SlimmableBatchNorm2d, check_resolution, config_key, use_config
from .profiling import measure_latency, profile
from .search.build import SearchPlan, distinct_widths
from .search.plot import plot_tables
from .search.table import QueryTable
from .train.step import IGNORE_INDEX, one_output

__all__ = ["IGNORE_INDEX", "confusion_matrix", "segmentation_scores", "evaluate_segmentation", "search_segmentation"]



def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``C x C`` counts: row = label, column = predicted class, over the pixels not labelled ``ignore_index``.

    Raises:
        MutualNetError: a label outside ``0 .. num_classes - 1`` that is not ``ignore_index`` (the data does not
            belong to this network).
    """
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise MutualNetError(f"a pixel is labelled {bad}, the network predicts {num_classes} classes "
                             f"(0..{num_classes - 1}; {ignore_index} marks pixels to ignore)")
    return torch.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes).cpu()


def segmentation_scores(confmat: Tensor) -> dict:
    """Mean IoU, pixel accuracy and the IoU of each class from a :func:`confusion_matrix` (classes absent from the
    labels and the predictions alike: ``None``, left out of the mean)."""
    h = confmat.double()
    total = float(h.sum())
    if total == 0:
        raise MutualNetError("no labelled pixels to score (every label is the ignore index)")
    tp = h.diag()
    union = h.sum(0) + h.sum(1) - tp
    iou = [float(a / u) if u > 0 else None for a, u in zip(tp, union)]
    present = [v for v in iou if v is not None]
    return {"miou": sum(present) / len(present), "pixel_acc": float(tp.sum()) / total, "iou": iou}


def _check_data(images: Tensor, masks: Tensor, what: str) -> None:
    if not (isinstance(images, Tensor) and images.dim() == 4 and images.is_floating_point()):
        raise MutualNetError(f"{what} images must be a float tensor (N, C, H, W)")
    if not (isinstance(masks, Tensor) and masks.dim() == 3 and not masks.is_floating_point()
            and masks.shape[0] == images.shape[0]):
        raise MutualNetError(f"{what} labels must be an integer tensor (N, H, W) with one map per image, got "
                             f"{tuple(getattr(masks, 'shape', ()))} for {tuple(images.shape)} images")
    if len(images) == 0:
        raise MutualNetError(f"no {what} images")
    if not bool(images.isfinite().all()):
        raise MutualNetError(f"{what} images hold NaN or infinite values")


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, images: Tensor, masks: Tensor, width: float, resolution: int, *,
                          batch_size: int = 32, depth: int | None = None, ignore_index: int = IGNORE_INDEX) -> dict:
    """Mean IoU and pixel accuracy of ``model`` at (``width``, ``resolution``) on ``images`` / ``masks``.

    ``images`` ``(N, C, H, W)`` are resized to ``resolution`` as the model's preprocessing says; the output map
    (a converted torchvision model: ``mutualnet.slim(model, output="out")``) is resized to the labels' ``H x W``
    before the arg-max. Uses the calibrated BN statistics of the configuration (eval mode refuses a configuration
    without them below the top width). Returns :func:`segmentation_scores` plus ``confusion`` (the matrix).
    """
    _check_data(images, masks, "evaluation")
    resolution = check_resolution(model, resolution)
    mode, dev = model_preprocessing(model).resize, next(model.parameters()).device
    was_training = model.training
    model.eval()
    confmat = None
    try:
        with use_config(model, width, resolution, depth):
            for i in range(0, len(images), batch_size):
                x = resize_batch(images[i:i + batch_size].to(dev).float(), resolution, mode)
                y = masks[i:i + batch_size].to(dev)
                logits = one_output(model(x))
                if logits.dim() != 4:
                    raise MutualNetError(f"the model's output is {tuple(logits.shape)}, not a per-pixel map "
                                         "(N, classes, H, W)")
                if logits.shape[2:] != y.shape[1:]:
                    logits = F.interpolate(logits.float(), size=y.shape[1:], mode="bilinear", align_corners=False)
                cm = confusion_matrix(logits.argmax(1), y, logits.shape[1], ignore_index)
                confmat = cm if confmat is None else confmat + cm
    finally:
        model.train(was_training)
    return segmentation_scores(confmat) | {"confusion": confmat}


def search_segmentation(model: nn.Module, val: tuple[Tensor, Tensor], calib: Tensor,
                        plan: SearchPlan | None = None, *, out: str | Path | None = None, meta: dict | None = None,
                        ignore_index: int = IGNORE_INDEX, threads: int | None = None, **what: object) -> QueryTable:
    """The mIoU-MFLOPs query table of a per-pixel network: calibrate and score every width x resolution.

    Args:
        model: A slimmable per-pixel network (e.g. ``mutualnet.slim(tv_segmentation_model, ..., output="out")``);
            it keeps each configuration's calibrated statistics.
        val: ``(images, masks)`` the configurations are scored on (images at the highest resolution).
        calib: Training images (evaluation transform, highest resolution) BN statistics are estimated from.
        plan: The grid and calibration settings (:class:`~mutualnet.search.SearchPlan`); or its fields as keywords
            (``resolutions=``, ``widths=``, ``calib_images=``, ``batch_size=``, ``latency=``, ...). Every
            configuration is scored on all of ``val`` (``val_images``: the first so many): successive halving,
            shards and ``resize_then_crop`` are classification-search options.
        out: Folder to write ``query_table.json`` (+ ``.csv``) and ``miou_mflops.png`` (mIoU against MFLOPs, the
            frontier coloured by resolution) into; None: write nothing.
        meta: Table metadata to record (model, dataset, ...).

    Returns:
        The table (metric ``miou``); widths that round to the same network share a row's numbers and statistics.
    """
    if plan is None:
        plan = SearchPlan.of(model, **what)
    elif what:
        raise MutualNetError(f"give a plan or its fields, not both ({', '.join(sorted(what))})")
    if plan.halving is not None or plan.shard is not None or plan.resize_then_crop:
        raise MutualNetError("the segmentation search scores every configuration on all its images: successive "
                             "halving, shards and resize_then_crop are classification-search options")
    images, masks = val
    _check_data(images, masks, "validation")
    if plan.val_images is not None:
        images, masks = images[:plan.val_images], masks[:plan.val_images]
    dev = next(model.parameters()).device
    same = distinct_widths(model, plan.widths)
    rows: dict[tuple, dict] = {}
    for r in plan.resolutions:
        for d in plan.levels:
            for w in plan.widths:
                key = config_key(w, r, d)
                if same[w] != w:  # the same network as a narrower-or-equal width already measured: a copy
                    src = config_key(same[w], r, d)
                    for m in model.modules():
                        if isinstance(m, SlimmableBatchNorm2d) and src in m.calibrated:
                            m.calibrated[key] = m.calibrated[src]
                    rows[(w, r, d)] = dict(rows[(same[w], r, d)], width=w)
                    continue
                calibrate(model, calib, w, r, num_images=plan.calib_images,
                          batch_size=plan.calib_batch_size, depth=d, tol=plan.calib_tol)
                scores = evaluate_segmentation(model, images, masks, w, r, batch_size=plan.batch_size, depth=d,
                                               ignore_index=ignore_index)
                cost = profile(model, w, r, depth=d)
                lat = (measure_latency(model, w, r, device=str(dev), batch_size=plan.latency_batch_size,
                                       threads=threads, depth=d).median_ms if plan.latency else None)
                rows[(w, r, d)] = {"width": w, "resolution": r, "miou": scores["miou"],
                                   "pixel_acc": scores["pixel_acc"], "macs": cost.macs, "params": cost.params,
                                   "latency_ms": lat, "calibrated": True} | ({} if d is None else {"depth": d})
    table = QueryTable(list(rows.values()), dict(meta or {}) | {
        "widths": list(plan.widths), "resolutions": list(plan.resolutions), "val_images": len(images),
        "calibration": {"images": min(plan.calib_images, len(calib)), "batch_size": plan.calib_batch_size},
        "ignore_index": ignore_index, "resize": model_preprocessing(model).resize,
        "miou": "mean over classes present in labels or predictions of TP / (TP + FP + FN), at the labels' size"},
        metric="miou")
    if out is not None:
        out = Path(out)
        table.save(out / "query_table.json")
        plot_tables([table], [str(table.meta.get("model", "segmentation"))], out / "miou_mflops.png",
                    title=f"{table.meta.get('model', 'segmentation network')}: mean IoU per width x resolution")
    return table
