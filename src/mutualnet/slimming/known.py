"""Layers the analysis knows beyond ``torch.nn``: timm's building blocks, by type and behaviour.

Nothing here names a model. A timm network is made of a few layer types the analysis must see whole:

* timm's own "do not trace" registry (``timm.layers.register_notrace_module`` / ``_function``), which its fx
  feature extraction uses, so tracing stops where timm says its code cannot be traced (``Conv2dSame``'s dynamic
  padding, ``BatchNormAct2d``, ``ConvMlp``'s size test);
* ``BatchNormAct2d``: a ``BatchNorm2d`` subclass that normalises, then applies ``self.drop`` and ``self.act``:
  a BatchNorm port, then its post-modules, which must pass the channel-count probe below;
* timm's ``Linear``: ``nn.Linear`` with a TorchScript-only cast; the same operation;
* ``Conv2dSame``: a ``Conv2d`` padded like TensorFlow's "SAME" (by input size) before it runs;
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

__all__ = ["leaf_types", "autowrap_functions", "fused_norm_post", "is_linear", "is_conv2d_same", "channel_agnostic"]


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
    for name in ("EcaModule", "CecaModule", "DropPath"):
        t = _timm_attr("timm.layers", name)
        if isinstance(t, type):
            types.append(t)
    return tuple(types)


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
    """Whether ``mod`` runs on an input of ``shape`` and on its leading half of channels, keeping the shape.

    Run on the meta device (shapes only, no arithmetic, no weights copied to memory), in eval mode.
    """
    if len(shape) < 2 or shape[1] < 2:
        return False
    probe = copy.deepcopy(mod).to("meta").eval()
    try:
        with torch.no_grad():
            for c in (shape[1], shape[1] // 2):
                x = torch.empty(2, c, *shape[2:], device="meta")
                if tuple(probe(x).shape) != tuple(x.shape):
                    return False
    except Exception:  # noqa: BLE001 - any failure means: not channel-agnostic
        return False
    return True
