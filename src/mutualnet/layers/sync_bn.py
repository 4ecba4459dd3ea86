"""Synchronised slimmable BatchNorm: batch statistics over every process of a ``torchrun`` job."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

from ..errors import MutualNetError
from .slimmable import SlimmableBatchNorm2d

__all__ = ["SyncSlimmableBatchNorm2d", "convert_sync_batchnorm"]


class SyncSlimmableBatchNorm2d(SlimmableBatchNorm2d):
    """:class:`SlimmableBatchNorm2d` whose training statistics are computed over all processes.

    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` would replace our layers with fixed-width ones and
    break slimming; this subclass keeps the slicing and only changes how batch statistics are formed:
    each process computes its per-channel count, mean and sum of squared deviations, one differentiable
    all-reduce exchanges them, and the global mean and variance are combined exactly (Chan et al.).
    Gradients flow through the exchange, so the result equals BatchNorm over the global batch.
    """

    process_group = None

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and not self.calibrating and dist.is_initialized()
                and dist.get_world_size(self.process_group) > 1):
            return super().forward(x)
        c = self.active_channels()
        if x.shape[1] != c:
            return super().forward(x)  # raises the usual channel error
        world, rank = dist.get_world_size(self.process_group), dist.get_rank(self.process_group)
        xf = x.float()
        n = xf.numel() // c
        mean = xf.mean((0, 2, 3))
        m2 = (xf - mean.view(1, -1, 1, 1)).square().sum((0, 2, 3))
        rows = xf.new_zeros(world, 2 * c + 1)
        rows = rows.index_put((torch.tensor([rank], device=x.device),), torch.cat([mean, m2, mean.new_tensor([n])]))
        rows = dist_fn.all_reduce(rows, group=self.process_group)  # an all-gather that autograd can see
        counts = rows[:, -1:]
        total = counts.sum()
        g_mean = (rows[:, :c] * counts).sum(0) / total
        g_m2 = (rows[:, c:2 * c] + counts * (rows[:, :c] - g_mean).square()).sum(0)
        var = g_m2 / total
        if self.tracks_running_stats_now():
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                mom = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = g_m2 / (total - 1).clamp_min(1)
                self.running_mean.lerp_(g_mean.to(self.running_mean.dtype), mom)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), mom)
        scale = self.weight[:c] * torch.rsqrt(var + self.eps)
        y = (xf - g_mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + self.bias[:c].view(1, -1, 1, 1)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, process_group=None) -> nn.Module:  # noqa: ANN001
    """Switch every :class:`SlimmableBatchNorm2d` of ``model`` to sync mode in place (same weights, same keys)."""
    for m in model.modules():
        if type(m) is SlimmableBatchNorm2d:
            m.__class__ = SyncSlimmableBatchNorm2d
            m.process_group = process_group
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, SlimmableBatchNorm2d):
            raise MutualNetError(f"sync BN supports slimmable BatchNorm only, found {type(m).__name__}")
    return model
