"""The width grid of a query table: ``lo, lo + step, ..., hi`` (``hi`` always included)."""

from __future__ import annotations

from ..errors import MutualNetError

__all__ = ["width_grid"]


def width_grid(lo: float, hi: float, step: float = 0.05) -> list[float]:
    if step <= 0:
        raise MutualNetError(f"width step must be positive, got {step:g}")
    n = int(round((hi - lo) / step + 1e-9))
    widths = [round(lo + i * step, 4) for i in range(n + 1) if lo + i * step <= hi + 1e-9]
    if not widths or abs(widths[-1] - hi) > 1e-6:
        widths.append(round(hi, 4))
    return widths
