"""timm's CNNs as slimmable models: ``create_model("timm/<name>")`` (needs ``pip install "mutualnet[timm]"``).

Any name of ``timm.list_models()`` is built by timm (``pretrained=False`` unless passed: nothing is downloaded
by default) and converted by :func:`mutualnet.slim`, which knows timm's building blocks by type and behaviour
(:mod:`mutualnet.slimming.known`), never by model name. At width 1.0 the model is timm's, with its state-dict
keys; a network the analysis cannot slim safely is refused with one line. ``docs/slimming.md`` has the coverage
table over timm's CNN families. timm is imported only when a ``timm/`` name is used.
"""

from __future__ import annotations

import functools

from torch import nn

from ..errors import MutualNetError
from ..extras import require
from ..slimming import SlimmedNet, slim
from ._registry import ModelInfo, register_prefix
from .tv import _adapt_stem

__all__ = ["timm_model_names", "build_timm_model"]

PREFIX = "timm/"


@functools.cache
def timm_model_names() -> list[str]:
    """Every architecture timm registers (its CNNs and its transformers; the latter are refused when built)."""
    require("timm", "timm/<name> models")
    import timm

    return sorted(timm.list_models())


def _info(name: str) -> ModelInfo:
    import timm

    cfg = timm.get_pretrained_cfg(name, allow_unregistered=True)
    size = int(cfg.input_size[-1]) if cfg is not None and getattr(cfg, "input_size", None) else 224
    res = tuple(int(size * f) // 8 * 8 for f in (1.0, 0.875, 0.75, 0.625))
    return ModelInfo(name=PREFIX + name, family="timm", input_size=size, resolutions=res, width_range=(0.25, 1.0),
                     description=f"timm {name}, slimmed by graph analysis")


def build_timm_model(name: str, *, num_classes: int = 1000, width_range: tuple[float, float] = (0.25, 1.0),
                     in_chans: int = 3, small_input: bool = False, **kwargs) -> SlimmedNet:
    """timm's ``name`` with ``num_classes`` outputs, converted to run over ``width_range``.

    Args:
        name: A timm model (``resnet18``, ``efficientnet_b0``...).
        num_classes: Classifier outputs (never slimmed).
        width_range: ``(lo, 1.0)``.
        in_chans: Image channels (timm adapts its stem itself).
        small_input: Stem stride 1, for 28-32 px images (Fashion-MNIST, CIFAR).
        **kwargs: Passed to ``timm.create_model`` (``pretrained``, ``drop_rate``...).
    """
    require("timm", "timm/<name> models")
    import timm

    kwargs.setdefault("pretrained", False)
    model = timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if small_input:
        _adapt_stem(model, in_chans, small_input)
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise MutualNetError(f"cannot slim timm/{name}: it has no Conv2d")
    return slim(model, width_range, input_size=_info(name).input_size, in_chans=in_chans)


register_prefix(PREFIX, names=timm_model_names, info=_info, build=build_timm_model)
