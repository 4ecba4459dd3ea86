"""Bounds on the numbers a user hands mutualnet, and the checks that enforce them where values enter.

Command-line flags (:mod:`mutualnet.cli._args`), config entries (:mod:`mutualnet.train.config`), model
arguments (:func:`mutualnet.create_model`) and checkpoint metadata are all checked with these functions, so a
NaN width, a negative batch size or a million-pixel resolution is one clear error naming the flag or key,
before any memory is allocated or any file is written.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import MutualNetError

__all__ = ["MAX_RESOLUTION", "MAX_WIDTH", "MAX_CLASSES", "MAX_IN_CHANS", "MAX_THREADS", "check_int", "check_float",
           "check_pixels", "check_width"]

MAX_RESOLUTION = 4096  # pixels per side; one 4096^2 RGB image is already 200 MB of float activations per channel
MAX_WIDTH = 8.0  # width multipliers beyond this make layers thousands of channels wide
MAX_CLASSES = 1_000_000
MAX_IN_CHANS = 64
MAX_THREADS = 4096


def _fmt(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_fmt(lo)}"
    return f"{'<' if hi_open else '<='} {_fmt(hi)}"


def _check_range(value: float, name: str, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> None:
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or \
          (hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        shown = _fmt(value)
        raise MutualNetError(f"{name} must be {_range_text(lo, hi, lo_open, hi_open)}, got {shown}")


def check_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int within ``[lo, hi]``; bools, floats and strings are refused (``1e10`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MutualNetError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    _check_range(value, name, lo, hi, False, False)
    return value


def check_float(value: Any, name: str, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a finite float within the given bounds (NaN and infinities are always refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MutualNetError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise MutualNetError(f"{name} must be a finite number, got {value}")
    _check_range(value, name, lo, hi, lo_open, hi_open)
    return value


def check_pixels(value: Any, name: str = "resolution") -> int:
    """An image side in pixels, at most :data:`MAX_RESOLUTION` (a memory bound; a model's own smallest input is
    :func:`mutualnet.layers.check_resolution`'s)."""
    return check_int(value, name, 1, MAX_RESOLUTION)


def check_width(value: Any, name: str = "width") -> float:
    """A width multiplier in ``(0, MAX_WIDTH]``."""
    return check_float(value, name, 0.0, MAX_WIDTH, lo_open=True)
