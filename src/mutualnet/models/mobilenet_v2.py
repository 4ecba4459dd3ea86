"""MobileNet v2, slimmable, in torchvision's module layout.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018. At width 1.0 the
parameters and state-dict keys are torchvision's ``mobilenet_v2``, so its ImageNet weights load as they
are. The 1280-channel head convolution is never slimmed (as in torchvision below width 1.0).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import (
    ConvBNAct,
    ElasticSequential,
    SlimmableBatchNorm2d,
    SlimmableConv2d,
    SlimmableLinear,
    init_weights,
    mark_stage,
)
from ._base import SlimmableNet
from ._registry import register_model

__all__ = ["MobileNetV2", "InvertedResidual", "mobilenet_v2", "mobilenet_v2_cifar"]

# expansion t, channels c, repeats n, stride s (torchvision's table)
_SETTINGS = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
             [6, 320, 1, 1]]


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1), residual when shapes allow.

    The expanded layer has ``in * t`` channels at width 1.0 and ratio ``t``, so at any width it has
    exactly ``t`` times the (rounded) input channels, as torchvision computes it.
    """

    def __init__(self, inp: int, oup: int, stride: int, t: int, max_width: float) -> None:
        super().__init__()
        hidden = inp * t
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if t != 1:
            layers.append(ConvBNAct(inp, hidden, 1, max_width=max_width, ratio=(1, t), act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, depthwise=True, max_width=max_width, ratio=(t, t), act=nn.ReLU6),
            SlimmableConv2d(hidden, oup, 1, max_width=max_width, ratio=(t, 1)),
            SlimmableBatchNorm2d(oup, max_width=max_width),
        ]
        self.conv = nn.Sequential(*layers)

    def zero_init_last(self) -> bool:
        """Zero the projection's BN scale when the block has an identity path; False (untouched) otherwise."""
        if self.use_res_connect:
            nn.init.zeros_(self.conv[-1].weight)
        return self.use_res_connect

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(SlimmableNet):
    """Inverted-residual network; ``small_input`` uses stride 8 for 28-32 px images."""

    def __init__(self, num_classes: int = 1000, *, width_range: tuple[float, float] = (0.7, 1.0),
                 in_chans: int = 3, small_input: bool = False, dropout: float = 0.2,
                 last_channel: int = 1280, depth_range: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.depth_range = depth_range
        self.width_range, self.in_chans, self.num_classes = tuple(width_range), in_chans, num_classes
        mw = self.width_range[1]
        stem_stride = 1 if small_input else 2
        features: list[nn.Module] = [ConvBNAct(in_chans, 32, 3, stem_stride, max_width=mw, slim_in=False,
                                               act=nn.ReLU6)]
        stages, c_in, reduction = [], 32, stem_stride
        for si, (t, c, n, s) in enumerate(_SETTINGS):
            if small_input and si == 1:
                s = 1
            blocks = []
            for i in range(n):
                stride = s if i == 0 else 1
                blocks.append(InvertedResidual(c_in, c, stride, t, mw))
                c_in = c
            features += mark_stage(blocks)
            reduction *= s
            nxt = _SETTINGS[si + 1][3] if si + 1 < len(_SETTINGS) else 2
            if nxt == 2 and not (small_input and si == 0):
                stages.append((f"features.{len(features) - 1}", c, 1, reduction))
        features.append(ConvBNAct(c_in, last_channel, 1, max_width=mw, slim_out=False, act=nn.ReLU6))
        self.features = ElasticSequential(*features)
        self.stage_specs = stages
        self.min_resolution = reduction
        self.num_features = last_channel
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout),
                                        SlimmableLinear(last_channel, num_classes, max_width=mw, slim_in=False))
        self.head_name = "classifier.1"
        init_weights(self)
        self._finish()

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        return self._sequential_stages(self.features, "features", x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


@register_model(resolutions=(224, 192, 160, 128), width_range=(0.7, 1.0))
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNet v2 (ImageNet layout, torchvision-compatible at width 1.0)."""
    return MobileNetV2(**kwargs)


@register_model(resolutions=(32, 28, 24, 20), width_range=(0.35, 1.0), num_classes=10)
def mobilenet_v2_cifar(**kwargs) -> MobileNetV2:
    """MobileNet v2 for 28-32 px inputs (CIFAR, Fashion-MNIST): stride 8."""
    return MobileNetV2(small_input=True, **kwargs)
