"""Self-describing checkpoints: atomic writes, safe loads, and rebuilding the model.

A checkpoint is a plain dict (loadable with ``torch.load(..., weights_only=True)``, so loading never
runs code)::

    {
      "format": "mutualnet", "version": 2,
      "model_name": "mobilenet_v2", "model_args": {...create_model kwargs, incl. width_range...},
      "model": <state dict, calibrated BN statistics included as calib_stats.* entries>,
      "meta": {"resolutions": [...], "mode": "mutual", "preprocessing": {...}, ...},   # CheckpointMeta
      ... training state (optimizer, scheduler, scaler, rng, epoch, step) added by the trainer ...
      "query_table": {...}                                     # optional, added by `mutualnet search`
    }

Each fact is stored once: the width range in ``model_args``; how inputs are made (statistics, crop, resize
mode) in ``meta["preprocessing"]``, which :func:`model_from_checkpoint` hands to the model as
``model.preprocessing``. :class:`CheckpointMeta` types ``meta``; :func:`upgrade_meta` reads older layouts.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the target, so a
crash while saving never corrupts the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data.preprocess import DEFAULT_RESIZE, Preprocessing, preprocessing_for
from .errors import MutualNetError
from .io import atomic_save, read_torch_file
from .models import create_model
from .validate import MAX_IN_CHANS, check_int, check_pixels

__all__ = ["FORMAT", "VERSION", "PYTHON_BUILT", "CheckpointMeta", "checkpoint_meta", "upgrade_meta", "atomic_save",
           "model_name_of", "built_in_python", "python_built_error", "save_checkpoint", "load_checkpoint",
           "model_from_checkpoint", "checkpoint_dict", "read_torch_file", "is_checkpoint", "load_weights",
           "read_weights", "Weights"]

FORMAT = "mutualnet"
VERSION = 2  # 2: the preprocessing once, in meta["preprocessing"] (1 also kept meta["resize"]); see upgrade_meta
# model_name prefix of a model the registry cannot rebuild (mutualnet.slim output, a model object given to
# mutualnet.train.fit): ``python:<class>``; its weights load only into the same model object, in Python
PYTHON_BUILT = "python:"


@dataclass
class CheckpointMeta:
    """How a checkpoint's weights were made: the ``meta`` entry, written by training, search and detection.

    Stored as a plain dict (``weights_only`` loading); :meth:`from_dict` reads any older layout (through
    :func:`upgrade_meta`) and keeps unknown keys in ``extra``.
    """

    task: str = "classification"  # classification | detection
    mode: str | None = None  # training mode (mutual, usnet, ...; see mutualnet.train.config.MODES)
    resolutions: list[int] = field(default_factory=list)  # training resolutions (detection: scales), highest first
    num_subnets: int | None = None  # sub-networks per iteration
    dataset: dict = field(default_factory=dict)  # name, root, num_classes, ... (detection: annotations, cat_ids)
    epochs: int | None = None  # epochs the run was planned for
    epoch: int | None = None  # epoch the weights are from
    step: int | None = None  # iterations done
    top1: dict | None = None  # the last validation's top-1 per evaluated configuration
    preprocessing: Preprocessing | None = None  # classification: statistics, crop, resize mode (the one record)
    max_size: int | None = None  # detection: long-side cap of the input
    calibrated: bool = False  # holds the BN statistics of every searched configuration
    extra: dict = field(default_factory=dict)  # anything else (class_names, released_widths, source, ...)

    def to_dict(self) -> dict:
        """The plain dict stored in the checkpoint; fields at their default are left out."""
        default = CheckpointMeta()
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d = {k: v for k, v in d.items() if v != getattr(default, k)} | dict(self.extra)
        if self.preprocessing is not None:
            d["preprocessing"] = self.preprocessing.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict | CheckpointMeta | None, preprocessing: Preprocessing | None = None) -> CheckpointMeta:
        """The typed meta of ``d`` in any layout; ``preprocessing``: the record to use where ``d`` holds none."""
        d = upgrade_meta(d.to_dict() if isinstance(d, CheckpointMeta) else d, preprocessing)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: d.pop(k) for k in list(d) if k in names and d[k] is not None}
        return cls(**known, extra=d)


def upgrade_meta(meta: dict | None, preprocessing: Preprocessing | None = None) -> dict:
    """A checkpoint's ``meta`` of any format version in today's layout (format 2), the one reader of older ones.

    Format 2 keeps how inputs are made once, as ``meta["preprocessing"]`` (here the typed
    :class:`Preprocessing`); ``preprocessing`` (a model's own record) fills it where ``meta`` has none. Format
    1 kept the resize mode beside it as ``meta["resize"]`` (and a record without it, or none). Before that
    there was no resize record (training was antialiased), the statistics and crop were ``meta["dataset"]``'s
    ``mean`` / ``std`` / ``input_size`` or implied by its name and ``resolutions`` (else ImageNet's at 224 px),
    and ``meta["width_range"]`` repeated ``model_args``. A detector has no classifier preprocessing.
    """
    d = dict(meta or {})
    d.pop("width_range", None)
    resize = d.pop("resize", None) or DEFAULT_RESIZE
    if d.get("task", "classification") != "classification":
        return d
    pre = d.get("preprocessing")
    if isinstance(pre, dict):
        pre = Preprocessing.from_dict({"resize": resize, **pre})
    elif not isinstance(pre, Preprocessing):
        pre = preprocessing
    ds = d["dataset"] if isinstance(d.get("dataset"), dict) else {}
    if pre is None:  # older than any record: what the dataset and resolutions imply
        size = ds.get("input_size") or max(d.get("resolutions") or [224])
        chans = check_int(ds.get("in_chans") or 3, "meta dataset in_chans", 1, MAX_IN_CHANS)
        pre = Preprocessing(ds["mean"], ds["std"], size, resize=resize) if ds.get("mean") and ds.get("std") \
            else preprocessing_for(ds.get("name") or "imagefolder", size, in_chans=chans, resize=resize)
    d["preprocessing"] = pre
    if ds:
        d["dataset"] = {k: v for k, v in ds.items() if k not in ("mean", "std", "input_size")}  # in the record now
    return d


def checkpoint_meta(ckpt: dict) -> CheckpointMeta:
    """The typed meta of a loaded checkpoint (any version; a top-level ``task`` entry wins)."""
    meta = ckpt.get("meta") or {}
    return CheckpointMeta.from_dict({**meta, "task": ckpt["task"]} if ckpt.get("task") else meta)


def model_name_of(model: nn.Module) -> str:
    """The ``model_name`` a checkpoint of ``model`` records: its registry name, or ``python:<class>`` for a
    slimmable model built in Python (:func:`mutualnet.slim`, your own class), which only Python can rebuild."""
    name = getattr(model, "model_name", None)
    if name is not None:
        return name
    if getattr(model, "width_range", None) is None:
        raise MutualNetError(f"{type(model).__name__} is not a slimmable model (no width_range); build it with "
                             "mutualnet.create_model or convert it with mutualnet.slim")
    return PYTHON_BUILT + type(model).__name__


def _model_args(model: nn.Module) -> dict:
    if hasattr(model, "model_args"):
        return dict(model.model_args)
    args = {"width_range": [float(w) for w in model.width_range], "num_classes": getattr(model, "num_classes", None),
            "in_chans": getattr(model, "in_chans", None)}  # what it is, for a reader: nothing rebuilds from it
    if getattr(model, "depth_range", None) is not None:
        args["depth_range"] = [int(d) for d in model.depth_range]
    return args


def built_in_python(ckpt: dict) -> bool:
    """Whether a checkpoint's model was built in Python (see :data:`PYTHON_BUILT`): no command can rebuild it."""
    return str(ckpt.get("model_name", "")).startswith(PYTHON_BUILT)


def python_built_error(ckpt: dict, source: str | os.PathLike | None = None) -> MutualNetError:
    """The one line for a command asked to rebuild a model that only Python can: where it can be used."""
    where = f"{source} holds" if source is not None else "this checkpoint holds"
    cls = str(ckpt["model_name"])[len(PYTHON_BUILT):]
    return MutualNetError(f"{where} {cls}, a model built in Python (mutualnet.slim or your own class), which the "
                          "command line cannot rebuild; use it from Python with the same model object: "
                          "mutualnet.checkpoint.model_from_checkpoint(path, model=model), "
                          "mutualnet.train.fit(model, ..., resume=path)")


def checkpoint_dict(model: nn.Module, meta: CheckpointMeta | dict | None = None, **extra: Any) -> dict:
    """The dict :func:`save_checkpoint` writes for ``model``.

    A model from :func:`mutualnet.create_model` is recorded by name and arguments (anything rebuilds it); any
    other slimmable model as ``python:<class>`` (:func:`model_name_of`), loadable into the same model object.
    A classifier's preprocessing is always recorded, once: ``meta``'s when it has one, else the model's
    ``preprocessing``, else what ``meta`` implies (its dataset and resolutions; ImageNet's at 224 px).
    """
    name = model_name_of(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = CheckpointMeta.from_dict(meta, getattr(model, "preprocessing", None))
    task = {} if meta.task == "classification" else {"task": meta.task}  # what model_from_checkpoint refuses
    return {"format": FORMAT, "version": VERSION, **task, "model_name": name, "model_args": _model_args(model),
            "model": state, "meta": meta.to_dict(), **extra}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: CheckpointMeta | dict | None = None,
                    **extra: Any) -> Path:
    return atomic_save(checkpoint_dict(model, meta, **extra), path)


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a mutualnet checkpoint (rather than, say, a plain state dict)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def _validate(ckpt: Any, path: str | os.PathLike) -> dict:
    if not is_checkpoint(ckpt):
        raise MutualNetError(
            f"{path} is not a mutualnet checkpoint (no 'format': 'mutualnet' entry); "
            "released MutualNet / US-Net weights are loaded with `mutualnet.deploy.interop`")
    version = ckpt.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise MutualNetError(f"checkpoint {path} is malformed: 'version' must be an integer")
    if version > VERSION:
        raise MutualNetError(f"{path} was written by a newer mutualnet (format version {ckpt['version']})")
    for key in ("model_name", "model_args", "model"):
        if key not in ckpt:
            raise MutualNetError(f"checkpoint {path} is incomplete: missing {key!r}")
    _check_types(ckpt, path)
    return ckpt


# what each entry of a checkpoint must be, checked before anything uses it (a crafted file that unpickles
# safely can still hold a list where a dict belongs)
_ENTRY_TYPES = {"model_name": str, "model_args": dict, "model": dict, "meta": dict, "config": dict,
                "train_state": dict, "query_table": dict, "task": str}


def _check_types(ckpt: dict, path: str | os.PathLike) -> None:
    for key, tp in _ENTRY_TYPES.items():
        if key in ckpt and not isinstance(ckpt[key], tp):
            raise MutualNetError(f"checkpoint {path} is malformed: {key!r} must be a {tp.__name__}, "
                                 f"got {type(ckpt[key]).__name__}")
    if not all(isinstance(k, str) for k in ckpt["model_args"]):
        raise MutualNetError(f"checkpoint {path} is malformed: 'model_args' keys must be strings")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["model"].items()):
        raise MutualNetError(f"checkpoint {path} is malformed: 'model' must map parameter names to tensors")
    meta = ckpt.get("meta") or {}
    if "resolutions" in meta:
        res = meta["resolutions"]
        if not isinstance(res, list) or not res:
            raise MutualNetError(f"checkpoint {path} is malformed: meta 'resolutions' must be a list of sizes")
        for r in res:
            check_pixels(r, f"checkpoint {path}: meta resolution")
    ds = meta.get("dataset")
    if ds is not None and not (isinstance(ds, dict) and all(
            ds.get(k) is None or isinstance(ds.get(k), str) for k in ("name", "root"))):
        raise MutualNetError(f"checkpoint {path} is malformed: meta 'dataset' must be a mapping with string "
                             "'name' and 'root'")
    if meta.get("preprocessing") is not None and not isinstance(meta["preprocessing"], dict):
        raise MutualNetError(f"checkpoint {path} is malformed: meta 'preprocessing' must be a mapping")


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Load and validate a mutualnet checkpoint, in today's layout whatever version wrote it; anything else is
    refused with a clear error."""
    ckpt = _validate(read_torch_file(path, map_location=map_location), path)
    return {**ckpt, "version": VERSION, "meta": checkpoint_meta(ckpt).to_dict()}


@dataclass(frozen=True)
class Weights:
    """Pretrained weights and what is known of the network they came from (nothing, for a plain state dict)."""

    state: dict[str, torch.Tensor]
    model_name: str | None = None
    width_range: tuple[float, float] | None = None


def read_weights(path: str | os.PathLike) -> Weights:
    """Pretrained weights from a mutualnet checkpoint or a plain state dict, reading the file once.

    A plain state dict may be wrapped as ``{"model": ...}`` or ``{"state_dict": ...}``, as torchvision
    and most trainers save them; it says nothing of its architecture or width range.
    """
    obj = read_torch_file(path)
    if is_checkpoint(obj):
        ckpt = _validate(obj, path)
        wr = ckpt["model_args"].get("width_range")
        return Weights(ckpt["model"], ckpt["model_name"], tuple(float(w) for w in wr) if wr else None)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise MutualNetError(f"{path} is neither a mutualnet checkpoint nor a state dict of tensors")
    return Weights(obj)


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str | None]:
    """``(state_dict, model_name)`` of :func:`read_weights` (``model_name`` is None for a plain state dict)."""
    w = read_weights(path)
    return w.state, w.model_name


def model_from_checkpoint(ckpt: dict | str | os.PathLike, *, map_location: str | torch.device = "cpu",
                          model: nn.Module | None = None) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (and calibrated statistics).

    Args:
        ckpt: A checkpoint or its path.
        map_location: Where the tensors are loaded.
        model: Load into this model object instead of building one: the way back for a model built in Python
            (:func:`mutualnet.slim`, your own class), which no registry can rebuild; it must be the same model
            (class or registry name, and width range).
    """
    source = None if isinstance(ckpt, dict) else ckpt
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt, map_location=map_location)
    if ckpt.get("task", "classification") != "classification":
        raise MutualNetError(f"this checkpoint holds a {ckpt['task']} model ({ckpt['model_name']}); rebuild it with "
                             "mutualnet.detection.detector_from_checkpoint / `mutualnet detect eval`")
    if model is not None:
        _check_same_model(ckpt, model, source)
    elif built_in_python(ckpt):
        raise python_built_error(ckpt, source)
    else:
        try:
            model = create_model(ckpt["model_name"], **ckpt["model_args"])  # width_range may be a list
        except (TypeError, MutualNetError) as e:  # model_args of the wrong type or range, or naming an argument twice
            raise MutualNetError(f"checkpoint model_args do not fit {ckpt['model_name']}: {e}") from None
    model.preprocessing = checkpoint_meta(ckpt).preprocessing  # calibration, search, deployment: as trained
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as e:  # shape mismatches
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        detail = lines[0] if lines else str(e).splitlines()[0]
        raise MutualNetError(f"checkpoint weights do not match {ckpt['model_name']}: {detail[:300]}") from None
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[0]})")
        raise MutualNetError(f"checkpoint weights do not match {ckpt['model_name']}: " + "; ".join(parts))
    return model


def _check_same_model(ckpt: dict, model: nn.Module, source: str | os.PathLike | None) -> None:
    where = source or "the checkpoint"
    name = model_name_of(model)
    if name != ckpt["model_name"]:
        raise MutualNetError(f"{where} holds a {ckpt['model_name']}, not this model ({name})")
    wr = ckpt["model_args"].get("width_range")
    if wr is not None and [float(w) for w in wr] != [float(w) for w in model.width_range]:
        raise MutualNetError(f"{where} was trained at widths [{float(wr[0]):g}, {float(wr[1]):g}], this model runs at "
                             f"[{model.width_range[0]:g}, {model.width_range[1]:g}]")
