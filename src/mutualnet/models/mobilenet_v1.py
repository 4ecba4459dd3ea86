"""MobileNet v1, slimmable.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
2017. The MutualNet paper trains it over widths [0.25, 1.0] at {224, 192, 160, 128}:
1.0-224 is 569M MACs, 0.25-128 is 13.6M.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import ConvBNAct, ElasticSequential, SlimmableLinear, init_weights
from ._base import SlimmableNet
from ._registry import register_model

__all__ = ["MobileNetV1", "mobilenet_v1", "mobilenet_v1_cifar"]

# (out_channels, stride) of each depthwise-separable block
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class MobileNetV1(SlimmableNet):
    """Depthwise-separable stack; ``small_input`` keeps 28-32 px images at stride 8 instead of 32.

    ``act_layer="relu6"`` uses ReLU6 after every BN, as the released MutualNet / US-Net weights do.
    """

    def __init__(self, num_classes: int = 1000, *, width_range: tuple[float, float] = (0.25, 1.0),
                 in_chans: int = 3, small_input: bool = False, dropout: float = 0.0,
                 act_layer: str = "relu", depth_range: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.depth_range = depth_range
        acts = {"relu": nn.ReLU, "relu6": nn.ReLU6}
        if act_layer not in acts:
            raise ValueError(f"act_layer must be one of {sorted(acts)}, got {act_layer!r}")
        act = acts[act_layer]
        self.width_range, self.in_chans, self.num_classes = tuple(width_range), in_chans, num_classes
        mw = self.width_range[1]
        stem_stride = 1 if small_input else 2
        self.stem = ConvBNAct(in_chans, 32, 3, stem_stride, max_width=mw, slim_in=False, act=act)
        blocks, stages = [], []
        c_in, reduction = 32, stem_stride
        for i, (c, s) in enumerate(_BLOCKS):
            if small_input and i == 1:
                s = 1
            reduction *= s
            blocks.append(nn.Sequential(
                ConvBNAct(c_in, c_in, 3, s, depthwise=True, max_width=mw, act=act),
                ConvBNAct(c_in, c, 1, max_width=mw, act=act),
            ))
            # a run of identity-shaped blocks (the five 512-channel ones) is an elastic stage
            same = s == 1 and c_in == c and len(blocks) > 1
            blocks[-1].elastic_index = blocks[-2].elastic_index + 1 if same else 0
            if i + 1 == len(_BLOCKS) or _BLOCKS[i + 1][1] == 2:
                stages.append((f"blocks.{i}", c, 1, reduction))
            c_in = c
        self.blocks = ElasticSequential(*blocks)
        self.stage_specs = stages
        self.min_resolution = reduction
        self.num_features = 1024
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = SlimmableLinear(1024, num_classes, max_width=mw)
        init_weights(self)
        self._finish()

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        return self._sequential_stages(self.blocks, "blocks", self.stem(x))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(self.global_pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)


@register_model(resolutions=(224, 192, 160, 128), width_range=(0.25, 1.0))
def mobilenet_v1(**kwargs) -> MobileNetV1:
    """MobileNet v1 (ImageNet layout, 224 px)."""
    return MobileNetV1(**kwargs)


@register_model(resolutions=(32, 28, 24, 20), width_range=(0.25, 1.0), num_classes=10)
def mobilenet_v1_cifar(**kwargs) -> MobileNetV1:
    """MobileNet v1 for 28-32 px inputs (CIFAR, Fashion-MNIST): stride 8."""
    return MobileNetV1(small_input=True, **kwargs)
