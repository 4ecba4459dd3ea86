"""The width grid of a query table: ``lo, lo + step, ..., hi`` (``hi`` always included)."""

from __future__ import annotations

from ..layers import WidthRange

__all__ = ["width_grid"]


def width_grid(lo: float, hi: float, step: float = 0.05) -> list[float]:
    """:meth:`mutualnet.layers.WidthRange.grid` of ``[lo, hi]``."""
    return WidthRange(float(lo), float(hi)).grid(step)
