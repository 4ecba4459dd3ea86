"""Slimmable versions of layers that only converted networks need (:func:`mutualnet.slim`).

* :class:`SlimmableBatchNormAct2d`: a BatchNorm followed by the modules a fused norm + activation layer runs
  after it (timm's ``BatchNormAct2d``: ``drop`` then ``act``), under the same attribute names, so its
  state-dict keys are the original's.
* :class:`SlimmableConvTranspose2d`: a transposed convolution (a decoder's upsampling) whose input and output
  channels follow the width; its weight is ``(in, out, kh, kw)``, so the active slice is ``weight[:cin, :cout]``.
* :class:`ChannelCut`: the sizes of a channel split / slice written as numbers in a model's code, at the
  active width (the converted model's rewritten forward reads them from it).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .concat import ConcatBatchNorm2d, Segment, segment_channels
from .config import SlimState
from .helpers import slim_channels
from .slimmable import SlimmableBatchNorm2d, SlimmableConv2d, _check_channels, _leading, _Slimmable

__all__ = ["SlimmableBatchNormAct2d", "ConcatBatchNormAct2d", "SlimmableConvTranspose2d", "SlimmableConv2dSame",
           "ChannelCut", "SlimmableBatchNorm1d", "ConcatBatchNorm1d", "SlimmableBlurPool2d"]


class _PostModules:
    """Mixin for a slimmable BatchNorm: run ``post_names`` modules after normalising (a fused norm + act)."""

    post_names: tuple[str, ...] = ()

    def _init_post(self, post: dict[str, nn.Module]) -> None:
        for name, m in post.items():
            self.add_module(name, m)
        self.post_names = tuple(post)

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        for name in self.post_names:
            x = getattr(self, name)(x)
        return x

    def to_dense(self) -> nn.Sequential:
        """``Sequential(bn=BatchNorm2d, <post modules>)``: plain layers, the BatchNorm foldable into its conv."""
        return nn.Sequential(OrderedDict([("bn", super().to_dense()),
                                          *((n, getattr(self, n)) for n in self.post_names)]))


class SlimmableBatchNormAct2d(_PostModules, SlimmableBatchNorm2d):
    """A slimmable BatchNorm, then ``post`` modules in order (channel-wise ones: dropout, an activation).

    Args:
        post: ``{attribute name: module}`` applied after normalising, e.g. ``{"drop": ..., "act": ...}``.
        **kwargs: As :class:`SlimmableBatchNorm2d`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, *,
                 post: dict[str, nn.Module], **kwargs) -> None:
        super().__init__(num_features, eps, momentum, **kwargs)
        self._init_post(post)


class ConcatBatchNormAct2d(_PostModules, ConcatBatchNorm2d):
    """:class:`~mutualnet.layers.concat.ConcatBatchNorm2d` (a BatchNorm reading a concatenation), then ``post``."""

    def __init__(self, segments: tuple, eps: float = 1e-5, momentum: float | None = 0.1, *,
                 post: dict[str, nn.Module]) -> None:
        super().__init__(segments, eps, momentum)
        self._init_post(post)


def pad_same(x: Tensor, kernel_size: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> Tensor:
    """Zero-pad ``x`` as TensorFlow's "SAME" padding does: output side ``ceil(input / stride)``, the odd pixel of
    padding at the bottom / right."""
    pads = []
    for i, k, s, d in zip(x.shape[-2:], kernel_size, stride, dilation):
        total = max((-(-int(i) // s) - 1) * s + (k - 1) * d + 1 - int(i), 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.pad(x, (left, right, top, bottom)) if top or bottom or left or right else x


class SlimmableConv2dSame(SlimmableConv2d):
    """A :class:`~mutualnet.layers.SlimmableConv2d` padded like TensorFlow's "SAME" first (timm's ``Conv2dSame``).

    ``dense_type`` is the original layer's class: :meth:`to_dense` builds one of it holding the active slice.
    """

    dense_type: type[nn.Conv2d] = nn.Conv2d

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(pad_same(x, self.kernel_size, self.stride, self.dilation))

    def to_dense(self) -> nn.Conv2d:
        plain = super().to_dense()
        dense = self.dense_type(plain.in_channels, plain.out_channels, plain.kernel_size, plain.stride, 0,
                                plain.dilation, plain.groups, plain.bias is not None, device=plain.weight.device,
                                dtype=plain.weight.dtype)
        dense.load_state_dict(plain.state_dict())
        return dense


class SlimmableConvTranspose2d(nn.ConvTranspose2d, _Slimmable):
    """A ``ConvTranspose2d`` (one group) whose input and output channels follow the active width.

    Args mirror :class:`torch.nn.ConvTranspose2d`; ``slim_in`` / ``slim_out`` / ``ratio`` as
    :class:`~mutualnet.layers.SlimmableConv2d`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int = 0, output_padding: int = 0, bias: bool = True, dilation: int = 1, *,
                 max_width: float = 1.0, slim_in: bool = True, slim_out: bool = True,
                 ratio: tuple[int, int] = (1, 1)) -> None:
        self.base_in, self.base_out = in_channels, out_channels
        self.slim_in, self.slim_out, self.ratio = slim_in, slim_out, tuple(ratio)
        in_max = slim_channels(in_channels, max_width, ratio[0]) if slim_in else in_channels
        out_max = slim_channels(out_channels, max_width, ratio[1]) if slim_out else out_channels
        super().__init__(in_max, out_max, kernel_size, stride, padding, output_padding, 1, bias, dilation)
        self._init_slim(max_width)

    def active_channels(self) -> tuple[int, int]:
        w = self.slim_state.width
        cin = slim_channels(self.base_in, w, self.ratio[0]) if self.slim_in else self.in_channels
        cout = slim_channels(self.base_out, w, self.ratio[1]) if self.slim_out else self.out_channels
        return cin, cout

    def forward(self, x: Tensor) -> Tensor:
        cin, cout = self.active_channels()
        _check_channels(x, cin, self)
        return F.conv_transpose2d(x, _leading(self.weight, cin, cout), _leading(self.bias, cout), self.stride,
                                  self.padding, self.output_padding, 1, self.dilation)

    def active_num_params(self) -> int:
        cin, cout = self.active_channels()
        return cin * cout * self.weight[0, 0].numel() + (0 if self.bias is None else cout)

    def to_dense(self) -> nn.ConvTranspose2d:
        cin, cout = self.active_channels()
        conv = nn.ConvTranspose2d(cin, cout, self.kernel_size, self.stride, self.padding, self.output_padding, 1,
                                  self.bias is not None, self.dilation, device=self.weight.device,
                                  dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight[:cin, :cout])
            if self.bias is not None:
                conv.bias.copy_(self.bias[:cout])
        return conv


class ChannelCut:
    """The sizes of a channel split, or the index of a channel slice, that a model's code writes as numbers.

    ``x.split([10, 30], 1)`` or ``x[:, :117]`` in a model's forward cut the channels where the full-width network
    has its boundary; at a narrower width the tensor has fewer channels. :func:`mutualnet.slim` makes the
    producers of that tensor output it in parts (each part a leading slice of its full-width self) and rewrites
    the forward to take the sizes from this object, which follows the width: ``kind="split"`` gives the active
    size of each part, ``kind="slice"`` the index ``(:, start:stop, *rest)`` of the part the slice takes.

    A plain attribute of the module whose forward it serves, not a child module: a module that iterates its
    children (timm's ``MixedConv2d`` is a ``ModuleDict``) must not see it. It holds no parameters.

    Args:
        kind: ``"split"`` or ``"slice"``.
        parts: Per part (for a slice: the parts before it, then the part it takes), its segments.
        state: The model's shared configuration (its width).
        rest: A slice's index after the channel dimension (``x[:, a:b, :, :]``).
    """

    def __init__(self, kind: str, parts: tuple[tuple[Segment, ...], ...], state: SlimState, rest: tuple = ()) -> None:
        self.kind, self.rest, self.slim_state = kind, tuple(rest), state
        self.parts = tuple(tuple((int(c), int(r), bool(s)) for c, r, s in p) for p in parts)

    def active_channels(self) -> tuple[int, ...]:
        return tuple(sum(segment_channels(p, self.slim_state.width)) for p in self.parts)

    def value(self) -> list[int] | tuple:
        """The split sizes (a list) or the slice index (a tuple) at the active width."""
        sizes = self.active_channels()
        if self.kind == "split":
            return list(sizes)
        start = sum(sizes[:-1])
        return (slice(None), slice(start, start + sizes[-1]), *self.rest)

    def __repr__(self) -> str:
        return f"ChannelCut({self.kind}, {self.active_channels()} at width {self.slim_state.width:g})"


class _Dense1d:
    """Mixin for a slimmable BatchNorm over ``(N, C)`` features: materialises to a ``BatchNorm1d``."""

    def to_dense(self) -> nn.BatchNorm1d:
        plain = super().to_dense()
        bn = nn.BatchNorm1d(plain.num_features, plain.eps, plain.momentum, device=plain.weight.device,
                            dtype=plain.weight.dtype)
        bn.load_state_dict(plain.state_dict())
        return bn


class SlimmableBatchNorm1d(_Dense1d, SlimmableBatchNorm2d):
    """A slimmable BatchNorm over ``(N, C)`` features (a ``BatchNorm1d`` before a classifier, RepViT's head):
    the same per-channel arithmetic as :class:`~mutualnet.layers.SlimmableBatchNorm2d`."""


class ConcatBatchNorm1d(_Dense1d, ConcatBatchNorm2d):
    """:class:`SlimmableBatchNorm1d` over pooled features of a concatenation."""


class SlimmableBlurPool2d(nn.Module, _Slimmable):
    """timm's ``BlurPool2d`` (a fixed binomial blur, the same filter for every channel, then a stride) on the active
    channels of its input, laid out in ``segments``; materialises to timm's layer for that many channels.

    Args:
        segments: Its input's segments (one for a plain tensor).
        blur: The ``BlurPool2d`` it replaces (its filter, stride and padding are taken over).
    """

    def __init__(self, segments: tuple[Segment, ...], blur: nn.Module) -> None:
        super().__init__()
        self._init_slim(1.0)
        self.segments = tuple((int(c), int(r), bool(s)) for c, r, s in segments)
        self.blur_type, self.filt_size, self.stride = type(blur), blur.filt_size, blur.stride
        self.pad_mode, self.padding = blur.pad_mode, list(blur.padding)
        self.register_buffer("filt", blur.filt[:1].clone(), persistent=False)

    def active_channels(self) -> int:
        return sum(segment_channels(self.segments, self.slim_state.width))

    def active_num_params(self) -> int:
        return 0

    def forward(self, x: Tensor) -> Tensor:
        c = self.active_channels()
        _check_channels(x, c, self)
        x = F.pad(x, self.padding, mode=self.pad_mode)
        return F.conv2d(x, self.filt.expand(c, 1, self.filt_size, self.filt_size), stride=self.stride, groups=c)

    def to_dense(self) -> nn.Module:
        c = self.active_channels()
        dense = self.blur_type(c, filt_size=self.filt_size, stride=self.stride, pad_mode=self.pad_mode)
        dense.filt = self.filt.expand(c, 1, self.filt_size, self.filt_size).clone()
        return dense.train(self.training)
