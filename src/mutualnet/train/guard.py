"""One divergence rule for every training loop (classification and detection).

A run whose learning rate is too high does not always produce NaN: a detection loss went 4.4 -> 499,355
while staying finite, and the run kept going for hours. :class:`DivergenceGuard` stops a run when its loss
is no longer finite or has grown ``factor`` times above the lowest running mean it had reached, and says
why in one line; the caller adds what to do (which checkpoint is intact, which setting to lower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DivergenceGuard"]


@dataclass
class DivergenceGuard:
    """Watches a loss per iteration; :meth:`check` returns why the run diverged, or None.

    Args:
        factor: how far above its lowest running mean the loss may climb (100x: far beyond the noise of
            a healthy run, whose loss rarely even doubles).
        warmup: iterations before growth is judged (the running mean needs a few values).
        momentum: of the running mean.
    """

    factor: float = 100.0
    warmup: int = 20
    momentum: float = 0.9
    mean: float | None = None
    lowest: float = math.inf
    seen: int = 0

    def check(self, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"loss became {loss}"
        self.seen += 1
        self.mean = loss if self.mean is None else self.momentum * self.mean + (1 - self.momentum) * loss
        if self.seen > self.warmup and self.lowest > 0 and loss > self.factor * self.lowest:
            return f"loss diverged to {loss:.4g}, {loss / self.lowest:.0f}x its lowest running mean {self.lowest:.4g}"
        if self.seen >= self.warmup:
            self.lowest = min(self.lowest, self.mean)
        return None
