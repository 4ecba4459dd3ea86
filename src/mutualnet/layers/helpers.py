"""Channel rounding: the one place that decides how many channels a layer has at a width.

These are the rules of the released MutualNet and US-Net weights, so their checkpoints map onto our
layers: ``channels(C, w, ratio) = make_divisible(C * w / ratio, 8) * ratio``.
"""

from __future__ import annotations

__all__ = ["make_divisible", "slim_channels", "width_key"]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never below 90% of ``v``.

    Args:
        v: The real-valued channel count.
        divisor: The multiple to round to (8 keeps tensor-core and SIMD friendly shapes).
        min_value: Lower bound of the result; defaults to ``divisor``.
    """
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # rounding down must not remove more than 10%
        new_v += divisor
    return new_v


def slim_channels(base: int, width: float, ratio: int = 1, divisor: int = 8) -> int:
    """Channels of a layer with ``base`` channels at width 1.0, when run at ``width``.

    ``ratio`` is the layer's multiplier over the channels it is derived from (the expansion of an
    inverted residual, the 4x of a bottleneck), so expanded widths stay multiples of the ratio and
    match the channels of the layer they are added to.
    """
    return make_divisible(base * width / ratio, divisor) * ratio


def width_key(width: float) -> str:
    """A stable string for a width, used to key per-configuration state (3 decimals)."""
    return f"{round(float(width), 3):.3f}"
