"""Slimmable layers that read a channel concatenation (DenseNet, Inception, SqueezeNet's Fire).

``torch.cat([a, b], 1)`` of two slimmed tensors holds the leading channels of *each* part, not the
leading channels of the whole: at width ``w`` the layer after it must use input channels
``[0, a(w)) + [A, A + b(w))`` of its weights, where ``A`` is ``a``'s width at 1.0. Taking the leading
``a(w) + b(w)`` columns instead would run, but would silently feed ``b``'s first channels into ``a``'s
weights, so the sub-networks would no longer share weights channel for channel.

Each layer here is described by its *segments*: ``(channels at width 1.0, ratio, slimmed)`` per part of
the concatenation, in order. A segment's active channels follow :func:`~mutualnet.layers.slim_channels`,
the same rule as every other layer, so they equal what the layer producing that part computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MutualNetError
from .helpers import slim_channels
from .slimmable import SlimmableBatchNorm2d, SlimmableConv2d, SlimmableLinear

__all__ = ["Segment", "ConcatConv2d", "ConcatDepthwiseConv2d", "ConcatBatchNorm2d", "ConcatLinear", "segment_channels"]

Segment = tuple[int, int, bool]  # (channels at width 1.0, ratio, slimmed)


def segment_channels(segments: tuple[Segment, ...], width: float) -> list[int]:
    """Active channels of each segment at ``width``."""
    return [slim_channels(c, width, r) if slim else c for c, r, slim in segments]


class _Segmented:
    """Mixin: the active channel indices of a segmented dimension, cached per (width, device)."""

    segments: tuple[Segment, ...]

    def _init_segments(self, segments: tuple[Segment, ...]) -> None:
        self.segments = tuple((int(c), int(r), bool(s)) for c, r, s in segments)
        self._index_cache: dict = {}

    def segment_total(self) -> int:
        return sum(segment_channels(self.segments, self.slim_state.width))

    def segment_index(self, device: torch.device, segments: tuple[Segment, ...] | None = None) -> Tensor | None:
        """Indices of the active channels (of ``segments``, default the input's), None when all are active."""
        segments = self.segments if segments is None else segments
        active = segment_channels(segments, self.slim_state.width)
        if active == [c for c, _, _ in segments]:
            return None
        key = (segments, tuple(active), device)
        idx = self._index_cache.get(key)
        if idx is None:
            parts, start = [], 0
            for (c, _, _), a in zip(segments, active):
                parts.append(torch.arange(start, start + a))
                start += c
            idx = self._index_cache[key] = torch.cat(parts).to(device)
        return idx


def _pick(t: Tensor | None, dim: int, idx: Tensor | None) -> Tensor | None:
    return t if t is None or idx is None else t.index_select(dim, idx)


class ConcatConv2d(SlimmableConv2d, _Segmented):
    """A (non-grouped) convolution whose input is a concatenation of ``segments``.

    ``out_segments``: its output is made in parts too (a later channel split cuts it there), each part slimmed
    to its own leading channels, so every part of the split is a leading slice of the full-width part.
    """

    def __init__(self, segments: tuple[Segment, ...], out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int = 0, dilation: int = 1, bias: bool = False, *,
                 slim_out: bool = True, out_ratio: int = 1, out_segments: tuple[Segment, ...] | None = None) -> None:
        in_channels = sum(c for c, _, _ in segments)
        # slim_in=False allocates exactly the concatenation's channels; the segments decide the active ones
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, 1, bias, max_width=1.0,
                         slim_in=False, slim_out=slim_out, ratio=(1, out_ratio))
        self.slim_in = True
        self._init_segments(segments)
        self.out_segments = None if out_segments is None else tuple((int(c), int(r), bool(s))
                                                                    for c, r, s in out_segments)

    def active_channels(self) -> tuple[int, int]:
        if self.out_segments is not None:
            return self.segment_total(), sum(segment_channels(self.out_segments, self.slim_state.width))
        return self.segment_total(), super().active_channels()[1]

    def _active(self) -> tuple[Tensor, Tensor | None, int, int]:
        cin, cout = self.active_channels()
        if self.out_segments is not None:
            out_idx = self.segment_index(self.weight.device, self.out_segments)
            weight, bias = _pick(self.weight, 0, out_idx), _pick(self.bias, 0, out_idx)
        else:
            weight = self.weight[:cout] if cout < self.out_channels else self.weight
            bias = self.bias if self.bias is None or cout == self.out_channels else self.bias[:cout]
        return _pick(weight, 1, self.segment_index(self.weight.device)), bias, 1, cin


class ConcatDepthwiseConv2d(SlimmableConv2d, _Segmented):
    """A depthwise convolution over a concatenation of ``segments`` (GhostNet's depthwise layer after its
    ghost module): each active channel keeps its own filter, and its output is laid out in the same segments."""

    def __init__(self, segments: tuple[Segment, ...], kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int = 0, dilation: int = 1, bias: bool = False) -> None:
        channels = sum(c for c, _, _ in segments)
        super().__init__(channels, channels, kernel_size, stride, padding, dilation, 1, bias, depthwise=True,
                         slim_in=False, slim_out=False)
        self.slim_in = self.slim_out = True
        self._init_segments(segments)

    def active_channels(self) -> tuple[int, int]:
        c = self.segment_total()
        return c, c

    def _active(self) -> tuple[Tensor, Tensor | None, int, int]:
        idx = self.segment_index(self.weight.device)
        c = self.segment_total()
        return _pick(self.weight, 0, idx), _pick(self.bias, 0, idx), c, c


class ConcatBatchNorm2d(SlimmableBatchNorm2d, _Segmented):
    """BatchNorm over a concatenation of ``segments`` (DenseNet's ``norm1`` reads every earlier layer)."""

    def __init__(self, segments: tuple[Segment, ...], eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(sum(c for c, _, _ in segments), eps, momentum, max_width=1.0, slim=False)
        self.slim = True
        self._init_segments(segments)

    def active_channels(self) -> int:
        return self.segment_total()

    def _select(self, t: Tensor | None) -> Tensor | None:
        return _pick(t, 0, self.segment_index(self.weight.device))


class ConcatLinear(SlimmableLinear, _Segmented):
    """A linear layer whose input features are a flattened concatenation (each segment ``mult`` features
    per channel, folded into the segment's channels and ratio)."""

    def __init__(self, segments: tuple[Segment, ...], out_features: int, bias: bool = True, *,
                 slim_out: bool = False, out_ratio: int = 1) -> None:
        super().__init__(sum(c for c, _, _ in segments), out_features, bias, max_width=1.0, slim_in=False,
                         slim_out=slim_out, ratio=(1, out_ratio))
        self.slim_in = True
        self._init_segments(segments)

    def active_channels(self) -> tuple[int, int]:
        return self.segment_total(), super().active_channels()[1]

    def _active(self) -> tuple[Tensor, Tensor | None]:
        _, cout = self.active_channels()
        weight = _pick(self.weight[:cout], 1, self.segment_index(self.weight.device))
        return weight, None if self.bias is None else self.bias[:cout]

    def forward(self, x: Tensor) -> Tensor:
        cin, _ = self.active_channels()
        if x.shape[-1] != cin:
            raise MutualNetError(f"ConcatLinear expected {cin} input features at width {self.width:g}, "
                                 f"got {x.shape[-1]}")
        return F.linear(x, *self._active())

    def active_num_params(self) -> int:
        weight, bias = self._active()
        return weight.numel() + (0 if bias is None else bias.numel())

    def to_dense(self) -> nn.Linear:
        weight, bias = self._active()
        lin = nn.Linear(weight.shape[1], weight.shape[0], bias is not None, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(weight)
            if bias is not None:
                lin.bias.copy_(bias)
        return lin

