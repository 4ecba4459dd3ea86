"""The active configuration of a model: its width, its input resolution and its depth, in one place.

Every slimmable layer of a model, every elastic stage and the model itself hold the *same* :class:`SlimState`
object (:func:`bind_state` makes it so when a model is built). This module is its one writer:
:func:`set_config` / :func:`use_config` check a configuration and write its fields, :func:`set_width` /
:func:`use_width` the width alone. Everything else (the training step, calibration, evaluation, export,
``AdaptiveNet``, the detector, the compiled model) goes through them, so a switch is a check plus three
attribute writes, whatever the size of the model, and no one keeps a second copy of the configuration.

Layers *read* the state: a convolution its width, BatchNorm the whole configuration (to pick the statistics
calibrated for it), an elastic stage its depth (:class:`mutualnet.layers.ElasticSequential`), the model's
forward the resolution (to check its input).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

from ..errors import MutualNetError
from ..validate import MAX_RESOLUTION
from .helpers import width_key

__all__ = [
    "Resolution",
    "SlimState",
    "WidthRange",
    "DepthRange",
    "config_key",
    "bind_state",
    "width_range_of",
    "depth_range_of",
    "check_resolution",
    "check_depth",
    "set_config",
    "get_config",
    "get_depth",
    "use_config",
    "set_width",
    "get_width",
    "use_width",
]

Resolution = int | tuple[int, int]


@dataclass
class SlimState:
    """The active configuration, shared by every slimmable layer of one model (the only copy of it).

    Written by :func:`set_config` / :func:`use_config` (and :func:`set_width`); never by a forward pass.
    """

    width: float = 1.0
    resolution: Resolution | None = None  # input side the model is configured for; None: not fixed (any input)
    depth: int | None = None  # blocks each elastic stage runs (its first ones); None: all of them (full depth)


class WidthRange(NamedTuple):
    """The widths a model was built and trained for, ``lo <= w <= hi``; the one place that says "in range".

    A tuple, so ``lo, hi = model.width_range`` keeps working. Comparisons allow 1e-6 of float round-off
    (``0.1 + 0.2`` is in ``[0.3, 1.0]``).
    """

    lo: float
    hi: float

    def contains(self, width: float) -> bool:
        """Whether ``width`` is in the range."""
        return self.lo - 1e-6 <= float(width) <= self.hi + 1e-6

    def check(self, width: float, what: str = "width") -> float:
        """``width`` as a float; :class:`MutualNetError` naming the range when it is outside."""
        if not self.contains(width):
            raise MutualNetError(f"{what} {float(width):g} is outside this model's trained range "
                                 f"[{self.lo:g}, {self.hi:g}]")
        return float(width)

    def is_top(self, width: float) -> bool:
        """Whether ``width`` is the top of the range (the width whose running BN statistics are its own)."""
        return abs(float(width) - self.hi) <= 1e-6

    def grid(self, step: float = 0.05) -> list[float]:
        """``lo, lo + step, ..., hi`` (``hi`` always included): the widths a query table covers."""
        if not step > 0:
            raise MutualNetError(f"width step must be positive, got {step:g}")
        lo, hi = self.lo, self.hi
        n = int(round((hi - lo) / step + 1e-9))
        widths = [round(lo + i * step, 4) for i in range(n + 1) if lo + i * step <= hi + 1e-9]
        if not widths or abs(widths[-1] - hi) > 1e-6:
            widths.append(round(hi, 4))
        return widths


class DepthRange(NamedTuple):
    """The depths a model with elastic stages was trained for: each stage runs its first ``d`` blocks.

    ``hi`` is the full depth (the longest stage's number of blocks): the deepest network is always part of
    what a model was trained for. A model trained without elastic depth has ``lo == hi``.
    """

    lo: int
    hi: int

    @property
    def elastic(self) -> bool:
        """Whether the range holds more than the full depth."""
        return self.lo < self.hi

    def check(self, depth: int, what: str = "depth") -> int:
        """``depth`` as an int; :class:`MutualNetError` naming the range when it is outside or not a whole number."""
        if isinstance(depth, bool) or not isinstance(depth, int | float) or depth != int(depth):
            raise MutualNetError(f"{what} must be a whole number of blocks, got {depth!r}")
        if not self.lo <= int(depth) <= self.hi:
            raise MutualNetError(f"{what} {int(depth)} is outside this model's trained depth range "
                                 f"[{self.lo}, {self.hi}]")
        return int(depth)

    def grid(self) -> list[int]:
        """Every depth of the range, deepest first."""
        return list(range(self.hi, self.lo - 1, -1))


def config_key(width: float, resolution: Resolution | None, depth: int | None = None) -> str:
    """Key of one configuration, e.g. ``w0.350_r224`` (full depth) or ``w0.350_r224_d2`` (depth 2)."""
    if resolution is None:
        res = "any"
    elif isinstance(resolution, tuple):
        res = str(resolution[0]) if resolution[0] == resolution[1] else f"{resolution[0]}x{resolution[1]}"
    else:
        res = str(int(resolution))
    return f"w{width_key(width)}_r{res}" + ("" if depth is None else f"_d{int(depth)}")


def bind_state(model: nn.Module, state: SlimState | None = None) -> SlimState:
    """Make every module of ``model`` that reads the configuration share one state (the model's, or a new one).

    Called once when a model is built (and by whatever adds such a module later, e.g. ``reset_classifier``);
    afterwards a switch writes that one object.
    """
    if state is None:
        state = getattr(model, "slim_state", None)
        if not isinstance(state, SlimState):
            state = next((m.slim_state for m in model.modules() if isinstance(getattr(m, "slim_state", None),
                                                                              SlimState)), None) or SlimState()
    for m in model.modules():
        if isinstance(getattr(m, "slim_state", None), SlimState):
            m.slim_state = state
    model.slim_state = state
    return state


def _state(model: nn.Module) -> SlimState:
    """The model's shared state; a stack of layers assembled by hand is bound to one on first use."""
    state = getattr(model, "slim_state", None)
    if isinstance(state, SlimState):
        return state
    if not any(isinstance(getattr(m, "slim_state", None), SlimState) for m in model.modules()):
        raise MutualNetError("model has no slimmable layers")
    return bind_state(model)


def width_range_of(model: nn.Module) -> WidthRange | None:
    """The model's :class:`WidthRange` (its ``width_range`` attribute), None for a bare layer stack."""
    rng = getattr(model, "width_range", None)
    return None if rng is None else WidthRange(float(rng[0]), float(rng[1]))


def depth_range_of(model: nn.Module) -> DepthRange | None:
    """The model's :class:`DepthRange` (its ``depth_range`` attribute), None for a model without elastic stages."""
    rng = getattr(model, "depth_range", None)
    return None if rng is None else DepthRange(int(rng[0]), int(rng[1]))


def _check_width(model: nn.Module, width: float) -> float:
    width = float(width)
    rng = width_range_of(model)
    if rng is not None:
        return rng.check(width)
    for m in model.modules():  # a bare layer stack: the widest width its layers hold
        mw = getattr(m, "max_width", None)
        if mw is not None and width > mw + 1e-6:
            raise MutualNetError(f"width {width:g} exceeds the widest width the layers hold ({mw:g})")
    return width


def check_resolution(model: nn.Module, resolution: Resolution | None) -> Resolution | None:
    """``resolution`` as an int (or ``(h, w)`` when not square); an error below the model's smallest input."""
    if resolution is None:
        return None
    if isinstance(resolution, tuple | list):
        h, w = (int(v) for v in resolution)
        res: Resolution = h if h == w else (h, w)
    else:
        res = int(resolution)
    lo = getattr(model, "min_resolution", 1)
    if min(res if isinstance(res, tuple) else (res,)) < max(lo, 1):
        raise MutualNetError(f"resolution {resolution} is too small for {getattr(model, 'model_name', 'this model')} "
                             f"(needs at least {lo})")
    if max(res if isinstance(res, tuple) else (res,)) > MAX_RESOLUTION:
        raise MutualNetError(f"resolution {resolution} is above the limit of {MAX_RESOLUTION} pixels (memory)")
    return res


def check_depth(model: nn.Module, depth: int | None) -> int | None:
    """``depth`` as the state holds it: None for the full depth, else the blocks each elastic stage runs.

    An error for a model without elastic stages (any depth but None) or a depth outside its trained range.
    """
    if depth is None:
        return None
    rng = depth_range_of(model)
    if rng is None:
        raise MutualNetError(f"{getattr(model, 'model_name', 'this model')} has no elastic depth "
                             f"(asked for depth {depth!r})")
    depth = rng.check(depth)
    return None if depth == rng.hi else depth


def set_config(model: nn.Module, width: float, resolution: Resolution | None, depth: int | None = None) -> None:
    """Make (``width``, ``resolution``, ``depth``) the active configuration of ``model``.

    The resolution selects the BatchNorm statistics calibrated for the configuration, and the model's forward
    refuses inputs of another size (None: any size, statistics stored for the width at any resolution). The
    depth is the number of blocks each elastic stage runs (None or the model's full depth: all of them).
    Everything is checked before anything is written: a refused configuration changes nothing.
    """
    state = _state(model)
    width = _check_width(model, width)
    resolution = check_resolution(model, resolution)
    depth = check_depth(model, depth)
    state.width, state.resolution, state.depth = width, resolution, depth


def get_config(model: nn.Module) -> tuple[float, Resolution | None]:
    """The active ``(width, resolution)`` (:func:`get_depth` gives the depth)."""
    state = _state(model)
    return state.width, state.resolution


def get_depth(model: nn.Module) -> int | None:
    """The active depth: None at full depth, else the blocks each elastic stage runs."""
    return _state(model).depth


@contextlib.contextmanager
def use_config(model: nn.Module, width: float, resolution: Resolution | None,
               depth: int | None = None) -> Iterator[nn.Module]:
    """Run ``model`` at (``width``, ``resolution``, ``depth``) inside the block; the previous configuration comes
    back after.

    Every entry point that works on one configuration (calibration, evaluation, export, profiling) runs
    inside this block, so none of them leaves the model in another configuration than it found it.
    """
    state = _state(model)
    previous = state.width, state.resolution, state.depth
    set_config(model, width, resolution, depth)
    try:
        yield model
    finally:
        state.width, state.resolution, state.depth = previous


def set_width(model: nn.Module, width: float) -> None:
    """Switch ``model`` to ``width`` (resolution and depth stay); raises :class:`MutualNetError` outside its range."""
    state = _state(model)
    state.width = _check_width(model, width)


def get_width(model: nn.Module) -> float:
    return _state(model).width


@contextlib.contextmanager
def use_width(model: nn.Module, width: float) -> Iterator[nn.Module]:
    """Run ``model`` at ``width`` (same resolution and depth) inside the block and restore the previous width."""
    state = _state(model)
    previous = state.width
    set_width(model, width)
    try:
        yield model
    finally:
        state.width = previous
