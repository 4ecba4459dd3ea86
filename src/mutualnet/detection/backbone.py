"""A slimmable backbone with a Feature Pyramid Network, for torchvision's detection models.

Design: the FPN is torchvision's own :class:`~torchvision.ops.FeaturePyramidNetwork`, unchanged except
for its *lateral* 1x1 convolutions (``inner_blocks[i][0]``), which are swapped for
:class:`~mutualnet.layers.SlimmableConv2d` with ``slim_in=True, slim_out=False``. Those are the only FPN
layers that see backbone channels, so they are the only ones that must follow the active width: their input
is the stage's channels at that width (base channels and ratio from the model's ``stage_specs``, through the
one channel rule), their output is the fixed FPN width. Everything after them -- the 3x3 output convs, the
RPN and the RoI heads -- is shared by all sub-networks at full size, as in the paper. Reusing torchvision's
FPN keeps its top-down pathway, initialisation and state-dict layout, and avoids a parallel implementation
that would have to be kept in sync with it.

The lateral convolutions are bound to the backbone's shared :class:`~mutualnet.layers.SlimState`, so one
``set_width(detector, w)`` switches the backbone and the FPN together.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..errors import MutualNetError
from ..layers import SlimmableConv2d, bind_state
from ..models import SlimmableNet

__all__ = ["SlimmableBackboneWithFPN", "default_return_stages"]

def default_return_stages(body: SlimmableNet) -> list[int]:
    """Indices of the stages the FPN reads: the last four with stride >= 4 (C2..C5 for ResNet and VGG)."""
    idx = [i for i, (_, _, _, stride) in enumerate(body.stage_specs) if stride >= 4]
    return idx[-4:]


def _drop_classifier(body: SlimmableNet) -> None:
    """Replace the classification head (the top-level module holding ``head_name``) by ``nn.Identity``.

    VGG's head alone holds ~120M parameters.
    """
    setattr(body, body.head_name.split(".")[0], nn.Identity())


class SlimmableBackboneWithFPN(nn.Module):
    """``body.forward_stages`` -> selected stages -> FPN with slimmable lateral convolutions.

    Args:
        body: A :class:`~mutualnet.models.SlimmableNet` (its classifier is dropped).
        return_stages: Indices into ``body.stage_specs`` of the feature maps the FPN reads, shallow to deep.
        out_channels: Channels of every FPN level (fixed; shared by all widths).

    The output is an ``OrderedDict`` ``{"0": P2, "1": P3, ..., "pool": P6}`` as torchvision's detection
    heads expect, and ``out_channels`` is the attribute ``MaskRCNN`` reads.
    """

    def __init__(self, body: SlimmableNet, return_stages: list[int] | None = None, out_channels: int = 256) -> None:
        super().__init__()
        _drop_classifier(body)
        stages = default_return_stages(body) if return_stages is None else list(return_stages)
        if not stages or any(not 0 <= i < len(body.stage_specs) for i in stages) or stages != sorted(set(stages)):
            raise MutualNetError(f"return_stages must be increasing indices in [0, {len(body.stage_specs) - 1}], "
                                 f"got {stages}")
        self.body = body
        self.return_stages = stages
        self.out_channels = out_channels
        self.width_range = body.width_range
        mw = body.width_range[1]
        specs = [body.stage_specs[i] for i in stages]
        self.fpn = FeaturePyramidNetwork([c for _, c, _, _ in specs], out_channels, extra_blocks=LastLevelMaxPool())
        for block, (_, base, ratio, _) in zip(self.fpn.inner_blocks, specs):
            lateral = SlimmableConv2d(base, out_channels, 1, bias=True, max_width=mw, slim_in=True, slim_out=False,
                                      ratio=(ratio, 1))
            nn.init.kaiming_uniform_(lateral.weight, a=1)  # torchvision's FPN initialisation
            nn.init.zeros_(lateral.bias)
            block[0] = lateral
        self.slim_state = bind_state(self, body.slim_state)

    @property
    def feature_info(self) -> list[dict]:
        """The FPN inputs' channels and strides at the active width."""
        info = self.body.feature_info
        return [info[i] for i in self.return_stages]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        stages = self.body.forward_stages(x)
        feats = OrderedDict((str(k), stages[i]) for k, i in enumerate(self.return_stages))
        return self.fpn(feats)
