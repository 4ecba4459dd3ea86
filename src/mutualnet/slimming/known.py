"""Layers the analysis knows beyond ``torch.nn``: timm's building blocks, by type and behaviour.

Nothing here names a model. A timm network is made of a few layer types the analysis must see whole:

* timm's own "do not trace" registry (``timm.layers.register_notrace_module`` / ``_function``), which its fx
  feature extraction uses, so tracing stops where timm says its code cannot be traced (``Conv2dSame``'s dynamic
  padding, ``BatchNormAct2d``, ``ConvMlp``'s size test);
* ``BatchNormAct2d``: a ``BatchNorm2d`` subclass that normalises, then applies ``self.drop`` and ``self.act``:
  a BatchNorm port, then its post-modules, which must pass the channel-count probe below;
* timm's ``Linear``: ``nn.Linear`` with a TorchScript-only cast; the same operation;
* ``Conv2dSame``: a ``Conv2d`` padded like TensorFlow's "SAME" (by input size) before it runs;
* ``BlurPool2d`` (anti-aliased downsampling): one filter for every channel, slimmed as such;
* ``EcaModule`` / ``CecaModule`` (a 1-D convolution *along* the channels) and ``DropPath``: kept whole and slimmed
  if they pass the probe.

The probe (:func:`channel_agnostic`) is behaviour, not a name: a module whose parameters do not depend on the
channel count runs unchanged on the leading channels of its input, and its narrower sub-network is itself (an
activation, dropout, ECA's shared 1-D kernel). A module with per-channel parameters fails it and is refused.
timm is only consulted when it is already imported (a timm model exists): nothing here imports it.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["leaf_types", "autowrap_functions", "fused_norm_post", "is_linear", "is_conv2d_same", "channel_agnostic",
           "traceable_forward", "is_blur_pool"]


def _timm_attr(module: str, name: str) -> object | None:
    if "timm" not in sys.modules:
        return None
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = __import__(module, fromlist=[name])
        except ImportError:  # pragma: no cover - a timm without that module
            return None
    return getattr(mod, name, None)


def leaf_types() -> tuple[type, ...]:
    """Module types traced as one call: timm's no-trace registry and the timm blocks this module knows whole."""
    get = _timm_attr("timm.layers._fx", "get_notrace_modules")
    types = list(get()) if callable(get) else []
    # weight-standardised convolutions (NFNet, BiT): whole, so a refusal names the layer, not its weight's reshape
    for name in ("EcaModule", "CecaModule", "DropPath", "BlurPool2d", "StdConv2d", "ScaledStdConv2d"):
        t = _timm_attr("timm.layers", name)
        if isinstance(t, type):
            types.append(t)
    return tuple(types)


def _conv_mlp_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's VGG ``ConvMlp`` without its size test (which only average-pools a map smaller than the kernel up to
    it, channel by channel): its layers in order, as the analysis needs to see them."""
    return m.act2(m.fc2(m.drop(m.act1(m.fc1(x)))))


def traceable_forward(mod: nn.Module) -> Callable | None:
    """For a module timm keeps out of tracing only for a size test that does not touch channels, a forward that
    the analysis traces instead (the module's own forward still runs): its layers are then converted like any
    other. None for every other module.
    """
    conv_mlp = _timm_attr("timm.models.vgg", "ConvMlp")
    if isinstance(conv_mlp, type) and type(mod) is conv_mlp and all(
            hasattr(mod, n) for n in ("fc1", "act1", "drop", "fc2", "act2")):
        return _conv_mlp_forward
    return None


def is_blur_pool(mod: nn.Module) -> bool:
    """timm's ``BlurPool2d``: a fixed binomial blur, the same filter for every channel, then a stride. Stored once
    per channel (``channels=C``, a non-persistent buffer) it does not run on fewer channels; its slimmable version
    (``SlimmableBlurPool2d``) applies the one filter to the active channels."""
    blur = _timm_attr("timm.layers", "BlurPool2d")
    return isinstance(blur, type) and type(mod) is blur and type(mod).forward is blur.forward and (
        mod.filt.device.type == "meta" or bool((mod.filt == mod.filt[:1]).all()))


def autowrap_functions() -> tuple[Callable, ...]:
    """Functions traced as one call (timm's no-trace functions): their results are opaque to the analysis."""
    get = _timm_attr("timm.layers._fx", "get_notrace_functions")
    return tuple(f for f in (get() if callable(get) else []) if callable(f))


def fused_norm_post(mod: nn.Module) -> tuple[str, ...] | None:
    """Names of the modules a fused BatchNorm + activation applies after normalising (None: not one).

    Only a layer whose ``forward`` is timm's ``BatchNormAct2d.forward`` itself (BN, then ``drop``, then ``act``);
    a subclass with its own forward is not assumed to do the same.
    """
    bna = _timm_attr("timm.layers", "BatchNormAct2d")
    if isinstance(bna, type) and isinstance(mod, bna) and type(mod).forward is bna.forward:
        return ("drop", "act")
    return None


def is_linear(mod: nn.Module) -> bool:
    """``nn.Linear``, or timm's ``Linear`` (the same ``F.linear`` outside TorchScript)."""
    if not isinstance(mod, nn.Linear):
        return False
    timm_linear = _timm_attr("timm.layers", "Linear")
    forwards = {nn.Linear.forward} | ({timm_linear.forward} if isinstance(timm_linear, type) else set())
    return type(mod).forward in forwards


def is_conv2d_same(mod: nn.Module) -> bool:
    """timm's ``Conv2dSame``: a ``Conv2d`` that pads its input like TensorFlow's "SAME" before convolving."""
    same = _timm_attr("timm.layers", "Conv2dSame")
    return isinstance(same, type) and isinstance(mod, same) and type(mod).forward is same.forward


def channel_agnostic(mod: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether ``mod`` runs on an input of ``shape`` and on its leading half of channels, keeping its channels.

    Run on the meta device (shapes only, no arithmetic, no weights copied to memory), in eval mode.
    """
    if len(shape) < 2 or shape[1] < 2:
        return False
    probe = copy.deepcopy(mod).to("meta").eval()
    try:
        with torch.no_grad():
            for c in (shape[1], shape[1] // 2):
                x = torch.empty(2, c, *shape[2:], device="meta")
                if tuple(probe(x).shape[:2]) != tuple(x.shape[:2]):  # spatial size may change (a blur pool)
                    return False
    except Exception:  # noqa: BLE001 - any failure means: not channel-agnostic
        return False
    return True
