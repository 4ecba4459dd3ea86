"""Load weights trained elsewhere: released MutualNet / US-Net checkpoints, torchvision ImageNet weights.

Released MutualNet (github taoyang1122/MutualNet) and US-Net (github JiahuiYu/slimmable_networks)
MobileNet v1 / v2 checkpoints are ``{'model': <DataParallel state dict>, ...}``. Their slimmable layers
keep one weight tensor at the widest width (the same "first channels" slicing and channel rule as ours,
``make_divisible(C * w / ratio, 8) * ratio``), and every universally-slimmable BatchNorm holds its affine
parameters once plus per-width statistics ``<bn>.bn.<i>.running_mean/var`` for the i-th width of the run's
``width_mult_list``. The layers appear in forward order in both layouts, so they are matched one by one
(kind and shape checked); the full key layout is written down in ``docs/interop.md``.

The per-width statistics become our statistics "for that width at any resolution" (key
``w<width>_rany``, which eval mode uses when no statistics were calibrated for the exact resolution), so
the loaded model computes what the original computes at each listed width. Other widths need calibration
(``mutualnet search``), as they do in the original code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from ..checkpoint import read_torch_file
from ..data.preprocess import preprocessing_for
from ..errors import MutualNetError
from ..layers import SlimmableBatchNorm2d, SlimmableConv2d, SlimmableLinear, config_key, set_width, width_key
from ..models import create_model

__all__ = ["RELEASED_WIDTHS", "load_released", "released_checkpoint", "load_torchvision_weights",
           "read_state_dict", "convert_checkpoint"]


def _grid(lo: float, hi: float, step: float = 0.025) -> list[float]:
    n = int(round((hi - lo) / step))
    return [round(lo + i * step, 4) for i in range(n + 1)]


# width_mult_list of the released runs, in the order of their bn.<i> statistics
RELEASED_WIDTHS: dict[str, list[list[float]]] = {
    "mobilenet_v1": [[0.25, 1.0], _grid(0.25, 1.0)],  # MutualNet; US-Net (31 widths)
    "mobilenet_v2": [[0.7, 1.0], [0.7, 0.9, 1.0], _grid(0.35, 1.0)],  # MutualNet (two recipes); US-Net (27)
}
_ARCH_BY_CONVS = {27: "mobilenet_v1", 52: "mobilenet_v2"}
_ARCH_ARGS = {"mobilenet_v1": {"act_layer": "relu6"}, "mobilenet_v2": {}}
_PER_WIDTH = re.compile(r"^(.*)\.bn\.(\d+)\.(running_mean|running_var|num_batches_tracked)$")
_STAT = re.compile(r"^(.*)\.(running_mean|running_var|num_batches_tracked)$")
_PARAM = re.compile(r"^(.*)\.(weight|bias)$")


def read_state_dict(obj: dict | str | os.PathLike, what: str = "checkpoint") -> dict[str, Tensor]:
    """A state dict from a path or a loaded object: unwraps ``{'model': ...}`` / ``{'state_dict': ...}``
    and strips the ``module.`` prefix DataParallel adds."""
    if not isinstance(obj, dict):
        path = Path(obj)
        obj = read_torch_file(path, what, hint="; if it also pickles training objects (loaded with "
                              "weights_only=True), re-save only its 'model' entry")
        if not isinstance(obj, dict):
            raise MutualNetError(f"{what} {path} does not hold a state dict")
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    if not sd or not all(isinstance(v, Tensor) for v in sd.values()):
        raise MutualNetError(f"{what} does not hold a state dict of tensors")
    return sd


# -- released MutualNet / US-Net checkpoints -------------------------------------------------------
class _Layer:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.params: dict[str, Tensor] = {}
        self.stats: dict[str, Tensor] = {}  # plain BatchNorm
        self.per_width: dict[int, dict[str, Tensor]] = {}

    @property
    def kind(self) -> str:
        w = self.params.get("weight")
        if self.per_width or self.stats:
            return "bn"
        if w is not None and w.dim() == 4:
            return "conv"
        if w is not None and w.dim() == 2:
            return "linear"
        return "unknown"

    def describe(self) -> str:
        w = self.params.get("weight")
        return f"{self.prefix} ({self.kind} {tuple(w.shape) if w is not None else ''})"


def _released_layers(sd: dict[str, Tensor]) -> list[_Layer]:
    layers: dict[str, _Layer] = {}
    for key, value in sd.items():  # state dicts list modules in registration (= forward) order
        if m := _PER_WIDTH.match(key):
            layers.setdefault(m[1], _Layer(m[1])).per_width.setdefault(int(m[2]), {})[m[3]] = value
        elif m := _STAT.match(key):
            layers.setdefault(m[1], _Layer(m[1])).stats[m[2]] = value
        elif m := _PARAM.match(key):
            layers.setdefault(m[1], _Layer(m[1])).params[m[2]] = value
        else:
            raise MutualNetError(f"unexpected key {key!r} in a released checkpoint (see docs/interop.md)")
    return list(layers.values())


def _our_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    kinds = (SlimmableConv2d, SlimmableBatchNorm2d, SlimmableLinear)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def _kind(m: nn.Module) -> str:
    return {SlimmableConv2d: "conv", SlimmableBatchNorm2d: "bn", SlimmableLinear: "linear"}[type(m)]


def _check_widths(pairs: list[tuple[_Layer, str, nn.Module]], model: nn.Module, widths: list[float]) -> str | None:
    """None if every per-width statistic has the channels our rule gives at its width, else what differs."""
    for theirs, name, ours in pairs:
        for i, stats in theirs.per_width.items():
            if i >= len(widths):
                return f"{theirs.prefix} has statistics bn.{i} but only {len(widths)} widths were given"
            set_width(model, widths[i])
            c = ours.active_channels()
            got = stats["running_mean"].numel()
            if got != c:
                return (f"{theirs.prefix}.bn.{i} has {got} channels; width {widths[i]:g} gives {c} for {name} "
                        "under the channel rule make_divisible(C * w / ratio, 8) * ratio")
    return None


def load_released(obj: dict | str | os.PathLike, *, arch: str | None = None,
                  widths: list[float] | None = None) -> nn.Module:
    """Build our model from a released MutualNet / US-Net MobileNet v1 or v2 checkpoint.

    Args:
        obj: Path of the ``.pt`` file, or the loaded dict / state dict.
        arch: ``mobilenet_v1`` or ``mobilenet_v2``; inferred from the number of convolutions when None.
        widths: The run's ``width_mult_list`` (the order of its ``bn.<i>`` statistics); when None, the
            released lists in :data:`RELEASED_WIDTHS` are tried and the one whose channel counts fit is used.

    Returns:
        The model in eval mode, width range ``[min(widths), max(widths)]``, with ``released_widths`` set.
        A checkpoint whose layers do not match the architecture is refused naming the first difference.
    """
    sd = read_state_dict(obj, "released checkpoint")
    layers = _released_layers(sd)
    if bad := [lay for lay in layers if lay.kind == "unknown"]:
        raise MutualNetError(f"cannot tell what layer {bad[0].prefix!r} is (no 4-D/2-D weight, no BN statistics)")
    n_conv = sum(lay.kind == "conv" for lay in layers)
    if arch is None:
        if n_conv not in _ARCH_BY_CONVS:
            raise MutualNetError(f"checkpoint has {n_conv} convolutions; released MobileNet v1 has 27 and v2 has 52 "
                                 "(pass arch= for another layout)")
        arch = _ARCH_BY_CONVS[n_conv]
    if arch not in _ARCH_ARGS:
        raise MutualNetError(f"released checkpoints are supported for {', '.join(_ARCH_ARGS)}, not {arch!r}")
    linears = [lay for lay in layers if lay.kind == "linear"]
    if not linears:
        raise MutualNetError("checkpoint has no classifier (2-D weight); it is not a released classification model")
    n_widths = {len(lay.per_width) for lay in layers if lay.per_width}
    if len(n_widths) > 1:
        raise MutualNetError(f"BatchNorm layers hold statistics for different numbers of widths: {sorted(n_widths)}")
    n = n_widths.pop() if n_widths else 0
    candidates = [list(widths)] if widths is not None else [w for w in RELEASED_WIDTHS[arch] if len(w) == n]
    known = candidates or RELEASED_WIDTHS[arch]  # the architecture is checked first, the widths after
    lo, hi = min(min(c) for c in known), max(max(c) for c in known)
    model = create_model(arch, num_classes=linears[-1].params["weight"].shape[0], width_range=(lo, hi),
                         **_ARCH_ARGS[arch])
    ours = _our_layers(model)
    if len(ours) != len(layers):
        raise MutualNetError(f"checkpoint has {len(layers)} conv/BN/linear layers, our {arch} has {len(ours)} "
                             f"({n_conv} convolutions there)")
    pairs = []
    for i, (theirs, (name, m)) in enumerate(zip(layers, ours)):
        if theirs.kind != _kind(m):
            raise MutualNetError(f"layer {i}: checkpoint has {theirs.describe()}, our {arch} has {_kind(m)} {name}")
        for pname, value in theirs.params.items():
            mine = getattr(m, pname, None)
            if mine is None:
                raise MutualNetError(f"layer {i}: checkpoint has {theirs.prefix}.{pname}, our {name} has no {pname}")
            if mine.shape != value.shape:
                raise MutualNetError(f"layer {i}: {theirs.prefix}.{pname} has shape {tuple(value.shape)}, our {name} "
                                     f"has {tuple(mine.shape)} (different channel counts or classes)")
        pairs.append((theirs, name, m))
    if not candidates:
        raise MutualNetError(f"checkpoint has per-width statistics for {n} widths, which no released {arch} run "
                             "has; pass widths=[...] (the run's width_mult_list)")
    errors = [(c, _check_widths(pairs, model, c)) for c in candidates]
    fitting = [c for c, err in errors if err is None]
    if not fitting:
        raise MutualNetError(f"per-width BN statistics do not fit widths {errors[0][0]}: {errors[0][1]}")
    widths = fitting[0]
    if (min(widths), max(widths)) != tuple(model.width_range):
        model = create_model(arch, num_classes=model.num_classes, width_range=(min(widths), max(widths)),
                             **_ARCH_ARGS[arch])
        pairs = [(t, n, m) for t, (n, m) in zip(layers, _our_layers(model))]
    fresh = _never_computed(layers, widths)
    with torch.no_grad():
        for theirs, _, m in pairs:
            for pname, value in theirs.params.items():
                getattr(m, pname).copy_(value)
            if isinstance(m, SlimmableBatchNorm2d):
                _load_bn_stats(m, theirs, widths, model, fresh)
    set_width(model, max(widths))
    model.released_widths = list(widths)
    model.uncomputed_widths = sorted(fresh)  # saved with BatchNorm's initial statistics: refused until calibrated
    # ImageNet photos at 224 px, lower resolutions made as the original code does everywhere (InputList,
    # ComputePostBN, test): bilinear with align_corners=True, no antialiasing
    model.preprocessing = preprocessing_for("imagefolder", 224, resize="official")
    return model.eval()


def _never_computed(layers: list[_Layer], widths: list[float]) -> set[float]:
    """The widths whose per-width statistics are BatchNorm's initial mean 0 / variance 1 in every layer.

    The original ``train.py`` saves them so for every listed width but the narrowest: they were never
    computed, and loading them as statistics would run those widths (the top one included) on 0 / 1.
    """
    fresh = set()
    per_width = [lay.per_width for lay in layers if lay.per_width]
    for i, w in enumerate(widths):
        stats = [pw[i] for pw in per_width if i in pw]
        if stats and all(bool((s["running_mean"] == 0).all()) and bool((s["running_var"] == 1).all())
                         for s in stats):
            fresh.add(w)
    return fresh


def _load_bn_stats(bn: SlimmableBatchNorm2d, theirs: _Layer, widths: list[float], model: nn.Module,
                   fresh: set[float]) -> None:
    """Per-width statistics into ``bn``: the top width's into the running ones, every width's as calibrated ones;
    a width in ``fresh`` (never computed) gets none, so it is refused until calibrated."""
    top = max(widths)
    for i, w in enumerate(widths):
        if theirs.per_width and w in fresh:
            if w == top:
                bn.running_stats_valid = False
            continue
        stats = theirs.per_width[i] if theirs.per_width else theirs.stats  # a plain BN: one set for every width
        mean, var = stats["running_mean"].float(), stats["running_var"].float()
        set_width(model, w)
        c = bn.active_channels()
        if w == top and mean.numel() == bn.running_mean.numel():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            if "num_batches_tracked" in stats:
                bn.num_batches_tracked.copy_(stats["num_batches_tracked"])
        bn.calibrated[config_key(w, None)] = (mean[:c].clone(), var[:c].clone())


def released_checkpoint(obj: dict | str | os.PathLike, *, arch: str | None = None,
                        widths: list[float] | None = None, source: str = "released") -> dict:
    """A mutualnet checkpoint dict (see :mod:`mutualnet.checkpoint`) holding a released model."""
    from ..checkpoint import CheckpointMeta, checkpoint_dict

    model = load_released(obj, arch=arch, widths=widths)  # its preprocessing record resizes as the original
    meta = CheckpointMeta(
        mode=source, resolutions=[224, 192, 160, 128],
        dataset={"name": "imagefolder", "num_classes": model.num_classes, "in_chans": 3},
        extra={"released_widths": [float(width_key(w)) for w in model.released_widths],
               **({"uncomputed_widths": [float(width_key(w)) for w in model.uncomputed_widths]}
                  if model.uncomputed_widths else {})})
    return checkpoint_dict(model, meta)


# -- torchvision -----------------------------------------------------------------------------------
def load_torchvision_weights(model: nn.Module, state_dict_or_path: dict | str | os.PathLike) -> nn.Module:
    """Load torchvision ImageNet weights (``mobilenet_v2``, ``resnet18/34/50/101``, ``vgg16_bn``) at width 1.0.

    Our models at width 1.0 have torchvision's parameter names and shapes, so this is a strict
    ``load_state_dict`` with errors that name what differs. The model is left at width 1.0.
    """
    lo, hi = getattr(model, "width_range", (1.0, 1.0))
    if not lo <= 1.0 <= hi:
        raise MutualNetError(f"torchvision weights are for width 1.0, outside this model's range [{lo:g}, {hi:g}]")
    if hi != 1.0:
        raise MutualNetError(f"torchvision weights hold width 1.0 only; build the model with width_range=({lo:g}, 1.0)")
    sd = read_state_dict(state_dict_or_path, "torchvision weights")
    own = model.state_dict()
    own = {k: v for k, v in own.items() if ".calib_stats." not in k}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
              if k in sd and sd[k].shape != v.shape]
    name = getattr(model, "model_name", type(model).__name__)
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[0]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise MutualNetError(f"weights do not match {name} at width 1.0: " + "; ".join(parts))
    model.load_state_dict(sd, strict=False)  # drops calibrated statistics: they belonged to other weights
    set_width(model, 1.0)
    return model


def convert_checkpoint(out: str | os.PathLike, *, released: str | os.PathLike | None = None,
                       torchvision: str | os.PathLike | None = None, arch: str | None = None,
                       widths: list[float] | None = None, model: str | None = None) -> str:
    """What ``mutualnet convert`` does: write ``out``, a mutualnet checkpoint of ``released`` MutualNet / US-Net
    weights (:func:`released_checkpoint`) or of a ``torchvision`` state dict for our model ``model`` at width 1.0.

    Returns:
        What was written, in words (for a released checkpoint: which widths hold usable statistics).
    """
    from ..checkpoint import atomic_save, checkpoint_dict
    from ..models import model_info

    if released:
        ckpt = released_checkpoint(released, arch=arch, widths=widths)
        meta = ckpt["meta"]
        uncomputed = meta.get("uncomputed_widths") or []
        have = [w for w in meta["released_widths"] if w not in uncomputed]
        desc = f"{ckpt['model_name']} with per-width statistics for widths {have}"
        if uncomputed:
            desc += (f"; widths {uncomputed} were saved with BatchNorm's initial statistics (mean 0, variance 1: "
                     "never computed) and are refused until calibrated (mutualnet calibrate, or eval --calibrate)")
    else:
        if not model:
            raise MutualNetError("--torchvision needs --model (e.g. resnet50, mobilenet_v2, vgg16_bn)")
        info = model_info(model)
        net = create_model(model, width_range=(info.width_range[0], 1.0))
        load_torchvision_weights(net, torchvision)
        ckpt = checkpoint_dict(net, {"resolutions": list(info.resolutions), "mode": "torchvision",
                                     "dataset": {"name": "imagefolder", "num_classes": net.num_classes,
                                                 "in_chans": 3, "input_size": 224}})
        desc = f"{model} (torchvision weights at width 1.0)"
    atomic_save(ckpt, out)
    return desc
