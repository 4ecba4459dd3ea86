"""Slimmable layers: one set of weights, runnable at any width.

A slimmable layer allocates its widest shape and, at active width ``w``, computes with the *first*
channels of its weights (``slim_channels`` decides how many). Weights are shared across widths, which
is what lets the sub-networks of MutualNet teach each other.

All slimmable layers of a model share one :class:`~mutualnet.layers.SlimState`, the active configuration
(width, resolution, depth), which :mod:`mutualnet.layers.config` owns and writes. Convolutions and linear
layers read its width; BatchNorm reads the whole configuration to pick the statistics calibrated for it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MutualNetError
from .config import (
    Resolution,
    SlimState,
    config_key,
    get_config,
    get_depth,
    set_config,
    use_config,
    use_width,
)
from .elastic import ElasticSequential, skipped_blocks
from .helpers import slim_channels

__all__ = ["SlimmableConv2d", "SlimmableLinear", "SlimmableBatchNorm2d", "CalibrationMoments", "is_slimmable",
           "active_num_params", "channel_config", "materialize", "allow_uncalibrated"]  # the configuration: .config


class _Slimmable:
    """Mixin: the shared state and the channel arithmetic."""

    slim_state: SlimState
    max_width: float

    def _init_slim(self, max_width: float) -> None:
        self.slim_state = SlimState(width=max_width)
        self.max_width = float(max_width)

    @property
    def width(self) -> float:
        return self.slim_state.width


def _leading(t: Tensor | None, *sizes: int) -> Tensor | None:
    """The leading ``sizes`` entries of ``t`` along its first dimensions.

    Returns ``t`` itself when nothing is cut, so the widest sub-network runs the plain parameter without a
    slice in the autograd graph (no full-shape zero gradient to allocate and copy into).
    """
    if t is None or all(s == d for s, d in zip(sizes, t.shape)):
        return t
    return t[tuple(slice(0, s) for s in sizes)]


def _check_channels(x: Tensor, expected: int, layer: nn.Module) -> None:
    if x.dim() < 2 or x.shape[1] != expected:
        got = x.shape[1] if x.dim() >= 2 else "no channel dim"
        raise MutualNetError(
            f"{type(layer).__name__} expected {expected} input channels at width {layer.slim_state.width:g}, "
            f"got {got}"
        )


class SlimmableConv2d(nn.Conv2d, _Slimmable):
    """A ``Conv2d`` whose input and output channels follow the active width.

    Args:
        in_channels: Input channels at width 1.0 (ignored slicing if ``slim_in`` is False).
        out_channels: Output channels at width 1.0.
        depthwise: One group per channel; input and output channels are slimmed together.
        groups: Fixed number of groups for a grouped (non-depthwise) convolution; the sub-network
            uses the leading ``in/groups`` kernel channels of its leading output filters.
        group_width: Channels per group of a grouped convolution with ``in_channels == out_channels`` whose
            *number* of groups follows the width (ResNeXt, RegNet): the sub-network keeps whole leading
            groups. ``depthwise`` is the case ``group_width=1``.
        max_width: Widest width the layer must support (allocated shape).
        slim_in: Slim the input channels (False for the stem, which sees the image).
        slim_out: Slim the output channels (False for a fixed-width head).
        ratio: ``(in_ratio, out_ratio)`` multipliers for :func:`slim_channels`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        *,
        depthwise: bool = False,
        max_width: float = 1.0,
        slim_in: bool = True,
        slim_out: bool = True,
        ratio: tuple[int, int] = (1, 1),
        group_width: int | None = None,
    ) -> None:
        if depthwise:
            group_width = 1
        if group_width is not None and in_channels != out_channels:
            raise ValueError("a depthwise or group-width convolution needs in_channels == out_channels")
        self.base_in, self.base_out = in_channels, out_channels
        self.slim_in, self.slim_out, self.ratio, self.depthwise = slim_in, slim_out, tuple(ratio), depthwise
        self.group_width = group_width
        in_max = slim_channels(in_channels, max_width, ratio[0]) if slim_in else in_channels
        out_max = slim_channels(out_channels, max_width, ratio[1]) if slim_out else out_channels
        if group_width is not None:
            in_max = out_max = max(in_max, out_max)
            groups = in_max // group_width
        super().__init__(in_max, out_max, kernel_size, stride, padding, dilation, groups, bias)
        self.fixed_groups = groups
        self._init_slim(max_width)

    def active_channels(self) -> tuple[int, int]:
        """``(in, out)`` channels at the active width."""
        w = self.slim_state.width
        cout = slim_channels(self.base_out, w, self.ratio[1]) if self.slim_out else self.out_channels
        if self.group_width is not None:
            return cout, cout
        cin = slim_channels(self.base_in, w, self.ratio[0]) if self.slim_in else self.in_channels
        return cin, cout

    def _active(self) -> tuple[Tensor, Tensor | None, int, int]:
        cin, cout = self.active_channels()
        if self.group_width is not None:
            if cout % self.group_width:
                raise MutualNetError(f"width {self.width:g} gives {cout} channels, not a multiple of the group "
                                     f"width {self.group_width}")
            return _leading(self.weight, cout), _leading(self.bias, cout), cout // self.group_width, cin
        if cin % self.fixed_groups:
            raise MutualNetError(
                f"width {self.width:g} gives {cin} channels, not divisible by {self.fixed_groups} groups")
        weight = _leading(self.weight, cout, cin // self.fixed_groups)
        return weight, _leading(self.bias, cout), self.fixed_groups, cin

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, groups, cin = self._active()
        _check_channels(x, cin, self)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    def active_num_params(self) -> int:
        weight, bias, _, _ = self._active()
        return weight.numel() + (0 if bias is None else bias.numel())

    def to_dense(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding only the active slice."""
        weight, bias, groups, cin = self._active()
        conv = nn.Conv2d(cin, weight.shape[0], self.kernel_size, self.stride, self.padding, self.dilation, groups,
                         bias is not None, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv

    def extra_repr(self) -> str:
        extra = f", max_width={self.max_width:g}, slim_in={self.slim_in}, slim_out={self.slim_out}"
        return super().extra_repr() + extra


class SlimmableLinear(nn.Linear, _Slimmable):
    """A ``Linear`` layer; by default only its input follows the width (classifier outputs are fixed)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        max_width: float = 1.0,
        slim_in: bool = True,
        slim_out: bool = False,
        ratio: tuple[int, int] = (1, 1),
    ) -> None:
        self.base_in, self.base_out = in_features, out_features
        self.slim_in, self.slim_out, self.ratio = slim_in, slim_out, tuple(ratio)
        in_max = slim_channels(in_features, max_width, ratio[0]) if slim_in else in_features
        out_max = slim_channels(out_features, max_width, ratio[1]) if slim_out else out_features
        super().__init__(in_max, out_max, bias)
        self._init_slim(max_width)

    def active_channels(self) -> tuple[int, int]:
        w = self.slim_state.width
        cin = slim_channels(self.base_in, w, self.ratio[0]) if self.slim_in else self.in_features
        cout = slim_channels(self.base_out, w, self.ratio[1]) if self.slim_out else self.out_features
        return cin, cout

    def forward(self, x: Tensor) -> Tensor:
        cin, cout = self.active_channels()
        if x.shape[-1] != cin:
            raise MutualNetError(f"SlimmableLinear expected {cin} input features at width {self.width:g}, "
                                 f"got {x.shape[-1]}")
        return F.linear(x, _leading(self.weight, cout, cin), _leading(self.bias, cout))

    def active_num_params(self) -> int:
        cin, cout = self.active_channels()
        return cin * cout + (0 if self.bias is None else cout)

    def to_dense(self) -> nn.Linear:
        cin, cout = self.active_channels()
        lin = nn.Linear(cin, cout, self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight[:cout, :cin])
            if self.bias is not None:
                lin.bias.copy_(self.bias[:cout])
        return lin


_CALIB_PREFIX = "calib_stats."
_INVALID = "running_stats_invalid"  # state-dict key of a BatchNorm whose running statistics were never computed


@dataclass
class CalibrationMoments:
    """Per-channel count, mean and sum of squared deviations of a BatchNorm's inputs, in float64.

    Merged batch by batch with Chan et al.'s pairwise update, exact for any batch sizes; it reuses the
    batch statistics BN computes anyway instead of keeping float64 copies of every activation.
    """

    count: int = 0
    mean: Tensor | None = None
    m2: Tensor | None = None

    def merge(self, n_b: int, mean_b: Tensor, m2_b: Tensor) -> None:
        if self.count == 0:
            self.count, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta * delta * (self.count * n_b / n)
        self.count = n

    def variance(self) -> Tensor:
        """Unbiased variance, as torch BN keeps it."""
        return self.m2 / max(self.count - 1, 1)


class SlimmableBatchNorm2d(nn.BatchNorm2d, _Slimmable):
    """BatchNorm whose affine parameters are shared and sliced across widths.

    * Training mode normalises with batch statistics. The shared running statistics are updated only
      by the widest sub-network (the model at its top width), so at the top width they stay
      interchangeable with torchvision's. Channel rounding gives narrow layers all their channels at
      widths below the top (16 channels at 0.9 round to 16), and those sub-networks run at other
      resolutions, so "all channels active" is not the test.
    * Statistics of any (width, resolution) configuration are re-estimated after training
      (:meth:`begin_calibration` / :meth:`end_calibration`) and stored under that configuration's key,
      so *any* width in range can hold statistics, not only widths listed in advance. They are saved in
      the state dict as ``calib_stats.<key>.mean`` / ``.var``.
    * Eval mode uses the calibrated statistics of the active configuration when present, else those
      stored for the active width at any resolution (key ``w<width>_rany``, as released MutualNet /
      US-Net weights carry them). At the top width it may use the shared running statistics: they are
      the widest sub-network's own. Any other configuration without statistics is refused with a
      :class:`MutualNetError` that says how to calibrate it, because the widest's statistics sliced to a
      narrower width are wrong for it and would cost accuracy silently; :func:`allow_uncalibrated`
      runs it on them knowingly (cost measurements, an explicit ``--allow-uncalibrated``).
    * ``running_stats_valid`` is False when the running statistics were never computed (imported weights
      whose top-width statistics are still BatchNorm's initial 0 / 1): the top width is then refused like
      any uncalibrated configuration, until it is calibrated or trained. Saved as ``running_stats_invalid``
      in the state dict only then, so every other state dict is unchanged.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        *,
        max_width: float = 1.0,
        slim: bool = True,
        ratio: int = 1,
    ) -> None:
        self.base_features, self.slim, self.ratio = num_features, slim, ratio
        n_max = slim_channels(num_features, max_width, ratio) if slim else num_features
        super().__init__(n_max, eps, momentum)
        self._init_slim(max_width)
        self.calibrated: dict[str, tuple[Tensor, Tensor]] = {}
        self._calib: CalibrationMoments | None = None  # accumulating, between begin_ and end_calibration
        self.allow_uncalibrated = False  # eval below the top width on the running statistics (see allow_uncalibrated)
        self.running_stats_valid = True  # False: the running statistics were never computed (see the docstring)

    def active_channels(self) -> int:
        if not self.slim:
            return self.num_features
        return slim_channels(self.base_features, self.slim_state.width, self.ratio)

    def tracks_running_stats_now(self) -> bool:
        """Whether a training-mode forward updates the shared running statistics (top width only)."""
        return (self.track_running_stats and self.active_channels() == self.num_features
                and self.slim_state.width >= self.max_width - 1e-9 and self.slim_state.depth is None)

    def calibration_key(self) -> str:
        state = self.slim_state
        return config_key(state.width, state.resolution, state.depth)

    def _select(self, t: Tensor | None) -> Tensor | None:
        """The active channels of a per-channel tensor (the leading ones; a subclass may pick others)."""
        return _leading(t, self.active_channels())

    def _stats(self) -> tuple[Tensor, Tensor] | None:
        stats = self.calibrated.get(self.calibration_key())
        if stats is None and self.calibrated and self.slim_state.depth is None:
            # statistics of this width at any resolution (released weights, which are full depth)
            stats = self.calibrated.get(config_key(self.slim_state.width, None))
        return stats

    def active_stats(self) -> tuple[Tensor, Tensor]:
        """(mean, var) that eval mode uses at the active configuration (see the class docstring's policy)."""
        stats = self._stats()
        if stats is not None:
            return stats
        state = self.slim_state
        top = self.running_stats_valid and state.width >= self.max_width - 1e-9 and state.depth is None
        if not (self.allow_uncalibrated or top):
            raise MutualNetError(uncalibrated_message(state.width, state.resolution, state.depth))
        return self._select(self.running_mean), self._select(self.running_var)

    def forward(self, x: Tensor) -> Tensor:
        c = self.active_channels()
        _check_channels(x, c, self)
        weight, bias = self._select(self.weight), self._select(self.bias)
        if self._calib is not None:  # normalise with this batch's statistics and merge them (exactly) into the total
            # momentum 1 makes the fused kernel hand back the batch mean and unbiased variance it normalised with
            mean_b, var_b = x.new_zeros(c), x.new_ones(c)
            out = F.batch_norm(x, mean_b, var_b, weight, bias, True, 1.0, self.eps)
            n_b = x.numel() // c
            self._calib.merge(n_b, mean_b.double(), var_b.double() * (n_b - 1))
            return out
        if self.training:
            full = self.tracks_running_stats_now()
            momentum = 0.0 if self.momentum is None else self.momentum
            if full:
                self.running_stats_valid = True  # trained from here on: they are being computed
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    momentum = 1.0 / float(self.num_batches_tracked)
            return F.batch_norm(x, self.running_mean if full else None, self.running_var if full else None,
                                weight, bias, True, momentum, self.eps)
        mean, var = self.active_stats()
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    # -- calibration (post-statistics) -------------------------------------------------------------
    @property
    def calibrating(self) -> bool:
        return self._calib is not None

    def begin_calibration(self) -> None:
        """Start accumulating the exact mean and variance of this layer's inputs (forward normalises each batch
        with its own statistics meanwhile, as in training)."""
        self._calib = CalibrationMoments()

    def abort_calibration(self) -> None:
        """Drop what was accumulated: statistics of part of the images are never stored."""
        self._calib = None

    def end_calibration(self) -> str | None:
        """Store the accumulated statistics under the active configuration's key and return the key."""
        acc, self._calib = self._calib, None
        if acc is None or acc.count == 0:
            return None
        key = self.calibration_key()
        self.calibrated[key] = (acc.mean.to(self.weight.dtype), acc.variance().to(self.weight.dtype))
        return key

    # -- state dict: calibrated statistics travel with the weights ----------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: ANN001
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not self.running_stats_valid:
            destination[f"{prefix}{_INVALID}"] = torch.ones((), dtype=torch.uint8)
        for key, (mean, var) in self.calibrated.items():
            destination[f"{prefix}{_CALIB_PREFIX}{key}.mean"] = mean if keep_vars else mean.detach()
            destination[f"{prefix}{_CALIB_PREFIX}{key}.var"] = var if keep_vars else var.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: ANN001
        self.running_stats_valid = state_dict.pop(prefix + _INVALID, None) is None
        head = prefix + _CALIB_PREFIX
        found: dict[str, dict[str, Tensor]] = {}
        for name in [k for k in state_dict if k.startswith(head)]:
            key, _, kind = name[len(head):].rpartition(".")
            found.setdefault(key, {})[kind] = state_dict.pop(name)
        self.calibrated = {}
        for key, d in found.items():
            if "mean" in d and "var" in d:
                dev = self.weight.device
                self.calibrated[key] = (d["mean"].to(dev), d["var"].to(dev))
            else:
                error_msgs.append(f"calibrated statistics {key!r} of {prefix!r} lack mean or var")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - keep calibrated stats on the module's device/dtype
        out = super()._apply(fn, recurse)
        self.calibrated = {k: (fn(m), fn(v)) for k, (m, v) in self.calibrated.items()}
        return out

    def active_num_params(self) -> int:
        return 2 * self.active_channels()

    def to_dense(self) -> nn.BatchNorm2d:
        """A plain ``nn.BatchNorm2d`` with the active slice and the statistics eval mode would use."""
        c = self.active_channels()
        bn = nn.BatchNorm2d(c, self.eps, self.momentum, device=self.weight.device, dtype=self.weight.dtype)
        # a structural copy: without calibrated statistics it takes the running ones (the slimmable model's
        # eval forward, which export checks against, is where uncalibrated configurations are refused)
        stats = self._stats()
        mean, var = stats if stats is not None else (self._select(self.running_mean), self._select(self.running_var))
        with torch.no_grad():
            bn.weight.copy_(self._select(self.weight))
            bn.bias.copy_(self._select(self.bias))
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn


def uncalibrated_message(width: float, resolution: int | tuple[int, int] | None, depth: int | None = None) -> str:
    """The error for eval at a configuration without BN statistics: what is wrong and the commands that fix it."""
    res = resolution[0] if isinstance(resolution, tuple) else resolution
    if res is None:  # the width was set alone (set_width / use_width): the statistics are keyed by resolution too
        return (f"width {width:g} runs in eval mode with no resolution set, so its calibrated BatchNorm statistics "
                "cannot be looked up; set both with mutualnet.use_config(model, width, resolution) (or "
                "mutualnet.set_config)")
    res_s = str(res)
    at, flag, arg = "", "", ""
    if depth is not None:
        at, flag, arg = f" and depth {depth}", f" --depth {depth}", f", depth={depth}"
    return (f"no calibrated BatchNorm statistics for width {width:g} at {res_s} px{at} "
            f"({config_key(width, resolution, depth)}); only the widest sub-network may run on the shared running "
            "statistics. Calibrate it first: "
            f"`mutualnet calibrate --checkpoint CKPT --width {width:g} --resolution {res_s}{flag} --out CKPT`, or "
            f"mutualnet.calibrate.calibrate(model, images, {width:g}, {res_s}{arg}) in Python (`mutualnet search` "
            "calibrates the whole grid); mutualnet.allow_uncalibrated(model) runs it on the running statistics "
            "knowingly")


class allow_uncalibrated:  # noqa: N801 - used like torch.set_grad_enabled: a call or a ``with`` block
    """Let eval mode below the top width use the shared running statistics (sliced), or forbid it again.

    Accuracy at such a configuration is not what the network can do (its BN statistics are the widest
    sub-network's), so this is for work that does not depend on it: counting MACs, timing, tests of shapes,
    or an export the user explicitly asked for uncalibrated. Like ``torch.set_grad_enabled`` it takes effect
    at once; as a context manager it restores every layer's previous setting on exit::

        with mutualnet.allow_uncalibrated(model):
            model.eval()(x)            # no calibrated statistics needed here
        mutualnet.allow_uncalibrated(model)   # from now on
    """

    def __init__(self, model: nn.Module, allow: bool = True) -> None:
        self.model = model
        self._bns = [m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d)]
        self._previous = [bn.allow_uncalibrated for bn in self._bns]
        for bn in self._bns:
            bn.allow_uncalibrated = bool(allow)

    def __enter__(self) -> nn.Module:
        return self.model

    def __exit__(self, *exc: object) -> None:
        for bn, p in zip(self._bns, self._previous):
            bn.allow_uncalibrated = p


def is_slimmable(module: nn.Module) -> bool:
    """Whether ``module`` is a slimmable layer (every one derives from the ``_Slimmable`` mixin)."""
    return isinstance(module, _Slimmable)


def active_num_params(model: nn.Module) -> int:
    """Parameters ``model`` uses at its active configuration: slimmable layers count their active slice, blocks
    its depth skips nothing, other layers all of their parameters."""
    total, seen = 0, set()
    for block in skipped_blocks(model):
        seen.update(id(p) for p in block.parameters())
    for m in model.modules():
        if is_slimmable(m) and not any(id(p) in seen for p in m.parameters(recurse=False)):
            total += m.active_num_params()
            seen.update(id(p) for p in m.parameters(recurse=False))
    return total + sum(p.numel() for p in model.parameters() if id(p) not in seen)



def channel_config(model: nn.Module, width: float) -> tuple:
    """The active channels of every slimmable layer of ``model`` at ``width``: which network the width is.

    Channel rounding makes neighbouring widths the same network (every layer keeps the same channels), so
    anything that costs a forward pass per width (search rows, compiled graphs) only needs one per distinct
    value of this tuple.
    """
    with use_width(model, width):
        return tuple(m.active_channels() for m in model.modules() if is_slimmable(m))


def _resolutions_calibrated(model: nn.Module, width: float) -> list[str]:
    prefix = config_key(width, None).rsplit("_r", 1)[0] + "_r"
    keys = set()
    for m in model.modules():
        if isinstance(m, SlimmableBatchNorm2d):
            keys |= {k[len(prefix):] for k in m.calibrated if k.startswith(prefix) and not k.endswith("_rany")}
    return sorted(keys)


def materialize(model: nn.Module, width: float | None = None, resolution: Resolution | None = None,
                depth: int | None = None) -> nn.Module:
    """A copy of ``model`` at (``width``, ``resolution``, ``depth``) built only of standard PyTorch layers.

    Every slimmable layer is replaced by the plain layer holding its active slice (BatchNorm with the
    statistics eval mode uses at that configuration), and every elastic stage by an ``nn.Sequential`` in which
    the blocks the depth skips are ``nn.Identity`` (absent: no parameters, no operations). The copy computes
    what ``model`` computes at that configuration and holds only that sub-network's parameters; ``model``
    keeps its own configuration.

    Args:
        model: A slimmable model (or layer).
        width: Width to materialise (default: the active width).
        resolution: Input side the copy will run at; it selects the calibrated BatchNorm statistics
            (default: the active resolution). Required when the model holds statistics calibrated for
            this width at particular resolutions: without it the choice would be a guess.
        depth: Blocks each elastic stage keeps. Default: the active depth when neither the width nor the
            resolution is given, else the full depth (as :func:`set_config` reads a configuration).
    """
    active_width, active_res = get_config(model)
    if width is None and resolution is None and depth is None:
        depth = get_depth(model)
    width = active_width if width is None else float(width)
    resolution = active_res if resolution is None else resolution
    if resolution is None and (found := _resolutions_calibrated(model, width)):
        raise MutualNetError(f"materialize needs the resolution: the model holds BatchNorm statistics calibrated "
                             f"for width {width:g} at {', '.join(found)} px")
    with use_config(model, width, resolution, depth):
        dense = copy.deepcopy(model)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if is_slimmable(child):
                setattr(parent, name, child.to_dense().train(child.training))
            else:
                swap(child)
                if isinstance(child, ElasticSequential):
                    setattr(parent, name, child.to_dense().train(child.training))

    if is_slimmable(dense):
        return dense.to_dense().train(dense.training)
    swap(dense)
    if isinstance(getattr(dense, "slim_state", None), SlimState):
        # plain layers: nothing depends on the input size any more, and the skipped blocks are gone
        set_config(dense, width, None)
    return dense
