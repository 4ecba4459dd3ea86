"""How an image becomes a model's input: one typed record, carried by the model and stored once per artefact.

A checkpoint, a query table, an exported network and ``calibrated.pt`` are only usable on their own
if they say how images were normalised and sized during training, and MutualNet makes every lower
resolution by resizing one crop, so calibration, evaluation, search and deployment must also resize as
training did. :class:`Preprocessing` is that record (as timm's ``pretrained_cfg`` is): the model carries it
as ``model.preprocessing`` (set by the trainer, :func:`mutualnet.checkpoint.model_from_checkpoint` and the
released-weight converter), a checkpoint stores it once as ``meta["preprocessing"]``, and every stage reads
the resize mode and input size from it (:func:`model_preprocessing`) rather than taking them as arguments;
:func:`resize_batch` is the one function that makes a lower resolution in that mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MutualNetError
from ..validate import check_float, check_pixels
from .transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform

__all__ = ["Preprocessing", "RESIZE_MODES", "DEFAULT_RESIZE", "check_resize", "resize_batch", "DATASET_STATS", "GIVEN",
           "preprocessing_for", "model_preprocessing", "class_names_of", "normalisation_of", "artefact_fields"]

# how lower resolutions are made from a batch (see resize_batch); checkpoints without a record were trained
# with "antialias", the only mode before the setting existed
RESIZE_MODES = ("antialias", "official")
DEFAULT_RESIZE = "antialias"
GIVEN = "python"  # the dataset name of datasets given as objects (mutualnet.train.fit): their own transforms

# per-channel statistics of the training sets (uint8 / 255); ImageNet's for image folders
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}


def check_resize(mode: str) -> str:
    """``mode`` if it is one of :data:`RESIZE_MODES`, else a :class:`MutualNetError` listing them."""
    if mode not in RESIZE_MODES:
        raise MutualNetError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)} "
                             "(data.resize / the checkpoint's meta 'preprocessing')")
    return mode


def resize_batch(images: Tensor, resolution: int, mode: str = DEFAULT_RESIZE) -> Tensor:
    """A batch at ``resolution`` x ``resolution``, made on the batch's device.

    MutualNet makes every lower resolution from the same crop by resizing tensors, in training, in BN
    post-statistics and at test time, so every stage must resize the same way; this is the one function
    that does it, and ``mode`` (the ``resize`` of the model's :class:`~mutualnet.data.Preprocessing`) says how:

    * ``"antialias"``: bilinear, ``align_corners=False``, antialiased (filters before downsampling, so a
      128 px input carries no aliasing). mutualnet's default for new training.
    * ``"official"``: bilinear, ``align_corners=True``, no antialiasing: what the original MutualNet code
      does everywhere (its ``InputList``, ``ComputePostBN`` and test loop); use it for released weights.
    """
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    if check_resize(mode) == "official":
        return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=True,
                             antialias=False)
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=True)


@dataclass(frozen=True)
class Preprocessing:
    """The evaluation preprocessing of a model: ``(x / 255 - mean) / std`` at ``input_size`` pixels.

    Photos are resized (short side ``input_size / resize_ratio``) and centre-cropped to ``input_size``;
    lower resolutions are made by resizing that crop with ``resize`` (``data.resize``), in training, BN
    calibration, evaluation and deployment alike. Values are checked when the record is made, so a
    malformed checkpoint entry is one clear error.
    """

    mean: tuple[float, ...] = IMAGENET_MEAN  # per channel, of [0, 1] images
    std: tuple[float, ...] = IMAGENET_STD
    input_size: int = 224  # side of the evaluation crop (the highest training resolution)
    resize_ratio: float = 0.875  # evaluation: Resize(input_size / ratio) + CenterCrop(input_size)
    resize: str = DEFAULT_RESIZE  # how the crop becomes a lower resolution (RESIZE_MODES, see resize_batch)

    def __post_init__(self) -> None:
        if not isinstance(self.mean, (list, tuple)) or not isinstance(self.std, (list, tuple)) \
                or not self.mean or len(self.mean) != len(self.std):
            raise MutualNetError(f"preprocessing mean and std must be lists of one number per channel, got "
                                 f"{self.mean!r} and {self.std!r}")
        object.__setattr__(self, "mean", tuple(check_float(m, "preprocessing mean") for m in self.mean))
        object.__setattr__(self, "std", tuple(check_float(s, "preprocessing std", 0, lo_open=True)
                                              for s in self.std))
        object.__setattr__(self, "input_size", check_pixels(self.input_size, "preprocessing input_size"))
        object.__setattr__(self, "resize_ratio", check_float(self.resize_ratio, "preprocessing resize_ratio", 0, 1,
                                                             lo_open=True))
        check_resize(self.resize)

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
                      resize: str = DEFAULT_RESIZE, *, given: Any = None) -> Preprocessing:
    """The preprocessing :func:`mutualnet.data.build_dataset` applies to ``dataset``.

    The synthetic dataset is generated already normalised (mean 0, std 1 per channel). A dataset given as an
    object (``dataset`` :data:`GIVEN`, the object as ``given``) records the normalisation of its own transform
    (:func:`normalisation_of`); its images are taken at their size (``input_size``), not cropped.
    """
    if dataset == GIVEN:
        return Preprocessing(*normalisation_of(given, in_chans), input_size, 1.0, resize)
    if dataset == "synthetic":
        mean, std = (0.0,) * in_chans, (1.0,) * in_chans
    else:
        mean, std = DATASET_STATS.get(dataset, (IMAGENET_MEAN, IMAGENET_STD))
    return Preprocessing(mean, std, input_size, resize_ratio, resize)


def model_preprocessing(model: object) -> Preprocessing:
    """The record ``model`` carries (``model.preprocessing``); a model built by hand carries none and gets the
    default (ImageNet statistics, antialiased resizing, the only mode before the setting existed)."""
    pp = getattr(model, "preprocessing", None)
    return pp if isinstance(pp, Preprocessing) else Preprocessing()


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


def artefact_fields(model: object, meta: dict) -> dict:
    """The model's preprocessing record and the checkpoint's class names for a table or export, so it can be
    used without its checkpoint."""
    fields = {"preprocessing": model_preprocessing(model).to_dict()}
    if meta.get("class_names"):
        fields["class_names"] = list(meta["class_names"])
    return fields
