"""Wide ResNet (CIFAR layout), slimmable.

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016. The MutualNet paper trains WRN-28-10 on
CIFAR-10/100 over widths [0.9, 1.0] with resolutions {32, 28, 24, 20}.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import ElasticSequential, SlimmableBatchNorm2d, SlimmableConv2d, SlimmableLinear, init_weights, mark_stage
from ._base import SlimmableNet
from ._registry import register_model

__all__ = ["WideResNet", "wide_resnet28_10", "wide_resnet16_4"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 (stride) - dropout - BN-ReLU-conv3x3, with a 1x1 projection when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int, mw: float, dropout: float) -> None:
        super().__init__()
        self.bn1 = SlimmableBatchNorm2d(cin, max_width=mw)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = SlimmableConv2d(cin, cout, 3, stride, 1, max_width=mw)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn2 = SlimmableBatchNorm2d(cout, max_width=mw)
        self.conv2 = SlimmableConv2d(cout, cout, 3, 1, 1, max_width=mw)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = SlimmableConv2d(cin, cout, 1, stride, 0, max_width=mw)

    def zero_init_last(self) -> None:
        """A pre-activation branch ends in a convolution, not a BN: its kernel is zeroed instead (same effect)."""
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        o = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.relu(self.bn2(self.dropout(o))))
        return o + identity


class WideResNet(SlimmableNet):
    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10, *,
                 width_range: tuple[float, float] = (0.9, 1.0), in_chans: int = 3, dropout: float = 0.0,
                 depth_range: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.depth_range = depth_range
        if (depth - 4) % 6:
            raise ValueError("Wide ResNet depth must be 6n + 4")
        n = (depth - 4) // 6
        self.width_range, self.in_chans, self.num_classes = tuple(width_range), in_chans, num_classes
        mw = self.width_range[1]
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.conv1 = SlimmableConv2d(in_chans, 16, 3, 1, 1, max_width=mw, slim_in=False)
        cin, stages, reduction = 16, [], 1
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = [PreActBlock(cin if j == 0 else c, c, stride if j == 0 else 1, mw, dropout) for j in range(n)]
            setattr(self, f"block{i + 1}", ElasticSequential(*mark_stage(blocks)))
            stages.append((f"block{i + 1}", c, 1, reduction))
            cin = c
        self.bn = SlimmableBatchNorm2d(cin, max_width=mw)
        self.relu = nn.ReLU(inplace=True)
        self.stage_specs = stages
        self.min_resolution = 8
        self.num_features = cin
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = SlimmableLinear(cin, num_classes, max_width=mw)
        init_weights(self)
        self._finish()

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        x = self.conv1(x)
        out = []
        for i in range(3):
            x = getattr(self, f"block{i + 1}")(x)
            out.append(x)
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.forward_stages(x)[-1]))


_CIFAR = dict(resolutions=(32, 28, 24, 20), width_range=(0.9, 1.0), num_classes=10)


@register_model(**_CIFAR)
def wide_resnet28_10(**kwargs) -> WideResNet:
    """WRN-28-10 (CIFAR layout, 36.5M parameters)."""
    return WideResNet(28, 10, **kwargs)


@register_model(**_CIFAR)
def wide_resnet16_4(**kwargs) -> WideResNet:
    """WRN-16-4 (CIFAR layout, 2.7M parameters): a small member for quick runs."""
    return WideResNet(16, 4, **kwargs)
