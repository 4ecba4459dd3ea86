"""How an image becomes a model's input, recorded once and carried by every artefact.

A checkpoint, a query table, an exported network and ``calibrated.pt`` are only usable on their own
if they say how images were normalised and sized during training; otherwise a user feeding raw
``[0, 1]`` tensors gets confident nonsense. :class:`Preprocessing` is that record: it is written into
the ``meta`` of every artefact (``meta["preprocessing"]``) beside the class names
(``meta["class_names"]``), and it rebuilds the evaluation transform.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .transforms import DEFAULT_RESIZE, IMAGENET_MEAN, IMAGENET_STD, eval_transform

__all__ = ["Preprocessing", "DATASET_STATS", "GIVEN", "preprocessing_for", "preprocessing_of", "artefact_meta",
           "class_names_of", "normalisation_of"]

GIVEN = "python"  # the dataset name of datasets given as objects (mutualnet.train.fit): their own transforms

# per-channel statistics of the training sets (uint8 / 255); ImageNet's for image folders
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}


@dataclass(frozen=True)
class Preprocessing:
    """The evaluation preprocessing of a model: ``(x / 255 - mean) / std`` at ``input_size`` pixels.

    Photos are resized (short side ``input_size / resize_ratio``) and centre-cropped to ``input_size``;
    lower test-time resolutions are made by resizing that crop with ``resize`` (``data.resize``), as in
    training.
    """

    mean: tuple[float, ...] = IMAGENET_MEAN  # per channel, of [0, 1] images
    std: tuple[float, ...] = IMAGENET_STD
    input_size: int = 224  # side of the evaluation crop (the highest training resolution)
    resize_ratio: float = 0.875  # evaluation: Resize(input_size / ratio) + CenterCrop(input_size)
    resize: str = DEFAULT_RESIZE  # how the crop becomes a lower resolution (RESIZE_MODES, see resize_batch)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @property
    def in_chans(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> Preprocessing | None:
        """The record in ``d`` (fields this version does not know are ignored), or None when there is none."""
        if not isinstance(d, dict) or d.get("mean") is None or d.get("std") is None:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def transform(self):
        """The evaluation transform for a PIL image: resize, centre crop, scale to [0, 1], normalise."""
        return eval_transform(self.input_size, resize_ratio=self.resize_ratio, mean=self.mean, std=self.std)

    def normalise(self, images: Tensor) -> Tensor:
        """``(images - mean) / std`` of a ``[0, 1]`` float batch (``N x C x H x W`` or ``C x H x W``)."""
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device).view(-1, 1, 1)
        return (images - mean) / std


def preprocessing_for(dataset: str, input_size: int, resize_ratio: float = 0.875, in_chans: int = 3,
                      resize: str = DEFAULT_RESIZE) -> Preprocessing:
    """The preprocessing :func:`mutualnet.data.build_dataset` applies to ``dataset``.

    The synthetic dataset is generated already normalised (mean 0, std 1 per channel).
    """
    if dataset == "synthetic":
        mean, std = (0.0,) * in_chans, (1.0,) * in_chans
    else:
        mean, std = DATASET_STATS.get(dataset, (IMAGENET_MEAN, IMAGENET_STD))
    return Preprocessing(mean, std, int(input_size), float(resize_ratio), resize)


def class_names_of(dataset: Any) -> list[str] | None:
    """The class names a dataset carries (``ImageFolder`` folders, CIFAR / Fashion-MNIST names), if any."""
    names = getattr(dataset, "classes", None)
    return [str(n) for n in names] if names else None


def normalisation_of(dataset: Any, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the ``Normalize`` in a dataset object's ``transform`` (through ``Subset`` and
    ``Compose``); without one, ``(0, 1)``: the model takes the tensors as the dataset yields them."""
    while hasattr(dataset, "dataset") and not hasattr(dataset, "transform"):  # Subset, ConcatDataset-like wrappers
        dataset = dataset.dataset
    todo = [getattr(dataset, "transform", None)]
    while todo:
        t = todo.pop(0)
        if t is None:
            continue
        if type(t).__name__ == "Normalize" and hasattr(t, "mean") and hasattr(t, "std"):
            mean, std = [float(v) for v in torch.as_tensor(t.mean).flatten()], \
                [float(v) for v in torch.as_tensor(t.std).flatten()]
            return tuple(mean * in_chans if len(mean) == 1 else mean), tuple(std * in_chans if len(std) == 1 else std)
        todo += list(getattr(t, "transforms", None) or [])
    return (0.0,) * in_chans, (1.0,) * in_chans


def artefact_meta(dataset: Any, name: str, input_size: int, resize_ratio: float = 0.875, in_chans: int = 3,
                  resize: str = DEFAULT_RESIZE) -> dict:
    """``{"preprocessing": ..., "class_names": ...}`` for the meta of a checkpoint trained on ``dataset``.

    A dataset given as an object (``name`` :data:`GIVEN`) records the normalisation of its own transform
    (:func:`normalisation_of`); its images are taken at their size (``input_size``), not cropped.
    """
    if name == GIVEN:
        pp = Preprocessing(*normalisation_of(dataset, in_chans), int(input_size), 1.0, resize)
    else:
        pp = preprocessing_for(name, input_size, resize_ratio, in_chans, resize)
    meta: dict[str, Any] = {"preprocessing": pp.to_dict()}
    names = class_names_of(dataset)
    if names:
        meta["class_names"] = names
    return meta


def preprocessing_of(meta: dict) -> Preprocessing:
    """The preprocessing an artefact's ``meta`` records; for older or converted checkpoints, what it implies.

    Order: ``meta["preprocessing"]``; else the statistics of ``meta["dataset"]["name"]`` at its
    ``input_size`` (or the highest of ``meta["resolutions"]``); else ImageNet's at 224 px.
    """
    meta = meta or {}
    resize = meta.get("resize") or DEFAULT_RESIZE  # checkpoints record it beside the rest (data.resize)
    recorded = Preprocessing.from_dict(meta.get("preprocessing"))
    if recorded is not None:
        return recorded if "resize" in meta["preprocessing"] else dataclasses.replace(recorded, resize=resize)
    ds = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    size = ds.get("input_size") or max(meta.get("resolutions") or [224])
    if ds.get("mean") is not None and ds.get("std") is not None:
        return Preprocessing(tuple(ds["mean"]), tuple(ds["std"]), int(size), resize=resize)
    return preprocessing_for(ds.get("name") or "imagefolder", int(size), in_chans=int(ds.get("in_chans") or 3),
                             resize=resize)
