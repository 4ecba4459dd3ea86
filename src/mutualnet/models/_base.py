"""The surface every slimmable model shares."""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import MutualNetError
from ..layers import (
    DepthRange,
    SlimmableLinear,
    SlimState,
    WidthRange,
    active_num_params,
    bind_state,
    full_depth,
    get_width,
    runs_at,
    set_width,
)

__all__ = ["SlimmableNet"]


class SlimmableNet(nn.Module):
    """Base class: width switching, input checks and the timm-like model surface.

    Subclasses build their layers in ``__init__``, call :meth:`_finish` at its end, and implement
    :meth:`forward_stages` (the stage outputs, for detection necks) and ``forward_features``.

    Attributes:
        width_range: The :class:`~mutualnet.layers.WidthRange` the model was built (and trained) for.
        depth_range: The :class:`~mutualnet.layers.DepthRange` of a model with elastic stages (None without):
            a subclass sets the requested ``(lo, hi)`` or None before :meth:`_finish`, which checks it against
            the stages it built (``hi`` must be the full depth; None: full depth only).
        in_chans: Image channels the stem expects.
        min_resolution: Smallest input side the network accepts (its total stride).
        num_features: Channels of the pooled features at the widest width.
        stage_specs: ``(name, base_channels, ratio, stride)`` per stage, for :attr:`feature_info`.
    """

    width_range: WidthRange
    depth_range: DepthRange | None = None
    in_chans: int
    min_resolution: int
    num_features: int
    num_classes: int
    stage_specs: list[tuple[str, int, int, int]]
    head_fixed_channels: int | None = None  # a head conv that is never slimmed (MobileNet v2's 1280)
    # the final Linear (features -> classes) as a dotted path: the model's one classifier rule, which
    # reset_classifier replaces, transfer learning leaves out, and detection drops (with its top-level module)
    head_name: str = "classifier"

    def _finish(self) -> None:
        self.width_range = WidthRange(float(self.width_range[0]), float(self.width_range[1]))
        self.depth_range = _depth_range(self.depth_range, full_depth(self))
        self.slim_state = SlimState(width=self.width_range.hi)
        bind_state(self, self.slim_state)

    # -- width -----------------------------------------------------------------------------------
    @property
    def width(self) -> float:
        return get_width(self)

    def set_width(self, width: float) -> SlimmableNet:
        set_width(self, width)
        return self

    # -- input checks ----------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise MutualNetError(f"expected a batch of images (N, C, H, W), got a tensor of shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise MutualNetError(f"model expects {self.in_chans} input channels, got {x.shape[1]}")
        h, w = x.shape[-2:]
        if min(h, w) < self.min_resolution:
            raise MutualNetError(
                f"resolution {h}x{w} is too small for this network (needs at least {self.min_resolution})"
            )
        res = self.slim_state.resolution  # written only by mutualnet.set_config / use_config, checked here
        if res is not None and (int(h), int(w)) != (res if isinstance(res, tuple) else (res, res)):
            raise MutualNetError(
                f"input is {h}x{w} but the model is configured for {res} px; resize the input, or switch the "
                "configuration with mutualnet.use_config(model, width, resolution)")

    # -- model surface ---------------------------------------------------------------------------
    def forward_stages(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sequential_stages(self, seq: nn.Sequential, prefix: str, x: Tensor) -> list[Tensor]:
        """Run ``seq`` and collect the outputs of the modules named in ``stage_specs`` (``prefix.<i>``)."""
        names = {name for name, *_ in self.stage_specs}
        out, depth = [], self.slim_state.depth
        for i, f in enumerate(seq):
            if runs_at(f, depth):  # a block the active depth skips is an identity
                x = f(x)
            if f"{prefix}.{i}" in names:
                out.append(x)
        return out

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x).flatten(1)
        if pre_logits:
            return x
        return self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self) -> list[dict]:
        """Channels and stride (``reduction``) of each stage at the active width."""
        from ..layers import slim_channels

        w = self.width
        return [
            {"module": name, "num_chs": slim_channels(c, w, r), "reduction": s}
            for name, c, r, s in self.stage_specs
        ]

    def get_classifier(self) -> nn.Module:
        """The final Linear, named by :attr:`head_name`."""
        return self.get_submodule(self.head_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final Linear with a fresh one for ``num_classes`` (transfer learning)."""
        old = self.get_classifier()
        new = SlimmableLinear(old.base_in, num_classes, max_width=old.max_width, slim_in=old.slim_in,
                              ratio=old.ratio).to(old.weight.device)
        new.slim_state = self.slim_state
        parent, _, name = self.head_name.rpartition(".")
        setattr(self.get_submodule(parent) if parent else self, name, new)
        self.num_classes = num_classes
        if hasattr(self, "model_args"):
            self.model_args["num_classes"] = num_classes

    def active_num_params(self) -> int:
        """Parameters the sub-network at the active width uses."""
        return active_num_params(self)


def _depth_range(requested: tuple[int, int] | None, full: int | None) -> DepthRange | None:
    """The model's depth range from what its builder was asked for and the stages it built."""
    if full is None:
        if requested is not None:
            raise ValueError("this model has no elastic stages, so no depth_range")
        return None
    if requested is None:
        return DepthRange(full, full)
    if len(requested) != 2 or any(isinstance(d, bool) or int(d) != d for d in requested):
        raise ValueError(f"depth_range must be (lo, hi) whole numbers of blocks, got {requested!r}")
    lo, hi = (int(d) for d in requested)
    if hi != full or not 1 <= lo <= hi:
        raise ValueError(f"depth_range must be (lo, {full}) with 1 <= lo <= {full} (the full depth, which the "
                         f"sandwich always trains), got ({lo}, {hi})")
    return DepthRange(lo, hi)
