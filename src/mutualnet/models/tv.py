"""torchvision's classification CNNs as slimmable models: ``create_model("tv/<name>")``.

Any name of ``torchvision.models.list_models(module=torchvision.models)`` is built by torchvision (no
weights unless ``weights=...`` is passed) and converted by :func:`mutualnet.slim` (graph analysis). At width
1.0 the model is torchvision's, with its state-dict keys; a network the analysis cannot slim safely is
refused with one line naming the node and why. ``docs/slimming.md`` has the coverage table.
"""

from __future__ import annotations

import functools

import torchvision
from torch import nn

from ..errors import MutualNetError
from ..slimming import SlimmedNet, slim
from ._registry import ModelInfo, register_prefix

__all__ = ["tv_model_names", "tv_convertible_names", "torchvision_model", "build_tv_model", "small_input_hint"]

PREFIX = "tv/"
# heads torchvision keeps at 1280 channels below width 1.0 (``width_mult``, ``MNASNet(alpha)``), as the zoo's
# mobilenet_v2 does
_FIXED = {"mobilenet_v2": ("features.18.0",), **{f"mnasnet{a}": ("layers.14",) for a in ("0_5", "0_75", "1_0", "1_3")}}
# auxiliary classifiers return a tuple in training mode; the sandwich step trains one logits tensor
_ARGS = {"googlenet": {"aux_logits": False, "init_weights": True},
         "inception_v3": {"aux_logits": False, "init_weights": True}}
_INPUT_SIZE = {"inception_v3": 299}
# families the graph analysis refuses (docs/slimming.md's coverage table, scripts/slim_coverage.py): channels-last
# layers (ConvNeXt, Swin), a channel shuffle (ShuffleNet v2), tokens reshaped from channels (ViT, MaxViT)
_REFUSED_FAMILIES = ("convnext_", "swin_", "shufflenet_v2_", "vit_", "maxvit_")


@functools.cache
def tv_model_names() -> list[str]:
    """torchvision's image-classification models (not detection, segmentation, video or quantized)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def tv_convertible_names() -> list[str]:
    """The names of :func:`tv_model_names` that convert (what ``mutualnet models 'tv/*'`` lists)."""
    return [n for n in tv_model_names() if not n.startswith(_REFUSED_FAMILIES)]


def small_input_hint(name: str, args: dict, resolution: int) -> str | None:
    """A note for a ``tv/`` model trained at ``resolution`` <= 64 px with torchvision's ImageNet stem (stride 2,
    made for 224 px): its last feature map is then 1-2 pixels wide, and ``small_input`` is what CIFAR-sized
    images want."""
    if not name.startswith(PREFIX) or args.get("small_input") or resolution > 64:
        return None
    return (f"note: {name} keeps torchvision's ImageNet stem (stride 2, made for 224 px), so at {resolution} px its "
            "last feature map is at most 2 pixels wide; --set model.args.small_input=true gives the stem stride 1 "
            "(for 28-32 px images such as Fashion-MNIST or CIFAR)")


def _info(name: str) -> ModelInfo:
    size = _INPUT_SIZE.get(name, 224)
    res = (299, 256, 224, 192) if size == 299 else (224, 192, 160, 128)
    return ModelInfo(name=PREFIX + name, family="torchvision", input_size=size, resolutions=res,
                     width_range=(0.25, 1.0), description=f"torchvision {name}, slimmed by graph analysis")


def _adapt_stem(model: nn.Module, in_chans: int, small_input: bool) -> None:
    """A fresh stem convolution for ``in_chans`` image channels; stride 1 for 28-32 px inputs."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    stride = 1 if small_input else conv.stride
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, stride, conv.padding, conv.dilation, conv.groups,
                    conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def torchvision_model(name: str, **kwargs) -> nn.Module:
    """torchvision's own ``name`` as ``tv/<name>`` starts from (no weights unless given; no auxiliary heads)."""
    args = {**_ARGS.get(name, {}), **kwargs}
    args.setdefault("weights", None)
    return torchvision.models.get_model(name, **args)


def build_tv_model(name: str, *, num_classes: int = 1000, width_range: tuple[float, float] = (0.25, 1.0),
                   in_chans: int = 3, small_input: bool = False, depth_range: tuple[int, int] | None = None,
                   **kwargs) -> SlimmedNet:
    """torchvision's ``name`` with ``num_classes`` outputs, converted to run over ``width_range``.

    Args:
        name: A torchvision classification model (``resnet50``, ``efficientnet_b0``...).
        num_classes: Classifier outputs (never slimmed).
        width_range: ``(lo, 1.0)``.
        in_chans: Image channels; anything but 3 gets a freshly initialised stem convolution.
        small_input: Stem stride 1, for 28-32 px images (Fashion-MNIST, CIFAR).
        depth_range: ``(lo, full)``: elastic depth over its runs of residual blocks (``slim(depth_range=)``;
            e.g. ``(1, 2)`` for ``resnet18``, ``(1, 6)`` for ``resnet50``); None: full depth only.
        **kwargs: Passed to torchvision's builder (``weights``, ``dropout``, ``width_mult``...).
    """
    model = torchvision_model(name, num_classes=num_classes, **kwargs)
    if in_chans != 3 or small_input:
        _adapt_stem(model, in_chans, small_input)
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):  # pragma: no cover - every tv model has one
        raise MutualNetError(f"tv/{name} has no convolution to slim")
    return slim(model, width_range, input_size=_INPUT_SIZE.get(name, 224), in_chans=in_chans,
                fixed=_FIXED.get(name, ()), depth_range=depth_range)


register_prefix(PREFIX, names=tv_model_names, info=_info, build=build_tv_model, listed=tv_convertible_names)
