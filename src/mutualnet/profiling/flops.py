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

__all__ = ["Profile", "profile", "count_macs", "profile_model"]


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


def profile_model(name: str, width: float | None = None, resolution: int | None = None, *, grid: bool = False,
                  width_step: float = 0.05, resolutions: list[int] | None = None, latency: bool = False,
                  device: str = "cpu", batch_size: int = 1, threads: int | None = None, depth: int | None = None,
                  **model_kwargs) -> list[dict]:
    """What ``mutualnet profile`` does: MACs, parameters and (with ``latency``) median latency of a registered
    model's configurations, without weights.

    Args:
        name: A registered model; ``model_kwargs`` (``num_classes``, ``width_range``, ``in_chans``; None: the
            registry's) build it.
        width, resolution: One configuration (default: the top width at the model's input size).
        grid: Every width of the range (step ``width_step``) at every one of ``resolutions`` (default: the
            model's recipe) instead.
        latency, device, batch_size, threads: Also time each configuration
            (:func:`~mutualnet.profiling.measure_latency`).
        depth: Blocks each stage runs (None: full depth); the model is then built with elastic depth.

    Returns:
        One :meth:`Profile.to_dict` row per configuration, with ``latency_ms``, ``device``, ``batch_size`` and
        ``threads`` when timed.
    """
    from ..models import create_model, model_info
    from .latency import measure_latency

    info = model_info(name)
    depth_range = None
    if depth is not None:  # any depth of the architecture: build it elastic
        full = getattr(create_model(name), "depth_range", None)
        depth_range = None if full is None else (1, full.hi)
    model = create_model(name, depth_range=depth_range, **model_kwargs)
    if grid:
        if width is not None or resolution is not None:
            raise MutualNetError("--grid profiles every configuration; drop --width/--resolution")
        configs = [(w, r) for r in (resolutions or info.resolutions) for w in model.width_range.grid(width_step)]
    else:
        configs = [(model.width_range[1] if width is None else width,
                    info.input_size if resolution is None else resolution)]
    rows = []
    for w, r in configs:
        if r < model.min_resolution:
            raise MutualNetError(f"resolution {r} is too small for {name} (needs at least {model.min_resolution})")
        row = profile(model, w, r, depth=depth).to_dict()
        if latency:
            lat = measure_latency(model, w, r, device=device, batch_size=batch_size, threads=threads,
                                  depth=depth)
            row |= {"latency_ms": lat.median_ms, "device": lat.device, "batch_size": lat.batch_size,
                    "threads": lat.threads}
        rows.append(row)
    return rows
