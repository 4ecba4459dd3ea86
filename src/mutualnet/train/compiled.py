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
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers import channel_config
from .step import SubNet

__all__ = ["CompiledModel", "AutoCompile", "CompileBreakEven", "graphs_to_compile", "MEASURED_COMPILE"]


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


# -- run.compile: auto ------------------------------------------------------------------------------------------
# What compiling costs and saves, measured by benchmarks/bench_compile.py (docs/benchmarks.md, issue 15:
# resnet20_cifar, batch 128, 1 thread, inductor, empty cache): 298.9 s for 4 graphs, the compiled step 0.806x
# the eager one. No such measurement exists for a GPU yet (benchmarks/gpu.sh prints it), so auto stays eager there.
MEASURED_COMPILE = {"cpu": {"seconds_per_graph": 298.9 / 4, "step_ratio": 0.806}}


@dataclass(frozen=True)
class CompileBreakEven:
    """When compiling the step pays: ``compile_s`` once against ``eager_step_s - compiled_step_s`` every step."""

    compile_s: float
    eager_step_s: float
    compiled_step_s: float

    @property
    def steps(self) -> float:
        """Steps after which the compiled run has caught up with the eager one (inf: it never does)."""
        saving = self.eager_step_s - self.compiled_step_s
        return math.inf if saving <= 0 else self.compile_s / saving

    def pays(self, steps_left: int) -> bool:
        return steps_left > self.steps


def graphs_to_compile(model: nn.Module, num_resolutions: int) -> int:
    """Graphs a run's compiled step will build: one per distinct network its widths round to (the top width has its
    own), and, with several resolutions, a second once the spatial sizes turn symbolic."""
    lo, hi = model.width_range
    networks = {channel_config(model, lo + (hi - lo) * i / 1000) for i in range(1000)}
    return (len(networks) + 1) * (2 if num_resolutions > 1 else 1)


class AutoCompile:
    """``run.compile: auto``: the step runs eagerly for ``probe`` steps, which measure it; then it is compiled if
    the steps left exceed the break-even (:class:`CompileBreakEven`) from that measurement and
    :data:`MEASURED_COMPILE` for the device.

    Args:
        model: the slimmable model.
        steps_left: iterations the run still plans when it starts.
        num_resolutions: training resolutions (see :func:`graphs_to_compile`).
        device_type: ``cpu`` / ``cuda``: which measurement of compilation applies.
        backend: ``torch.compile`` backend once it compiles.
        probe: eager steps timed before deciding (the first is a warm-up and not counted).
        reduce: turns the local median step time into the one every process decides on (distributed runs).
    """

    def __init__(self, model: nn.Module, *, steps_left: int, num_resolutions: int, device_type: str,
                 backend: str = "inductor", probe: int = 4,
                 reduce: Callable[[float], float] | None = None) -> None:
        self.model, self.steps_left, self.backend, self.probe = model, steps_left, backend, max(probe, 2)
        self.num_resolutions, self.device_type, self.reduce = num_resolutions, device_type, reduce
        self.times: list[float] = []
        self.compiled: CompiledModel | None = None
        self.break_even: CompileBreakEven | None = None
        self.decided = False
        self.message = ""

    def step_model(self) -> nn.Module | CompiledModel:
        return self.compiled or self.model

    def observe(self, seconds: float) -> str | None:
        """Record one eager step's time; after ``probe`` steps, decide once and return the line that says why."""
        if self.decided:
            return None
        self.times.append(seconds)
        if len(self.times) < self.probe:
            return None
        self.decided = True
        eager = statistics.median(self.times[1:])
        if self.reduce is not None:
            eager = self.reduce(eager)
        left = self.steps_left - len(self.times)
        measured = MEASURED_COMPILE.get(self.device_type)
        if measured is None:
            self.message = (f"run.compile auto: no measured compilation cost on {self.device_type}; the step stays "
                            "eager (run.compile: true compiles it)")
            return self.message
        graphs = graphs_to_compile(self.model, self.num_resolutions)
        self.break_even = CompileBreakEven(graphs * measured["seconds_per_graph"], eager,
                                           eager * measured["step_ratio"])
        pays = self.break_even.pays(left)
        self.message = (f"run.compile auto: eager step {eager:.3f} s; compiling {graphs} graphs (~"
                        f"{self.break_even.compile_s:.0f} s) pays back after {self.break_even.steps:.0f} steps, "
                        f"{left} left: {'compiling' if pays else 'staying eager'}")
        if pays:
            self.compiled = CompiledModel(self.model, backend=self.backend)
        return self.message
