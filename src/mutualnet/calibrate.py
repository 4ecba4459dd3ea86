"""Post-statistics of BatchNorm: re-estimate BN mean/variance for one (width, resolution) configuration.

A slimmable network trained with the sandwich rule cannot use one set of BN running statistics for all
its sub-networks: each width sees differently sized activations and each resolution different activation
statistics. Following US-Net and MutualNet, after training we run ``num_images`` training images (the
evaluation transform, no augmentation) through the network at that configuration and store the exact
mean and unbiased variance of every BN input under the configuration's key. Eval mode at that
(width, resolution) then uses them, and they travel in the state dict, so it is calibrated once.

The images are decoded once (:func:`mutualnet.data.load_images`) and reused for every configuration; each batch is
resized to the target resolution on the device, so calibration cost is the forward passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .data.datasets import load_images
from .data.preprocess import model_preprocessing, resize_batch
from .errors import MutualNetError
from .layers import (
    Resolution,
    SlimmableBatchNorm2d,
    check_depth,
    check_resolution,
    config_key,
    skipped_blocks,
    use_config,
)

__all__ = ["CalibrationResult", "calibrate", "calibrate_batches", "calibrated_configs", "is_calibrated"]


@dataclass(frozen=True)
class CalibrationResult:
    key: str
    width: float
    resolution: Resolution
    num_images: int
    seconds: float
    depth: int | None = None  # None: full depth

    @property
    def images_per_s(self) -> float:
        return self.num_images / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        return asdict(self) | {"images_per_s": self.images_per_s}


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def calibrate(model: nn.Module, dataset: Dataset | Tensor, width: float, resolution: int, num_images: int = 2000,
              batch_size: int = 200, device: str | torch.device | None = None, resize_from: int | None = None,
              seed: int = 0, num_workers: int = 0, depth: int | None = None,
              tol: float | None = None) -> CalibrationResult:
    """Re-estimate every BN's statistics at (``width``, ``resolution``, ``depth``) and store them under its key.

    Args:
        model: a slimmable model (its width and train/eval mode are restored afterwards).
        dataset: training images with the evaluation transform, or an image tensor from
            :func:`~mutualnet.data.load_images` (decode once, calibrate many configurations).
        width: any width in the model's range.
        resolution: input side; batches of another size are resized to it on the device, as the model's
            preprocessing record says (statistics are of the inputs it was trained on).
        num_images: images to use (the first ``num_images`` of a tensor; a seeded random subset of a dataset).
        batch_size: calibration batch size; BN layers normalise each batch with its own statistics during
            calibration (as in training), while the stored statistics are exact over all images.
        device: where to run (default: the model's device).
        resize_from: if given, the side the images must have before the on-device resize (the evaluation crop
            at the highest resolution); a mismatch means the data was prepared for another resolution.
        seed, num_workers: subset seed and loader workers when ``dataset`` is a Dataset.
        depth: blocks each elastic stage runs (None: full depth). The blocks a depth skips get no statistics.
        tol: stop before ``num_images`` once the statistics have converged (see :func:`calibrate_batches`);
            None: use all ``num_images``.

    Returns:
        A :class:`CalibrationResult` with the key, image count and time taken.
    """
    resolution = check_resolution(model, resolution)
    mode = model_preprocessing(model).resize
    if not any(isinstance(m, SlimmableBatchNorm2d) for m in model.modules()):
        raise MutualNetError("model has no slimmable BatchNorm layers to calibrate")
    if num_images is None or num_images <= 0:
        raise MutualNetError(f"number of calibration images must be positive, got {num_images}")
    if isinstance(dataset, Tensor):
        images = dataset[:num_images]
    else:
        images, _ = load_images(dataset, num_images, seed=seed, batch_size=batch_size, num_workers=num_workers)
    if resize_from is not None and tuple(images.shape[-2:]) != (resize_from, resize_from):
        raise MutualNetError(f"calibration images are {tuple(images.shape[-2:])}, expected {resize_from}x{resize_from}")
    dev = torch.device(device) if device is not None else _device_of(model)
    model.to(dev)
    batches = (resize_batch(images[i:i + batch_size].to(dev, non_blocking=True).float(), resolution, mode)
               for i in range(0, len(images), batch_size))
    return calibrate_batches(model, batches, width, resolution, depth=depth, tol=tol)


@torch.no_grad()
def calibrate_batches(model: nn.Module, batches: Iterable[Any], width: float, resolution: Resolution, *,
                      forward: Callable[[Any], Any] | None = None, depth: int | None = None,
                      tol: float | None = None) -> CalibrationResult:
    """The one calibration loop: run ``batches`` at (``width``, ``resolution``) and store every BN's statistics.

    Args:
        model: The slimmable model (classifier or detector); its configuration and mode are restored after.
        batches: Inputs ``forward`` accepts, already at ``resolution`` (any iterable, consumed once).
        width, resolution, depth: The configuration whose statistics are estimated (depth None: full depth).
        forward: How a batch goes through the network (default ``model(batch)``; a detector runs its
            transform and backbone).
        tol: Stop early once the statistics have converged: when a batch moved no BatchNorm's mean by more
            than ``tol`` of its standard deviation and no variance by more than ``tol`` of itself, in every
            channel (the batches after it would move them less: each is a smaller share of the total).
            Calibration is then paid for the images the statistics need, not a fixed count. None: all batches.

    Interrupted (an exception or Ctrl-C), no layer keeps statistics of part of the images.
    """
    bns = [m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d)]
    if not bns:
        raise MutualNetError("model has no slimmable BatchNorm layers to calibrate")
    if tol is not None and not (isinstance(tol, (int, float)) and 0 < tol < float("inf")):
        raise MutualNetError(f"calibration tolerance must be a positive number, got {tol}")
    forward = model if forward is None else forward
    was_training = model.training
    model.eval()
    start, count = time.perf_counter(), 0
    with use_config(model, width, resolution, depth):
        depth = model.slim_state.depth  # as the state holds it: None at full depth
        for bn in bns:
            bn.begin_calibration()
        try:
            before = None
            for batch in batches:
                forward(batch)
                count += len(batch)
                if tol is not None:
                    now = [(bn._calib.mean, bn._calib.variance()) for bn in bns if bn._calib.count]
                    if before is not None and _moved_less(before, now, tol):
                        break
                    before = now
            keys = {bn.end_calibration() for bn in bns}
        finally:
            for bn in bns:
                bn.abort_calibration()
            model.train(was_training)
    dev = _device_of(model)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    key = config_key(width, resolution, depth)
    keys.discard(None)
    if keys and keys != {key}:  # pragma: no cover - a layer outside the model's shared state
        raise RuntimeError(f"BN layers calibrated under different keys: {sorted(keys)}")
    if count == 0:
        raise MutualNetError("no calibration images")
    return CalibrationResult(key, float(width), resolution, count, seconds, depth)


def _moved_less(before: list[tuple[Tensor, Tensor]], now: list[tuple[Tensor, Tensor]], tol: float) -> bool:
    """Whether no channel's mean moved by ``tol`` standard deviations, nor its variance by ``tol`` of itself."""
    if len(before) != len(now):
        return False
    for (m0, v0), (m1, v1) in zip(before, now):
        var = v1.clamp_min(1e-12)
        if bool(((m1 - m0).abs() > tol * var.sqrt()).any()) or bool(((v1 - v0).abs() > tol * var).any()):
            return False
    return True


def calibrated_configs(model: nn.Module) -> list[str]:
    """Configuration keys (``w0.350_r224``) for which *every* BatchNorm holds calibrated statistics."""
    bns = [m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d)]
    if not bns:
        return []
    keys = set(bns[0].calibrated)
    for bn in bns[1:]:
        keys &= set(bn.calibrated)
    return sorted(keys)


def is_calibrated(model: nn.Module, width: float, resolution: int, depth: int | None = None) -> bool:
    """Whether eval mode at (width, resolution, depth) uses calibrated statistics in every BatchNorm that runs.

    Statistics stored for the width at any resolution (released weights, key ``w<width>_rany``) count at full
    depth. Below it, the BatchNorms of the blocks the depth skips hold none and need none.
    """
    depth = check_depth(model, depth)
    if depth is None:
        keys = set(calibrated_configs(model))
        return config_key(width, resolution) in keys or config_key(width, None) in keys
    key = config_key(width, resolution, depth)
    with use_config(model, width, resolution, depth):
        skipped = {id(m) for b in skipped_blocks(model) for m in b.modules()}
    return all(key in bn.calibrated for m in model.modules()
               if isinstance(bn := m, SlimmableBatchNorm2d) and id(bn) not in skipped)
