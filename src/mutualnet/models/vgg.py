"""VGG-16 with BatchNorm, slimmable, in torchvision's module layout.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.
The MutualNet paper uses it as the Mask R-CNN backbone. The first classifier layer sees the flattened
7x7 map, so it uses ratio 49 in the channel rule: its active inputs are exactly the active channels' maps.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import SlimmableBatchNorm2d, SlimmableConv2d, SlimmableLinear, init_weights
from ._base import SlimmableNet
from ._registry import register_model

__all__ = ["VGG", "vgg16_bn"]

_CFG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(SlimmableNet):
    def __init__(self, cfg: list = _CFG16, num_classes: int = 1000, *, width_range: tuple[float, float] = (0.25, 1.0),
                 in_chans: int = 3, dropout: float = 0.5, hidden: int = 4096) -> None:
        super().__init__()
        self.width_range, self.in_chans, self.num_classes = tuple(width_range), in_chans, num_classes
        mw = self.width_range[1]
        layers: list[nn.Module] = []
        cin, first, reduction, stages = in_chans, True, 1, []
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                reduction *= 2
                stages.append((f"features.{len(layers) - 1}", cin, 1, reduction))
            else:
                layers += [SlimmableConv2d(cin, v, 3, 1, 1, bias=True, max_width=mw, slim_in=not first),
                           SlimmableBatchNorm2d(v, max_width=mw), nn.ReLU(inplace=True)]
                cin, first = v, False
        self.features = nn.Sequential(*layers)
        self.stage_specs = stages
        self.min_resolution = reduction
        self.num_features = cin
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            SlimmableLinear(cin * 49, hidden, max_width=mw, slim_out=True, ratio=(49, 1)),
            nn.ReLU(True), nn.Dropout(dropout),
            SlimmableLinear(hidden, hidden, max_width=mw, slim_out=True),
            nn.ReLU(True), nn.Dropout(dropout),
            SlimmableLinear(hidden, num_classes, max_width=mw),
        )
        self.head_name = "classifier.6"
        init_weights(self)
        self._finish()

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        return self._sequential_stages(self.features, "features", x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.avgpool(x).flatten(1)
        return x if pre_logits else self.classifier(x)


@register_model(resolutions=(224, 192, 160, 128), width_range=(0.25, 1.0))
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with BatchNorm (ImageNet layout, torchvision-compatible at width 1.0)."""
    return VGG(_CFG16, **kwargs)
