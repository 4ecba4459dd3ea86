"""A compiled training step: ``torch.compile`` of the slimmable model, one graph per distinct sub-network.

``torch.compile`` specialises a graph on everything Python computes from, including the active width: every
new width value would be a new graph (minutes of compilation each on a CPU). But channel rounding makes many
widths the same network, so :class:`CompiledModel` snaps each sampled width to the first width it has seen
with the same channels everywhere (:func:`mutualnet.layers.channel_config`): the computation is identical, and
the number of graphs is the number of distinct networks the sandwich visits. Resolutions are handled by
compiling with automatic dynamic shapes (the second resolution seen makes the spatial sizes symbolic).

The top width keeps its own graph even when narrower widths round to the same channels, because only it
updates the shared BatchNorm running statistics (:meth:`SlimmableBatchNorm2d.tracks_running_stats_now`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..layers import channel_config
from .step import SubNet

__all__ = ["CompiledModel"]


class CompiledModel:
    """``model`` with a compiled forward, used by :func:`~mutualnet.train.step.train_step` in its place.

    Args:
        model: the slimmable model (its parameters, state and width are those of the returned object).
        backend: ``torch.compile`` backend: ``inductor`` generates fused kernels (C++ on CPU, Triton on CUDA);
            ``aot_eager`` only captures the graphs (a quick check that the step compiles as it should).
        mode: ``torch.compile`` mode (None: the default; ``max-autotune`` compiles longer).
        max_graphs: how many graphs Dynamo may keep per function before it falls back to eager.
    """

    def __init__(self, model: nn.Module, *, backend: str = "inductor", mode: str | None = None,
                 max_graphs: int = 64) -> None:
        self.model = model
        for name in ("recompile_limit", "cache_size_limit"):  # the option was renamed across versions
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), max_graphs))
        self.compiled = torch.compile(model, backend=backend, mode=mode)
        self._first: dict[tuple, float] = {}
        self.top = float(model.width_range[1])

    def snap(self, width: float) -> float:
        """The first width seen that is the same network as ``width`` (the top width maps to itself)."""
        width = float(width)
        if abs(width - self.top) < 1e-9:
            return self.top
        return self._first.setdefault(channel_config(self.model, width), width)

    def snap_subnets(self, subnets: list[SubNet]) -> list[SubNet]:
        return [dataclasses.replace(s, width=self.snap(s.width)) for s in subnets]

    @property
    def distinct_networks(self) -> int:
        """Distinct sub-networks (below the top width) seen so far: at most one graph each per resolution."""
        return len(self._first)

    # the model's configuration is the compiled one's: mutualnet.use_config(compiled, w, r, d) (the one writer)
    # checks against these ranges and switches the model's state
    @property
    def slim_state(self):  # noqa: ANN201
        return self.model.slim_state

    @property
    def width_range(self):  # noqa: ANN201
        return self.model.width_range

    @property
    def depth_range(self):  # noqa: ANN201
        return getattr(self.model, "depth_range", None)

    @property
    def min_resolution(self) -> int:
        return getattr(self.model, "min_resolution", 1)

    def modules(self):  # noqa: ANN201
        return self.model.modules()

    def __call__(self, x: Tensor) -> Tensor:
        return self.compiled(x)
