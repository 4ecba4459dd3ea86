"""SGD with selective weight decay, and per-iteration schedules with linear warm-up (cosine, or step decay)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import SlimmableConv2d

__all__ = ["param_groups", "build_optimizer", "cosine_lambda", "step_lambda", "build_scheduler"]


def _is_depthwise(m: nn.Module) -> bool:
    if isinstance(m, SlimmableConv2d):
        return m.depthwise
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """Two groups: decayed conv/linear weights and everything else (BN, biases, depthwise kernels).

    Decaying BN scales and biases only pulls them toward zero without regularising capacity, and
    depthwise kernels are so small that decay hurts (the MobileNet papers' advice).

    Args:
        model: The network.
        weight_decay: Decay of the first group.
        decay_all: Decay every parameter instead (the plain PyTorch behaviour).
    """
    if decay_all:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay: dict[int, nn.Parameter] = {}
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear) and not _is_depthwise(m) and m.weight.requires_grad:
            decay[id(m.weight)] = m.weight
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in decay]
    return [{"params": list(decay.values()), "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, momentum: float = 0.9, nesterov: bool = True,
                    weight_decay: float = 4e-5, decay_all: bool = False) -> torch.optim.SGD:
    """SGD (Nesterov) over :func:`param_groups`.

    The decay is applied by the optimizer, once per step, to the gradient the sub-networks accumulated. That is
    BigNAS's "regularise only the biggest child" for weight decay: the widest sub-network uses every weight, so
    its L2 term adds ``weight_decay * w`` to every weight once per step, however many sub-networks ran; decaying
    each sub-network's slice instead would decay the channels the narrow ones share ``num_subnets`` times.
    """
    groups = [g for g in param_groups(model, weight_decay, decay_all) if g["params"]]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


def cosine_lambda(total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0):
    """Multiplier of the base LR at iteration ``step``: linear warm-up, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def step_lambda(milestones: list[int], warmup_steps: int = 0, gamma: float = 0.1, warmup_start: float = 0.001):
    """Multiplier of the base LR at iteration ``step``: linear warm-up from ``warmup_start``, then ``gamma`` at
    every milestone passed (torchvision's detection recipe)."""

    def factor(step: int) -> float:
        warm = 1.0 if step >= warmup_steps else warmup_start + (1 - warmup_start) * step / max(warmup_steps, 1)
        return warm * gamma ** sum(step >= m for m in milestones)

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                    min_lr: float = 0.0, *, milestones: list[int] | None = None,
                    gamma: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per iteration; its ``last_epoch`` is the iteration, so resume continues it.

    Cosine decay to ``min_lr`` (classification), or step decay by ``gamma`` at the ``milestones`` iterations
    (detection).
    """
    if milestones is not None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, step_lambda(milestones, warmup_steps, gamma))
    base = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(total_steps, warmup_steps, min_lr / base))
