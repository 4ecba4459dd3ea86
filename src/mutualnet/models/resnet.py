"""ResNet, slimmable, in torchvision's module layout.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. At width 1.0 ``resnet18/34/50/101``
have torchvision's parameters and state-dict keys. The bottleneck output (``planes * 4``) uses ratio 4 in
the channel rule, so at every width it is exactly 4x the bottleneck width. The MutualNet paper trains
ResNet-50 over [0.9, 1.0] as a single-network booster.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import (
    ElasticSequential,
    SlimmableBatchNorm2d,
    SlimmableConv2d,
    SlimmableLinear,
    init_weights,
    mark_stage,
)
from ._base import SlimmableNet
from ._registry import register_model

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50", "resnet101",
           "resnet18_cifar", "resnet20_cifar", "resnet56_cifar"]


def _conv(cin: int, cout: int, k: int, stride: int, mw: float, rin: int = 1, rout: int = 1) -> SlimmableConv2d:
    return SlimmableConv2d(cin, cout, k, stride, k // 2, max_width=mw, ratio=(rin, rout))


def _bn(c: int, mw: float, r: int = 1) -> SlimmableBatchNorm2d:
    return SlimmableBatchNorm2d(c, max_width=mw, ratio=r)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, mw: float, in_ratio: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 3, stride, mw, in_ratio)
        self.bn1 = _bn(planes, mw)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(planes, planes, 3, 1, mw)
        self.bn2 = _bn(planes, mw)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(_conv(inplanes, planes, 1, stride, mw, in_ratio), _bn(planes, mw))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, mw: float, in_ratio: int = 4) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = _conv(inplanes, planes, 1, 1, mw, in_ratio)
        self.bn1 = _bn(planes, mw)
        self.conv2 = _conv(planes, planes, 3, stride, mw)
        self.bn2 = _bn(planes, mw)
        self.conv3 = _conv(planes, out, 1, 1, mw, 1, 4)
        self.bn3 = _bn(out, mw, 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(_conv(inplanes, out, 1, stride, mw, in_ratio, 4), _bn(out, mw, 4))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(SlimmableNet):
    """ResNet with an ImageNet stem (7x7/2 + max-pool) or a small-input stem (3x3/1, no pool).

    Each stage is elastic: at depth ``d`` it runs its first ``d`` blocks (``depth_range``, off by default).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000, *,
                 width_range: tuple[float, float] = (0.9, 1.0), in_chans: int = 3, small_input: bool = False,
                 planes: tuple[int, ...] = (64, 128, 256, 512), stem_channels: int = 64,
                 depth_range: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.width_range, self.in_chans, self.num_classes = tuple(width_range), in_chans, num_classes
        self.depth_range = depth_range
        mw = self.width_range[1]
        if small_input:
            self.conv1 = SlimmableConv2d(in_chans, stem_channels, 3, 1, 1, max_width=mw, slim_in=False)
            self.maxpool = nn.Identity()
            reduction = 1
        else:
            self.conv1 = SlimmableConv2d(in_chans, stem_channels, 7, 2, 3, max_width=mw, slim_in=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            reduction = 4
        self.bn1 = _bn(stem_channels, mw)
        self.relu = nn.ReLU(inplace=True)
        exp = block.expansion
        inplanes, in_ratio = stem_channels, 1
        self.stage_names: list[str] = []
        stages = []
        for i, (p, n) in enumerate(zip(planes, layers)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, p, stride if j == 0 else 1, mw, in_ratio))
                inplanes, in_ratio = p * exp, exp
            name = f"layer{i + 1}"
            setattr(self, name, ElasticSequential(*mark_stage(blocks)))
            self.stage_names.append(name)
            stages.append((name, p * exp, exp, reduction))
        self.stage_specs = stages
        self.min_resolution = reduction
        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = SlimmableLinear(inplanes, num_classes, max_width=mw, ratio=(exp, 1))
        self.head_name = "fc"
        init_weights(self, linear_std=0.01)
        self._finish()

    @property
    def global_pool(self) -> nn.Module:
        return self.avgpool

    @property
    def classifier(self) -> nn.Module:  # torchvision names it fc
        return self.fc

    def _stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        x = self._stem(x)
        out = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out.append(x)
        return out

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[-1]


_IMAGENET = dict(resolutions=(224, 192, 160, 128), width_range=(0.9, 1.0))
_SMALL = dict(resolutions=(32, 28, 24, 20), width_range=(0.25, 1.0), num_classes=10)


@register_model(**_IMAGENET)
def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (ImageNet layout, torchvision-compatible at width 1.0)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model(**_IMAGENET)
def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (ImageNet layout, torchvision-compatible at width 1.0)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model(**_IMAGENET)
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (ImageNet layout, torchvision-compatible at width 1.0)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model(**_IMAGENET)
def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (ImageNet layout, torchvision-compatible at width 1.0)."""
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model(**_SMALL)
def resnet18_cifar(**kwargs) -> ResNet:
    """ResNet-18 for 28-32 px inputs: 3x3 stem, no max-pool, stride 8."""
    return ResNet(BasicBlock, [2, 2, 2, 2], small_input=True, **kwargs)


@register_model(**_SMALL)
def resnet20_cifar(**kwargs) -> ResNet:
    """ResNet-20 of He et al. for CIFAR (16/32/64 channels, 3 stages): small and fast."""
    return ResNet(BasicBlock, [3, 3, 3], small_input=True, planes=(16, 32, 64), stem_channels=16, **kwargs)


@register_model(**_SMALL)
def resnet56_cifar(**kwargs) -> ResNet:
    """ResNet-56 of He et al. for CIFAR (3 stages of 9 blocks, 16/32/64 channels)."""
    return ResNet(BasicBlock, [9, 9, 9], small_input=True, planes=(16, 32, 64), stem_channels=16, **kwargs)
