"""Accuracy of one (width, resolution[, depth]) configuration: the one evaluation loop of training, search and demos."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from .data.preprocess import model_preprocessing, resize_batch
from .errors import MutualNetError
from .layers import Resolution, use_config

__all__ = ["evaluate", "hits"]


def _batches(data: tuple[Tensor, Tensor] | Iterable, batch_size: int, start: int = 0, stop: int | None = None):
    """Batches of images ``start:stop`` of in-memory ``(images, labels)`` or of a loader's dataset (any other
    iterable of batches: as it is)."""
    if isinstance(data, tuple):
        images, labels = data
        stop = len(images) if stop is None else stop
        return ((images[i:min(i + batch_size, stop)], labels[i:min(i + batch_size, stop)])
                for i in range(start, stop, batch_size))
    if start == 0 and stop is None:
        return data
    stop = len(data.dataset) if stop is None else stop
    return DataLoader(Subset(data.dataset, range(start, stop)), batch_size=batch_size, shuffle=False,
                      num_workers=data.num_workers)


@torch.no_grad()
def hits(model: nn.Module, data: tuple[Tensor, Tensor] | Iterable, width: float, resolution: Resolution, *,
         batch_size: int = 200, start: int = 0, stop: int | None = None, device: torch.device | str | None = None,
         autocast: contextlib.AbstractContextManager | None = None, max_batches: int | None = None,
         channels_last: bool = False, depth: int | None = None) -> tuple[Tensor, Tensor, float]:
    """The one evaluation loop: per-image top-1 and top-5 hits (bool, in order) and the summed cross-entropy.

    ``data``: in-memory ``(images, labels)`` (split into ``batch_size`` batches), a loader, or any iterable of
    batches; ``start``/``stop``: only those images (of the tensors or of the loader's dataset; successive halving
    validates a configuration on the images it has not seen yet). Each batch is resized to ``resolution`` on the
    device (the paper's test-time recipe, in the resize mode of the model's preprocessing record) and run at
    (``width``, ``resolution``, ``depth``: None is the full depth); the model's configuration and mode are restored
    after. :func:`evaluate` sums them; the search's successive halving compares configurations image by image.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    batches = _batches(data, batch_size, start, stop)
    mode = model_preprocessing(model).resize
    was_training = model.training
    model.eval()
    h1, h5, loss = [], [], torch.zeros((), dtype=torch.float64, device=dev)
    try:
        with use_config(model, width, resolution, depth):
            for i, (x, y) in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                x, y = x.to(dev, non_blocking=True).float(), torch.as_tensor(y).to(dev, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast or contextlib.nullcontext():
                    logits = model(resize_batch(x, resolution, mode)).float()
                hit = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
                h1.append(hit[:, 0])
                h5.append(hit.any(1))
                loss += F.cross_entropy(logits, y, reduction="sum").double()
    finally:
        model.train(was_training)
    if not h1:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool), 0.0
    return torch.cat(h1).cpu(), torch.cat(h5).cpu(), float(loss)


def evaluate(model: nn.Module, data: tuple[Tensor, Tensor] | DataLoader, width: float, resolution: Resolution,
             device: torch.device | str | None = None, *, batch_size: int = 200,
             autocast: contextlib.AbstractContextManager | None = None, max_batches: int | None = None,
             distributed: bool = False, channels_last: bool = False, depth: int | None = None) -> dict:
    """Top-1 / top-5 accuracy (%), mean cross-entropy and image count of ``model`` at (``width``, ``resolution``).

    Args:
        model: A slimmable classifier; its configuration and train/eval mode are restored afterwards.
        data: ``(images, labels)`` tensors (split into ``batch_size`` batches) or a loader of such batches;
            every batch is resized to ``resolution`` on the device (the paper's test-time recipe).
        device: Where to run (default: the model's device).
        autocast: Mixed-precision context for the forward passes.
        max_batches: Stop after this many batches (a quick look during training).
        distributed: Sum the counts over all processes (each evaluates its own shard).
        channels_last: Feed channels-last inputs (as the model was trained).
        depth: Blocks each elastic stage runs (None: full depth).

    Returns:
        ``{"top1", "top5", "loss", "count"}``.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    h1, h5, loss = hits(model, data, width, resolution, batch_size=batch_size, device=dev, autocast=autocast,
                        max_batches=max_batches, channels_last=channels_last, depth=depth)
    sums = torch.tensor([float(h1.sum()), float(h5.sum()), loss, float(len(h1))], dtype=torch.float64, device=dev)
    if distributed and dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    c1, c5, loss, n = sums.tolist()
    if n == 0:
        raise MutualNetError("the validation set is empty")
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "count": int(n)}
