"""Typed training configuration: dataclasses, YAML recipes and ``--set a.b=c`` overrides.

A recipe is a YAML file with up to five sections (``model``, ``data``, ``train``, ``optim``, ``run``) whose
keys are the fields below; anything left out keeps its default. ``None`` defaults are resolved from the
model's registry entry and the dataset (:func:`resolve`), and the resolved config is written beside the
run as ``config.yaml``, so every run records exactly what it did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from ..data.preprocess import RESIZE_MODES
from ..data.transforms import PADDING_MODES
from ..errors import MutualNetError
from ..io import atomic_write_text, available_cores, read_text
from ..validate import MAX_CLASSES, MAX_IN_CHANS, MAX_RESOLUTION, MAX_THREADS, MAX_WIDTH, check_float, check_int
from .runfolder import RESUMABLE, ResumeRule

if typing.TYPE_CHECKING:
    from ..models import ModelInfo

__all__ = ["MODES", "ModelConfig", "DataConfig", "MethodConfig", "OptimConfig", "RunConfig", "TrainConfig",
           "load_config", "read_yaml_mapping", "apply_overrides", "config_from_dict",
           "config_to_dict", "resolve", "save_config", "adopt_dataset"]

# mutual: the paper. usnet: sandwich + inplace distillation at the highest resolution. usnet_msaug: usnet
# with one random resolution per iteration shared by all sub-networks. mutual_gt: mutual's sampling with
# ground-truth labels for every sub-network (no distillation; detection uses it). msaug: one full network,
# a random resolution per iteration. single: one fixed width and resolution (an independent network).
MODES = ("mutual", "usnet", "usnet_msaug", "mutual_gt", "msaug", "single")
SINGLE_NETWORK_MODES = ("msaug", "single")
DISTILL = ("kl", "alpha")  # train.distill
REGULARIZE = ("all", "widest")  # train.regularize


@dataclass
class ModelConfig:
    name: str = "mobilenet_v1"
    width_range: list[float] | None = None  # [lo, hi]; None: the model's default
    # elastic depth (a third dimension of the sandwich): [lo, hi] blocks per stage, hi the model's full depth;
    # None (the default, and the paper's recipes): full depth only
    depth_range: list[int] | None = None
    num_classes: int | None = None  # None: the dataset's
    args: dict[str, Any] = field(default_factory=dict)  # extra create_model keyword arguments
    init: str | None = None  # transfer: pretrained weights (mutualnet checkpoint / torchvision state dict)
    # BigNAS / Goyal et al.: the last BN scale of every residual branch starts at 0, so every block starts as the
    # identity (mutualnet.layers.zero_init_residual); off: the original code's initialisation
    zero_init_residual: bool = False


@dataclass
class DataConfig:
    name: str = "imagefolder"  # imagefolder | cifar10 | cifar100 | fashion_mnist | synthetic
    root: str | None = None
    input_size: int | None = None  # None: the highest training resolution
    batch_size: int = 256  # global batch size, split evenly across processes
    val_batch_size: int | None = None  # None: batch_size
    workers: int | None = 8  # data-loading processes per training process, at most the CPU cores available; None: all
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    hflip: bool = True
    color_jitter: float = 0.0  # brightness = contrast = saturation jitter strength
    lighting: float = 0.0  # PCA lighting noise std (AlexNet's; the original ImageNet recipes use 0.1); RGB only
    crop_padding: int = 4  # small in-memory datasets (CIFAR, Fashion-MNIST): random-crop padding (0: no crop)
    padding_mode: str = "zeros"  # of that padding: zeros | reflect (the original CIFAR recipe)
    val_resize_ratio: float = 0.875  # validation: Resize(input_size / ratio) + CenterCrop(input_size)
    # how lower resolutions are made from a batch, in training and everything after (recorded in checkpoints):
    # antialias (bilinear, antialiased; our default) | official (bilinear, align_corners=True, as the original code)
    resize: str = "antialias"
    synthetic_length: int = 512  # samples in the synthetic dataset (tests and smoke runs)
    train_subset: int | None = None  # train on this many images, a fixed random subset (seed 0); None: all
    # hold out this many training images (a fixed draw, the same for every run; never trained on): validation
    # during training and the query table of `mutualnet search` use them (mutualnet.data.splits); None/0: none
    holdout: int | None = None
    decoder: str = "torchvision"  # imagefolder: torchvision (torchvision.io, faster per core) | pil


@dataclass
class MethodConfig:
    mode: str = "mutual"  # one of MODES
    num_subnets: int = 4  # sub-networks per iteration (sandwich modes): widest, narrowest and n-2 random
    resolutions: list[int] | None = None  # training resolutions, highest first; None: the model's default
    width: float | None = None  # single/msaug: the network's width; None: the top of the width range
    resolution: int | None = None  # single: its resolution; None: the highest resolution
    epochs: int = 250
    label_smoothing: float = 0.0  # on the widest sub-network's cross-entropy
    temperature: float = 1.0  # of the distillation loss (both distributions softened, the loss scaled by T^2)
    # distillation of the narrower sub-networks: kl (the paper: KL(teacher || student)) | alpha (AlphaNet's
    # adaptive alpha-divergence, mutualnet.train.step.alpha_divergence, with the three settings below)
    distill: str = "kl"
    alpha_min: float = -1.0  # alpha: the lower alpha (< 0 punishes a student that spreads mass; AlphaNet's -1)
    alpha_max: float = 1.0  # alpha: the upper alpha (1: KL(teacher || student), punishes missed mass; AlphaNet's 1)
    alpha_clip: float = 5.0  # alpha: upper clip of the importance weights (p/q)^alpha in the gradient (AlphaNet's 5)
    # which sub-networks run with dropout / drop-path: all (the paper) | widest (BigNAS: regularise only the biggest
    # child; weight decay is applied once per step to the shared weights either way, see docs/parity.md)
    regularize: str = "all"
    # Once-for-All's progressive shrinking: train this many epochs at full depth only (the paper's 2-D sandwich)
    # before depth becomes elastic, so the deep networks are learnt before the shallow ones share their blocks;
    # 0: elastic from the first iteration. Needs model.depth_range
    full_depth_epochs: float = 0.0


@dataclass
class OptimConfig:
    lr: float = 0.5  # for the global batch size
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 4e-5
    decay_all: bool = False  # False: decay only conv/linear weights (not BN, biases or depthwise kernels)
    warmup_epochs: float = 0.0  # linear warm-up from ~0, then cosine decay, stepped every iteration
    min_lr: float = 0.0  # learning rate at the end of the cosine
    clip_grad_value: float | None = None  # clip every gradient entry to [-c, c] before the step (AlphaNet: 1.0)


@dataclass
class RunConfig:
    out: str = "runs/train"  # run folder: config.yaml, metrics.jsonl, last.pt, best.pt, tb/
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (distributed runs use cuda:LOCAL_RANK)
    amp: str = "none"  # none | bf16 | fp16 (fp16 uses a GradScaler)
    channels_last: bool = False
    save_every: int = 500  # also save last.pt every this many iterations (0: only at epoch end)
    val_every: int = 1  # validate every this many epochs (0: never)
    val_batches: int | None = None  # limit validation to this many batches (None: the whole split)
    calib_batches: int = 8  # training batches to re-estimate BN statistics of the narrowest config
    log_every: int = 1  # write a metrics row every this many iterations
    csv: bool = False  # also write metrics as train.csv / val.csv
    tensorboard: bool = True
    progress: bool = True  # tqdm progress bar
    max_steps: int | None = None  # stop after this many iterations (the schedule still spans all epochs)
    sync_bn: bool = False  # distributed: batch statistics over all processes
    threads: int | None = None  # torch CPU threads (None: torch's, or the free cores if OpenMP spins; threads.py)
    compile: bool | str = False  # torch.compile the step, one graph per distinct sub-network (train.compiled);
    # auto: compile when the planned iterations exceed the measured break-even (train.compiled.AutoCompile)
    compile_backend: str = "inductor"  # inductor (fused kernels) | aot_eager (graph capture only, for checks)


@dataclass
class TrainConfig:
    RESUME: ClassVar[ResumeRule] = RESUMABLE  # how its checkpoints resume (train.runkit.resume_config)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


# -- dict <-> dataclass with type checks ---------------------------------------------------------------
def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int -> float is allowed), with a clear error."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except MutualNetError as e:
                errors.append(str(e))
        raise MutualNetError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise MutualNetError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        items = typing.get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise MutualNetError(f"{where}: expected a list of {len(items)}, got {value!r}")
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, (v, item) in enumerate(zip(value, items)))
    if origin is dict:
        if not isinstance(value, dict):
            raise MutualNetError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise MutualNetError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MutualNetError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MutualNetError(f"{where}: expected a number, got {value!r}")
        return check_float(value, where)  # NaN and infinities are never a setting
    if tp is str:
        if not isinstance(value, str):
            raise MutualNetError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r}")  # pragma: no cover - a bug, not a user error


# Bounds of the numeric settings, checked when a config is built (so a bad --set is refused before anything runs,
# naming its key); list entries are checked item by item. (lo, hi, lo_open); None: unbounded on that side.
_BOUNDS: dict[str, tuple[float | None, float | None, bool]] = {
    "model.width_range": (0, MAX_WIDTH, True),
    "model.depth_range": (1, 1024, False),
    "model.num_classes": (1, MAX_CLASSES, False),
    "data.input_size": (8, MAX_RESOLUTION, False),
    "data.batch_size": (1, 1 << 20, False),
    "data.val_batch_size": (1, 1 << 20, False),
    "data.workers": (0, 1024, False),
    "data.crop_scale": (0, 1, True),
    "data.color_jitter": (0, 1, False),
    "data.crop_padding": (0, MAX_RESOLUTION, False),
    "data.val_resize_ratio": (0, 1, True),
    "data.synthetic_length": (1, 1 << 24, False),
    "data.train_subset": (1, None, False),
    "data.holdout": (0, None, False),
    "train.num_subnets": (1, 1024, False),
    "train.resolutions": (1, MAX_RESOLUTION, False),
    "train.width": (0, MAX_WIDTH, True),
    "train.resolution": (1, MAX_RESOLUTION, False),
    "train.epochs": (1, 1 << 20, False),
    "train.label_smoothing": (0, 0.999, False),
    "train.temperature": (0, 1e4, True),
    "train.alpha_min": (-10, 10, False),
    "train.alpha_max": (-10, 10, False),
    "train.alpha_clip": (0, 1e6, True),
    "train.full_depth_epochs": (0, 1 << 20, False),
    "optim.lr": (0, None, True),
    "optim.momentum": (0, 0.999, False),
    "optim.weight_decay": (0, None, False),
    "optim.warmup_epochs": (0, 1 << 20, False),
    "optim.min_lr": (0, None, False),
    "optim.clip_grad_value": (0, None, True),
    "run.seed": (0, 2**32 - 1, False),
    "run.save_every": (0, None, False),
    "run.val_every": (0, None, False),
    "run.val_batches": (1, None, False),
    "run.calib_batches": (1, None, False),
    "run.log_every": (1, None, False),
    "run.max_steps": (1, None, False),
    "run.threads": (1, MAX_THREADS, False),
}
# model.args entries every model takes (the rest are family-specific and checked by the model's builder)
_MODEL_ARG_BOUNDS = {"in_chans": (1, MAX_IN_CHANS), "num_classes": (1, MAX_CLASSES)}


def _check_bounds(key: str, value: Any) -> None:
    if key == "model.args":
        for name, (lo, hi) in _MODEL_ARG_BOUNDS.items():
            if name in value:
                check_int(value[name], f"model.args.{name}", lo, hi)
        return
    if key not in _BOUNDS or value is None:
        return
    lo, hi, lo_open = _BOUNDS[key]
    for i, v in enumerate(value if isinstance(value, list) else [value]):
        name = f"{key}[{i}]" if isinstance(value, list) else key
        if isinstance(v, int) and not isinstance(v, bool) and not lo_open:
            check_int(v, name, lo, hi)
        else:
            check_float(v, name, lo, hi, lo_open=lo_open)


def _build(cls: type, data: dict, where: str) -> Any:
    if not isinstance(data, dict):
        raise MutualNetError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise MutualNetError(f"unknown config key {(where + '.' if where else '') + unknown[0]!s}; "
                             f"{where or 'the config'} has: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        kwargs[name] = _build(tp, value, key) if dataclasses.is_dataclass(tp) else _coerce(value, tp, key)
        _check_bounds(key, kwargs[name])
    return cls(**kwargs)


def config_from_dict(data: dict) -> TrainConfig:
    """A :class:`TrainConfig` from a (possibly partial) nested dict; unknown keys and bad types are errors."""
    return _build(TrainConfig, data or {}, "")


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def _set(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise MutualNetError(f"cannot set {dotted}: {p} is not a section")
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: Sequence[str] | Mapping[str, Any] | None) -> dict:
    """Apply ``key.sub=value`` strings to a config dict; values are parsed as YAML (``[0.25,1.0]``, ``null``).

    A mapping ``{"key.sub": value}`` (the Python caller's form, :func:`mutualnet.train.fit`) sets the values as
    they are; they are type-checked when the config is built, as a recipe's are.
    """
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            if not isinstance(key, str) or not key.strip():
                raise MutualNetError(f"override key {key!r} is not of the form section.key (e.g. train.mode)")
            _set(data, key.strip(), value)
        return data
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise MutualNetError(f"override {item!r} is not of the form section.key=value (e.g. train.mode=usnet)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _set(data, key.strip(), value)
    return data


def read_yaml_mapping(path: str | os.PathLike, what: str = "a mapping of settings") -> dict:
    """The mapping a YAML config file holds; one-line errors for a missing, unparsable or non-mapping file."""
    path = Path(path)
    if not path.is_file():
        raise MutualNetError(f"config file not found: {path}")
    text = read_text(path, "config file", max_bytes=1 << 24)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise MutualNetError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise MutualNetError(f"cannot parse {path}: nested too deeply") from None
    if not isinstance(data, dict):
        raise MutualNetError(f"{path} must hold {what}")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None, *,
                schema: type = TrainConfig, **values: Any) -> Any:
    """The one config loader: a YAML file (None: the defaults), then ``values`` that are not None (flags, a
    checkpoint's stored config), then ``key=value`` overrides, type-checked into the dataclass ``schema``
    (training's :class:`TrainConfig`, detection's ``DetectionConfig``; its ``validate()``, if any, runs)."""
    data = read_yaml_mapping(path, "a mapping of settings" if schema is not TrainConfig
                             else "a mapping of sections (model, data, train, optim, run)") if path else {}
    data.update({k: v for k, v in values.items() if v is not None})
    cfg = _build(schema, apply_overrides(data, overrides), "")
    if callable(getattr(cfg, "validate", None)):
        cfg.validate()
    return cfg


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# -- resolution of defaults and checks --------------------------------------------------------------
def adopt_dataset(m: ModelConfig, dataset: dict) -> None:
    """Give the model the dataset's classes and channels when the recipe leaves them open; refuse a mismatch.

    A head with the wrong number of classes trains without complaint (a 10-class folder under a
    1000-class ImageNet recipe starts at loss ln 1000), and a channel mismatch only fails once the loader
    runs, so both are checked here, before anything is built. The synthetic dataset follows the model.
    """
    n_cls, chans = int(dataset["num_classes"]), int(dataset["in_chans"])
    name = dataset.get("name", "the dataset")
    follows_model = name == "synthetic"
    if m.num_classes is None:
        m.num_classes = n_cls
    elif m.num_classes != n_cls and not follows_model:
        where = f" in {dataset['root']}" if dataset.get("root") else ""
        raise MutualNetError(
            f"model.num_classes is {m.num_classes} but {name}{where} has {n_cls} classes; leave it out of the "
            f"recipe (or --set model.num_classes=null) to use the dataset's, or --set model.num_classes={n_cls}")
    given = m.args.setdefault("in_chans", chans)
    if given != chans and not follows_model:
        raise MutualNetError(f"model.args.in_chans is {given} but {name} images have {chans} channel"
                             f"{'s' if chans != 1 else ''}; --set model.args.in_chans={chans}")


def resolve(cfg: TrainConfig, dataset: dict | None = None, defaults: ModelInfo | None = None) -> TrainConfig:
    """Fill the ``None`` defaults from the model registry (and ``dataset`` info) and check consistency.

    Args:
        cfg: The config as loaded.
        dataset: ``{"num_classes", "in_chans"}`` of the dataset, when known (``dataset_info``).
        defaults: The model's width range and resolutions when they do not come from the registry (a model
            object given to :func:`mutualnet.train.fit`).

    Returns:
        A new config; single-network modes get ``width_range == [width, width]`` and one resolution.
    """
    from ..models import model_info

    cfg = config_from_dict(config_to_dict(cfg))  # a copy
    info = defaults or model_info(cfg.model.name)
    m, d, t, o, r = cfg.model, cfg.data, cfg.train, cfg.optim, cfg.run
    if t.mode not in MODES:
        raise MutualNetError(f"unknown train.mode {t.mode!r}; choose one of {', '.join(MODES)}")
    wr = list(m.width_range if m.width_range is not None else info.width_range)
    if len(wr) != 2 or not 0 < wr[0] <= wr[1]:
        raise MutualNetError(f"model.width_range must be [lo, hi] with 0 < lo <= hi, got {m.width_range}")
    lo, hi = wr
    res = sorted(t.resolutions if t.resolutions is not None else info.resolutions, reverse=True)
    if not res or min(res) < 1:
        raise MutualNetError(f"train.resolutions must be positive pixel sizes, got {t.resolutions}")
    if t.mode in SINGLE_NETWORK_MODES:
        w = hi if t.width is None else t.width
        if not lo - 1e-9 <= w <= hi + 1e-9:
            raise MutualNetError(f"train.width {w:g} is outside model.width_range [{lo:g}, {hi:g}]")
        t.width, lo, hi = float(w), float(w), float(w)
        if t.mode == "single":
            res = [res[0] if t.resolution is None else t.resolution]
    m.width_range, t.resolutions = [float(lo), float(hi)], [int(x) for x in res]
    if m.depth_range is not None and (len(m.depth_range) != 2 or not 1 <= m.depth_range[0] <= m.depth_range[1]):
        raise MutualNetError(f"model.depth_range must be [lo, hi] blocks per stage with 1 <= lo <= hi, "
                             f"got {m.depth_range}")
    if dataset is not None:
        adopt_dataset(m, dataset)
    if d.input_size is None:
        d.input_size = t.resolutions[0]
    # loader processes beyond the cores this process may use only compete for them (a recipe's 8 on a 2-core box)
    d.workers = available_cores() if d.workers is None else min(d.workers, available_cores())
    if d.input_size < t.resolutions[0]:
        raise MutualNetError(f"data.input_size {d.input_size} is below the highest resolution {t.resolutions[0]}")
    checks = [
        (t.num_subnets >= 2 or t.mode in SINGLE_NETWORK_MODES, "train.num_subnets must be at least 2"),
        (t.epochs >= 1, "train.epochs must be at least 1"),
        (t.temperature > 0, "train.temperature must be positive"),
        (0 <= t.label_smoothing < 1, "train.label_smoothing must be in [0, 1)"),
        (t.distill in DISTILL, f"train.distill must be {' or '.join(DISTILL)}, got {t.distill!r}"),
        (t.alpha_min <= t.alpha_max, f"train.alpha_min ({t.alpha_min:g}) must not exceed train.alpha_max "
                                     f"({t.alpha_max:g})"),
        (not t.full_depth_epochs or m.depth_range is not None and m.depth_range[0] < m.depth_range[1],
         "train.full_depth_epochs needs an elastic model.depth_range (it says when depth becomes elastic)"),
        (t.full_depth_epochs < t.epochs, f"train.full_depth_epochs ({t.full_depth_epochs:g}) must be below "
                                         f"train.epochs ({t.epochs}): depth would never be trained elastic"),
        (t.regularize in REGULARIZE, f"train.regularize must be {' or '.join(REGULARIZE)}, got {t.regularize!r}"),
        (not (m.zero_init_residual and m.init), "model.zero_init_residual and model.init together: the pretrained "
                                                "weights would replace the zeroed scales; drop one of them"),
        (d.batch_size >= 1, "data.batch_size must be positive"),
        (d.resize in RESIZE_MODES, f"data.resize must be one of {', '.join(RESIZE_MODES)}, got {d.resize!r}"),
        (d.padding_mode in PADDING_MODES, f"data.padding_mode must be zeros or reflect, got {d.padding_mode!r}"),
        (d.lighting >= 0 and d.color_jitter >= 0, "data.lighting and data.color_jitter must be >= 0"),
        (len(d.crop_scale) == 2 and 0 < d.crop_scale[0] <= d.crop_scale[1] <= 1,
         "data.crop_scale must be [lo, hi] within (0, 1]"),
        (o.lr > 0 and o.weight_decay >= 0 and 0 <= o.min_lr <= o.lr, "optim: need lr > 0, weight_decay >= 0, "
                                                                      "0 <= min_lr <= lr"),
        (o.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0"),
        (r.amp in ("none", "bf16", "fp16"), f"run.amp must be none, bf16 or fp16, got {r.amp!r}"),
        (r.save_every >= 0 and r.val_every >= 0 and r.log_every >= 1, "run: save_every/val_every >= 0, "
                                                                      "log_every >= 1"),
        (r.max_steps is None or r.max_steps >= 1, "run.max_steps must be positive"),
        (r.compile in (True, False, "auto"), f"run.compile must be true, false or auto, got {r.compile!r}"),
        (r.compile_backend in ("inductor", "aot_eager"),
         f"run.compile_backend must be inductor or aot_eager, got {r.compile_backend!r}"),
        (d.decoder in ("torchvision", "pil"), f"data.decoder must be torchvision or pil, got {d.decoder!r}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise MutualNetError(msg)
    return cfg
