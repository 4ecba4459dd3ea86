"""The data a checkpoint was trained on, rebuilt from what it records (for calibration, search, evaluation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from torch.utils.data import Dataset

from ..errors import MutualNetError
from .datasets import build_dataset
from .splits import split_holdout

__all__ = ["CheckpointData", "data_from_checkpoint"]


@dataclass(frozen=True)
class CheckpointData:
    """How to build a checkpoint's datasets without augmentation.

    Attributes:
        build: ``(split, input_size) -> Dataset`` with the evaluation transform. ``split``: ``train`` (the
            images trained on: without the held-out ones), ``holdout`` (the held-out training images, see
            :mod:`mutualnet.data.splits`) or ``val`` (the test set).
        info: ``{"name", "root"}`` of the dataset (and ``holdout``: the held-out count), as query tables record it.
        workers: Data-loader workers suited to it (0 for in-memory datasets).
    """

    build: Callable[[str, int], Dataset]
    info: dict
    workers: int


def data_from_checkpoint(ckpt: dict, model: nn.Module, *, dataset: str | None = None, data_root: str | None = None,
                         workers: int | None = None) -> CheckpointData:
    """The checkpoint's dataset (its meta ``dataset`` and resolved config), with optional overrides.

    Args:
        ckpt: A loaded mutualnet checkpoint.
        model: The model rebuilt from it (synthetic data needs its classes and image channels).
        dataset, data_root: Another dataset name / folder than the recorded one (a root recorded for one
            dataset is not reused for another).
        workers: Loader workers (default: 0 for in-memory datasets, else 4); never more than the CPU cores
            this process may use (more only compete with each other and with the model for them).
    """
    from ..io import available_cores

    meta_ds = dict((ckpt.get("meta") or {}).get("dataset") or {})
    name = dataset or meta_ds.get("name")
    if not name:
        raise MutualNetError("the checkpoint does not record its dataset; pass --dataset (and --data-root)")
    root = data_root if data_root is not None else (meta_ds.get("root") if not dataset
                                                    or dataset == meta_ds.get("name") else None)
    cfg = ckpt.get("config") or {}  # the trainer's resolved config, when the checkpoint carries it
    cfg_data, cfg_run = cfg.get("data") or {}, cfg.get("run") or {}
    kw = {"val_resize_ratio": float(cfg_data.get("val_resize_ratio") or 0.875)}
    if name == "synthetic":  # same templates as in training: same seed
        kw |= {"num_classes": model.num_classes, "in_chans": model.in_chans,
               "synthetic_length": int(meta_ds.get("synthetic_length") or cfg_data.get("synthetic_length") or 512),
               "seed": int(meta_ds.get("seed") or cfg_run.get("seed") or 0)}

    foreign = dataset and dataset != meta_ds.get("name")  # another dataset: its own test set, nothing held out
    holdout = 0 if foreign else _holdout(meta_ds.get("holdout", cfg_data.get("holdout")))

    def build(split: str, size: int) -> Dataset:
        if split not in ("train", "val", "holdout"):
            raise MutualNetError(f"unknown split {split!r}: train, val or holdout")
        if split == "holdout" and not holdout:
            raise MutualNetError("the checkpoint was trained without held-out images (data.holdout); "
                                 "search it on the test set (--split test)")
        ds = build_dataset(name, "val" if split == "val" else "train", root=root, input_size=size, augment=False, **kw)
        if split == "val" or not holdout:
            return ds
        rest, held = split_holdout(ds, holdout)
        return held if split == "holdout" else rest

    info = {"name": name, "root": None if root is None else str(Path(root).expanduser().absolute())}
    if holdout:
        info["holdout"] = holdout
    wanted = workers if workers is not None else (4 if name == "imagefolder" else 0)
    return CheckpointData(build, info, min(wanted, available_cores()))


def _holdout(value: object) -> int:
    """The recorded ``data.holdout`` (0: none), checked: it decides which images a table is measured on."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MutualNetError(f"the checkpoint records a malformed data.holdout {value!r}")
    return value
