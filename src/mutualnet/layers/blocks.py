"""Small composite blocks built from slimmable layers."""

from __future__ import annotations

from torch import nn

from .slimmable import SlimmableBatchNorm2d, SlimmableConv2d, SlimmableLinear

__all__ = ["ConvBNAct", "init_weights", "zero_init_residual"]


class ConvBNAct(nn.Sequential):
    """``conv -> BN -> activation``, laid out as torchvision's ``Conv2dNormActivation`` (indices 0, 1, 2).

    Args:
        in_ch, out_ch: Channels at width 1.0.
        ratio: ``(in_ratio, out_ratio)`` for the channel rule; the BN follows the output.
        act: Activation class (``nn.ReLU``, ``nn.ReLU6``) or None.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        depthwise: bool = False,
        max_width: float = 1.0,
        slim_in: bool = True,
        slim_out: bool = True,
        ratio: tuple[int, int] = (1, 1),
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        conv = SlimmableConv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, depthwise=depthwise,
                               max_width=max_width, slim_in=slim_in, slim_out=slim_out, ratio=ratio)
        bn = SlimmableBatchNorm2d(out_ch, max_width=max_width, slim=slim_out, ratio=ratio[1])
        layers: list[nn.Module] = [conv, bn]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


def init_weights(model: nn.Module, linear_std: float = 0.01) -> None:
    """torchvision's initialisation: Kaiming (fan-out) convs, unit BN, small normal classifier."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Linear, SlimmableLinear)):
            nn.init.normal_(m.weight, 0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def zero_init_residual(model: nn.Module) -> int:
    """Start every residual block of ``model`` as the identity: zero the last scale of each residual branch.

    Goyal et al. (2017) and BigNAS (Yu et al., ECCV 2020, Sec. 3.1) zero the last BatchNorm scale (gamma) of
    every residual branch, so at initialisation each block passes its shortcut through and the network behaves
    like a shallower one; BigNAS finds this stabilises the training of big and small children that share weights.
    A block says what its last scale is with a ``zero_init_last()`` method (timm's convention, followed by the
    zoo's blocks and by timm's); torchvision's ResNet and MobileNet v2 blocks, as ``tv/<name>`` keeps them, are
    recognised by type. Blocks without an identity path (MobileNet v2's stride-2 or widening blocks) are left
    alone.

    Returns:
        The number of blocks zeroed (0: the model has no residual blocks).
    """
    from torchvision.models import mobilenetv2, resnet

    done = 0
    for m in model.modules():
        if callable(getattr(m, "zero_init_last", None)):
            done += m.zero_init_last() is not False
        elif isinstance(m, resnet.Bottleneck | resnet.BasicBlock):
            nn.init.zeros_((m.bn3 if isinstance(m, resnet.Bottleneck) else m.bn2).weight)
            done += 1
        elif isinstance(m, mobilenetv2.InvertedResidual) and m.use_res_connect:
            nn.init.zeros_(m.conv[-1].weight)
            done += 1
    return done
