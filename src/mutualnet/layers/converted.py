"""Slimmable versions of layers that only converted networks need (:func:`mutualnet.slim`).

* :class:`SlimmableBatchNormAct2d`: a BatchNorm followed by the modules a fused norm + activation layer runs
  after it (timm's ``BatchNormAct2d``: ``drop`` then ``act``), under the same attribute names, so its
  state-dict keys are the original's.
* :class:`SlimmableConvTranspose2d`: a transposed convolution (a decoder's upsampling) whose input and output
  channels follow the width; its weight is ``(in, out, kh, kw)``, so the active slice is ``weight[:cin, :cout]``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .concat import ConcatBatchNorm2d
from .helpers import slim_channels
from .slimmable import SlimmableBatchNorm2d, SlimmableConv2d, _check_channels, _leading, _Slimmable

__all__ = ["SlimmableBatchNormAct2d", "ConcatBatchNormAct2d", "SlimmableConvTranspose2d", "SlimmableConv2dSame"]


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
