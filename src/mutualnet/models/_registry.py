"""One registry, one factory: ``@register_model`` keys on the function name."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..errors import MutualNetError
from ..validate import MAX_CLASSES, MAX_IN_CHANS, check_int, check_width

__all__ = ["register_model", "register_prefix", "create_model", "list_models", "model_info", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """What a user needs to know about a registered model before building it."""

    name: str
    family: str
    input_size: int  # the highest training resolution of its default recipe
    resolutions: tuple[int, ...]  # the default resolution set, highest first
    width_range: tuple[float, float]
    in_chans: int = 3
    num_classes: int = 1000
    description: str = ""
    extra: dict = field(default_factory=dict)


_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


@dataclass(frozen=True)
class _Prefix:
    """A family of models named ``<prefix><name>`` built by one function (``tv/resnet50``)."""

    names: Callable[[], list[str]]  # the names after the prefix
    info: Callable[[str], ModelInfo]
    build: Callable[..., nn.Module]  # build(name, **create_model args)
    listed: Callable[[], list[str]] | None = None  # the names list_models shows (default: all of ``names``)


_PREFIXES: dict[str, _Prefix] = {}


def register_prefix(prefix: str, *, names: Callable[[], list[str]], info: Callable[[str], ModelInfo],
                    build: Callable[..., nn.Module], listed: Callable[[], list[str]] | None = None) -> None:
    """Register every ``prefix + name`` for ``name in names()``: models made by a function, not one each.

    ``listed`` narrows what :func:`list_models` shows to the names known to build (a family whose conversion
    refuses some names); the others can still be asked for by name and fail with their own reason.
    """
    _PREFIXES[prefix] = _Prefix(names, info, build, listed)


def _prefixed(name: str) -> tuple[_Prefix, str] | None:
    for prefix, fam in _PREFIXES.items():
        if name.startswith(prefix) and name[len(prefix):] in fam.names():
            return fam, name[len(prefix):]
    return None


def register_model(
    *,
    resolutions: tuple[int, ...],
    width_range: tuple[float, float] = (0.25, 1.0),
    num_classes: int = 1000,
    in_chans: int = 3,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory under its function name, with its default recipe."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        doc = inspect.getdoc(fn) or ""
        _INFO[name] = ModelInfo(
            name=name,
            family=fn.__module__.rsplit(".", 1)[-1],
            input_size=max(resolutions),
            resolutions=tuple(sorted(resolutions, reverse=True)),
            width_range=width_range,
            in_chans=in_chans,
            num_classes=num_classes,
            description=doc.splitlines()[0] if doc else "",
        )
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style ``pattern``, sorted.

    Prefixed families (``tv/<name>``: torchvision's CNNs, converted) are listed when ``pattern`` starts with
    their prefix, e.g. ``list_models("tv/*")``: only the names that convert.
    """
    names = [n for n in _MODELS if fnmatch.fnmatch(n, pattern)]
    for prefix, fam in _PREFIXES.items():
        if pattern.startswith(prefix):
            names += [prefix + n for n in (fam.listed or fam.names)() if fnmatch.fnmatch(prefix + n, pattern)]
    return sorted(names)


def model_info(name: str) -> ModelInfo:
    if name not in _INFO:
        found = _prefixed(name)
        if found is None:
            raise MutualNetError(_unknown(name))
        return found[0].info(found[1])
    return _INFO[name]


def _unknown(name: str) -> str:
    for prefix, fam in _PREFIXES.items():
        if name.startswith(prefix):
            stem = name[len(prefix):].split("_")[0]
            close = [prefix + n for n in fam.names() if stem and stem in n][:5]
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            return f"unknown model {name!r}{hint}; `mutualnet models '{prefix}*'` lists them"
    close = [n for n in _MODELS if name.split("_")[0] in n][:5]
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    return f"unknown model {name!r}{hint}; `mutualnet models` lists them"


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    width_range: tuple[float, float] | None = None,
    in_chans: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered slimmable model.

    Args:
        name: A name from :func:`list_models`.
        num_classes: Classifier outputs (never slimmed); the model's default when None.
        width_range: ``(lo, hi)`` widths the model must run at; ``hi`` may exceed 1.0.
        in_chans: Image channels (the stem's input, never slimmed).
        **kwargs: Family-specific arguments; ``None`` values are dropped so CLI flags can default to None.

    The returned model records ``model_name`` and ``model_args`` so checkpoints can rebuild it.
    """
    info = model_info(name)
    args = {k: v for k, v in kwargs.items() if v is not None}
    args["num_classes"] = check_int(info.num_classes if num_classes is None else num_classes, "num_classes", 1,
                                    MAX_CLASSES)
    args["in_chans"] = check_int(info.in_chans if in_chans is None else in_chans, "in_chans", 1, MAX_IN_CHANS)
    wr = info.width_range if width_range is None else width_range
    if not isinstance(wr, list | tuple) or len(wr) != 2:
        raise MutualNetError(f"width_range must be (lo, hi), got {wr!r}")
    lo, hi = check_width(wr[0], "width_range lo"), check_width(wr[1], "width_range hi")
    if not lo <= hi:
        raise MutualNetError(f"width_range must satisfy 0 < lo <= hi, got ({lo:g}, {hi:g})")
    args["width_range"] = (lo, hi)
    found = None if name in _MODELS else _prefixed(name)
    try:
        model = _MODELS[name](**args) if found is None else found[0].build(found[1], **args)
    except (TypeError, ValueError) as e:  # a family-specific argument of the wrong name or type
        raise MutualNetError(f"bad arguments for model {name!r}: {e}") from None
    model.model_name = name
    model.model_args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items()}
    return model
