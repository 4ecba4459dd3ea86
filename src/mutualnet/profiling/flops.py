"""FLOPs (multiply-accumulates) and active parameters of one configuration.

Counted with ``torch.utils.flop_counter.FlopCounterMode``, which sees the sliced tensors the slimmable
layers actually compute with. As in the paper, "FLOPs" means multiply-accumulates of convolutions and
linear layers (the counter's FLOPs / 2); BatchNorm, activations and additions are not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import MutualNetError
from ..layers import active_num_params, allow_uncalibrated, use_config

__all__ = ["Profile", "profile", "count_macs"]


@dataclass(frozen=True)
class Profile:
    width: float
    resolution: int
    macs: int
    params: int
    depth: int | None = None  # None: full depth

    @property
    def mflops(self) -> float:
        return self.macs / 1e6

    def to_dict(self) -> dict:
        d = asdict(self) | {"mflops": self.mflops}
        if d["depth"] is None:  # full depth: as before depth existed
            d.pop("depth")
        return d


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``x`` (any configuration: only shapes matter)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), allow_uncalibrated(model), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def profile(model: nn.Module, width: float, resolution: int, *, batch_size: int = 1,
            depth: int | None = None) -> Profile:
    """MACs per image and active parameters of ``model`` at (``width``, ``resolution``, ``depth``).

    Counted from the forward pass, so the blocks a depth skips cost nothing (exact, not estimated). The
    model's configuration is restored afterwards.
    """
    if resolution < 1:
        raise MutualNetError(f"resolution must be positive, got {resolution}")
    with use_config(model, width, resolution, depth):
        p = next(model.parameters())
        x = torch.zeros(batch_size, getattr(model, "in_chans", 3), resolution, resolution, device=p.device,
                        dtype=p.dtype)
        macs = count_macs(model, x) // batch_size
        params = active_num_params(model)
    return Profile(width=float(width), resolution=int(resolution), macs=int(macs), params=int(params), depth=depth)
