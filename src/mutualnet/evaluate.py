"""Accuracy of one (width, resolution) configuration: the one evaluation loop of training, search and demos."""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .data.transforms import model_resize, resize_batch
from .errors import MutualNetError
from .layers import Resolution, use_config

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple[Tensor, Tensor] | DataLoader, width: float, resolution: Resolution,
             device: torch.device | str | None = None, *, batch_size: int = 200,
             autocast: contextlib.AbstractContextManager | None = None, max_batches: int | None = None,
             distributed: bool = False, channels_last: bool = False, resize: str | None = None) -> dict:
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
        resize: How batches are brought to ``resolution`` (None: the mode recorded on the model).

    Returns:
        ``{"top1", "top5", "loss", "count"}``.
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    resize = model_resize(model, resize)
    if isinstance(data, tuple):
        images, labels = data
        batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size))
    else:
        batches = data
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=dev)  # correct1, correct5, loss, count
    try:
        with use_config(model, width, resolution):
            for i, (x, y) in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                x, y = x.to(dev, non_blocking=True).float(), torch.as_tensor(y).to(dev, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast or contextlib.nullcontext():
                    logits = model(resize_batch(x, resolution, resize)).float()
                hit = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
                sums += torch.stack([hit[:, 0].sum(), hit.any(1).sum(), F.cross_entropy(logits, y, reduction="sum"),
                                     torch.tensor(len(y), device=dev)]).double()
    finally:
        model.train(was_training)
    if distributed and dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    c1, c5, loss, n = sums.tolist()
    if n == 0:
        raise MutualNetError("the validation set is empty")
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n, "count": int(n)}
