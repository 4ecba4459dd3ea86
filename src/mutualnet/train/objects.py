"""Train a model object on dataset objects: :func:`fit`, the Python way into the trainer of ``mutualnet train``.

A notebook user holds a model (``mutualnet.slim(my_net)``, ``create_model(...)``, a ``tv/`` or ``timm/`` model)
and datasets. :func:`fit` hands them to :func:`mutualnet.train.loop.train` -- the same loop, checkpoints, exact
resume, metrics and divergence stop -- in place of the model a recipe names and the datasets ``data.name`` /
``data.root`` would build. What the trainer would read from the registry and the data folder (width range,
classes, channels, image size) comes from the objects instead (:func:`resolve_objects`).

A checkpoint of a model only Python can rebuild (``model_name`` ``python:<class>``, see
:data:`mutualnet.checkpoint.PYTHON_BUILT`) is used with the same object again: ``fit(model, ..., resume=path)``,
``model_from_checkpoint(path, model=model)``; the command line refuses it with one line saying so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate

from ..checkpoint import model_name_of
from ..data.datasets import DatasetInfo
from ..data.preprocess import GIVEN, class_names_of
from ..errors import MutualNetError
from ..models import ModelInfo
from .config import TrainConfig, apply_overrides, config_from_dict, config_to_dict, load_config, resolve

__all__ = ["fit", "ObjectData", "resolve_objects", "default_resolutions"]

# the paper's ImageNet resolutions {224, 192, 160, 128} as fractions of the highest
RESOLUTION_RATIOS = (1.0, 6 / 7, 5 / 7, 4 / 7)


@dataclass(frozen=True)
class ObjectData:
    """Datasets given as objects, which :func:`~mutualnet.train.loop.build_data` uses instead of building them.

    Each yields ``(image tensor C x H x W, integer label)`` with its own transform (augmentation included);
    the trainer draws the order and seeds each batch's random transforms itself, so a resumed run sees the
    same images (:class:`~mutualnet.train.distributed.SeededSamples`).
    """

    train: Dataset
    val: Dataset


def default_resolutions(side: int, min_resolution: int = 1) -> list[int]:
    """Training resolutions for images of ``side`` pixels: the paper's 224/192/160/128 scaled to it."""
    return sorted({max(round(side * k), int(min_resolution)) for k in RESOLUTION_RATIOS}, reverse=True)


def _dataset_of(obj: Any, what: str) -> tuple[Dataset, dict[str, Any]]:
    """The dataset of ``obj`` and, for a DataLoader, the settings it carries (batch size, workers)."""
    if isinstance(obj, DataLoader):
        if obj.batch_size is None or obj.collate_fn is not default_collate:
            raise MutualNetError(f"{what}: a DataLoader with its own batch sampler or collate_fn; give its dataset "
                                 "(samples: image tensor, label) and the batch size as data.batch_size")
        train = what == "train_data"
        return obj.dataset, {"data.batch_size" if train else "data.val_batch_size": obj.batch_size,
                             **({"data.workers": obj.num_workers} if train else {})}
    if not isinstance(obj, Dataset) or not hasattr(obj, "__len__"):
        raise MutualNetError(f"{what} must be a torch Dataset with a length, or a DataLoader; got "
                             f"{type(obj).__name__}")
    return obj, {}


def _first_image(ds: Dataset, what: str) -> Tensor:
    if len(ds) == 0:
        raise MutualNetError(f"{what} is empty")
    item = ds[0]
    if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], Tensor) and item[0].ndim == 3):
        got = type(item).__name__ if not isinstance(item, tuple | list) else \
            "(" + ", ".join(f"{type(v).__name__}{list(v.shape) if isinstance(v, Tensor) else ''}" for v in item) + ")"
        raise MutualNetError(f"{what} must yield (image tensor C x H x W, integer label), got {got}; add a "
                             "transform such as torchvision.transforms.ToTensor()")
    return item[0]


def resolve_objects(cfg: TrainConfig, model: nn.Module, data: ObjectData) -> tuple[TrainConfig, DatasetInfo]:
    """The config with what the objects decide filled in and checked: the model's name (``python:<class>`` when
    no registry builds it), width and depth range, classes and channels, and the images' size.

    ``train.resolutions`` defaults to the training images' side and :data:`RESOLUTION_RATIOS` of it.
    """
    rng = getattr(model, "width_range", None)
    if rng is None:
        raise MutualNetError(f"{type(model).__name__} is not slimmable (no width_range); convert it with "
                             "mutualnet.slim(model, width_range=(lo, 1.0)) or build one with mutualnet.create_model")
    m, d = cfg.model, cfg.data
    if m.init:
        raise MutualNetError("model.init loads weights into the model a recipe builds; a model object brings its "
                             "own: load them before fit (model.load_state_dict) and leave model.init out")
    if d.holdout:
        raise MutualNetError("data.holdout holds out images of a dataset the recipe builds; with dataset objects, "
                             "give the held-out images as val_data and leave data.holdout out")
    wr = [float(rng[0]), float(rng[1])]
    if m.width_range is not None and [float(w) for w in m.width_range] != wr:
        raise MutualNetError(f"model.width_range [{m.width_range[0]:g}, {m.width_range[1]:g}] differs from the model "
                             f"object's [{wr[0]:g}, {wr[1]:g}], which is fixed when it is built (mutualnet.slim(..., "
                             "width_range=...), create_model(..., width_range=...)); leave model.width_range out")
    x = _first_image(data.train, "train_data")
    chans, side = int(x.shape[0]), int(min(x.shape[-2:]))
    own_chans = getattr(model, "in_chans", chans)
    if own_chans != chans:
        raise MutualNetError(f"train_data images have {chans} channel{'s' if chans != 1 else ''} but "
                             f"{type(model).__name__} takes {own_chans}")
    val_x = _first_image(data.val, "val_data")
    if int(val_x.shape[0]) != chans:
        raise MutualNetError(f"val_data images have {val_x.shape[0]} channels, train_data images {chans}")
    n_cls = getattr(model, "num_classes", None)
    if not isinstance(n_cls, int) or n_cls < 1:
        raise MutualNetError(f"{type(model).__name__} does not say how many classes it outputs (num_classes)")
    names = class_names_of(data.train)
    if names and len(names) != n_cls:
        raise MutualNetError(f"train_data has {len(names)} classes (its .classes) but {type(model).__name__} outputs "
                             f"{n_cls}; give the model {len(names)} outputs")
    m.name, m.width_range, m.num_classes, m.args = model_name_of(model), wr, n_cls, {"in_chans": chans}
    depth = getattr(model, "depth_range", None)
    m.depth_range = [int(depth[0]), int(depth[1])] if depth is not None and depth[0] < depth[1] else None
    d.name, d.root, d.input_size = GIVEN, None, side  # the images come at their own size
    res = cfg.train.resolutions
    if res is not None and max(res) > side:
        raise MutualNetError(f"train.resolutions: {max(res)} px exceeds the train_data images ({side} px)")
    defaults = ModelInfo(name=m.name, family=GIVEN, input_size=side, width_range=(wr[0], wr[1]), in_chans=chans,
                         resolutions=tuple(default_resolutions(side, getattr(model, "min_resolution", 1))),
                         num_classes=n_cls)
    return resolve(cfg, None, defaults), DatasetInfo(GIVEN, n_cls, chans, side)


# what a recipe says about its own model and data source, which the objects replace (an override of one of them
# is the caller's explicit wish and is checked against the objects instead)
OBJECT_KEYS = {"model": ("name", "width_range", "depth_range", "num_classes", "args", "init"),
               "data": ("name", "root", "input_size", "holdout")}


def _config(config: str | os.PathLike | TrainConfig | Mapping | None) -> dict:
    """The recipe's settings as a dict, without what the objects replace (:data:`OBJECT_KEYS`)."""
    if config is None:
        cfg = TrainConfig()
    elif isinstance(config, TrainConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = config_from_dict(dict(config))
    else:
        cfg = load_config(config)
    data = config_to_dict(cfg)
    for section, keys in OBJECT_KEYS.items():
        for key in keys:
            data[section].pop(key)
    return data


def fit(model: nn.Module, train_data: Dataset | DataLoader, val_data: Dataset | DataLoader,
        config: str | os.PathLike | TrainConfig | Mapping | None = None, *,
        overrides: Mapping[str, Any] | Sequence[str] | None = None, resume: str | os.PathLike | None = None) -> Path:
    """Train ``model`` on ``train_data`` with the trainer of ``mutualnet train``; returns the run folder.

    The same loop as a recipe: the sandwich step of ``train.mode``, ``last.pt`` / ``best.pt`` (atomic, self-
    describing), ``metrics.jsonl``, validation of the widest and narrowest configuration on ``val_data`` each
    epoch, the divergence stop, exact resume. The model object is trained in place (it holds the last weights
    afterwards; ``best.pt`` the best validated ones).

    Args:
        model: A slimmable model: :func:`mutualnet.slim` of your network, :func:`mutualnet.create_model` (a zoo,
            ``tv/`` or ``timm/`` model). Its width range, classes and channels are the run's.
        train_data, val_data: Datasets yielding ``(image tensor C x H x W, integer label)`` with their own
            transforms (augmentation in ``train_data``), or DataLoaders over them (their dataset, batch size and
            workers are used; the trainer draws the order itself, seeded, for exact resume).
        config: A recipe (YAML path, :class:`TrainConfig` or nested dict); None: the defaults. What it says of its
            own model and data source (:data:`OBJECT_KEYS`) is replaced by the objects; ``train.resolutions``,
            when it leaves them open, are the images' side and 6/7, 5/7, 4/7 of it.
        overrides: ``{"train.epochs": 2, ...}`` or ``["train.epochs=2", ...]``, as ``--set``.
        resume: A ``last.pt`` of an earlier run of this model to continue exactly; its stored config is used
            (``overrides`` may change what ``mutualnet train --resume --set`` may), ``config`` must be None.

    Returns:
        The run folder (``run.out``).
    """
    from .loop import train
    from .runkit import resume_config

    train_ds, train_settings = _dataset_of(train_data, "train_data")
    val_ds, val_settings = _dataset_of(val_data, "val_data")
    if resume is not None:
        if config is not None:
            raise MutualNetError("resume continues a run with the config stored in its checkpoint; leave config out "
                                 "(overrides may change run.*, optim.lr and its schedule, train.epochs)")
        cfg = resume_config(resume, overrides)
    else:
        settings = apply_overrides(apply_overrides(_config(config), train_settings | val_settings), overrides)
        cfg = config_from_dict(settings)
    return train(cfg, resume, model=model, data=ObjectData(train_ds, val_ds))
