"""``build_dataset``: one entry point for every dataset the recipes name, with clear errors for bad data.

Names: ``imagefolder`` (``root/train`` and ``root/val`` in torchvision ``ImageFolder`` layout),
``cifar10`` / ``cifar100`` (the python pickle batches, never downloaded), ``fashion_mnist`` (the idx
files, gzipped or not; default: the Debian package's ``/usr/share/datasets/fashion-mnist``) and
``synthetic``. Every dataset yields ``(normalised float tensor C x H x W at input_size, int label)``.
Calibration, search and ``eval`` read them through one seeded subset (:func:`random_subset`), decoded once
(:func:`load_images`, :func:`cached_subset`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets as tvd

from ..errors import MutualNetError
from ..io import read_bytes, read_image, read_image_tensor, read_pickle
from .preprocess import DATASET_STATS
from .synthetic import SyntheticImages
from .transforms import TensorImages, eval_transform, resize_uint8, train_transform

__all__ = ["DatasetInfo", "DATASETS", "FASHION_MNIST_ROOT", "build_dataset", "dataset_info", "random_subset",
           "load_images", "cached_subset", "image_count"]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
DATASETS = ("imagefolder", "cifar10", "cifar100", "fashion_mnist", "synthetic")


def random_subset(dataset: Dataset, n: int | None, seed: int = 0) -> Dataset:
    """``n`` images of ``dataset`` drawn with ``seed``, in their original order (all of it when ``n`` is None or
    not smaller): the one rule, so that calibration, search and ``mutualnet eval`` with one seed see the same
    images."""
    if n is None or n >= len(dataset):
        return dataset
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()
    return Subset(dataset, idx)


def load_images(dataset: Dataset, num_images: int | None = None, *, seed: int = 0, batch_size: int = 256,
                num_workers: int = 0, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Decode ``num_images`` samples (a seeded random subset; all when None) into one tensor, once.

    Returns ``(images, labels)``. Images are kept in float32 when they fit in 512 MB, else float16 (its
    precision, ~1e-3 on normalised values, is finer than the uint8 pixels they were decoded from).
    """
    n_total = len(dataset)
    if n_total == 0:
        raise MutualNetError("the dataset is empty")
    n = n_total if num_images is None else min(int(num_images), n_total)
    if n <= 0:
        raise MutualNetError(f"number of images must be positive, got {num_images}")
    if n < n_total:
        dataset = random_subset(dataset, n, seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    images, labels, pos = None, torch.empty(n, dtype=torch.int64), 0
    for x, y in loader:
        if images is None:
            if dtype is None:
                dtype = torch.float32 if n * x[0].numel() * 4 <= 512 * 2**20 else torch.float16
            images = torch.empty(n, *x.shape[1:], dtype=dtype)
        images[pos:pos + len(x)] = x
        labels[pos:pos + len(x)] = torch.as_tensor(y)
        pos += len(x)
    return images, labels


def cached_subset(ds: Dataset, n: int | None, seed: int, batch_size: int, num_workers: int,
                  cache_bytes: int = 2 * 2**30, shuffle: bool = False) -> tuple[Tensor, Tensor] | DataLoader:
    """``n`` images of ``ds`` (a seeded subset; None: all) decoded into memory when they fit ``cache_bytes``
    (float16), else a loader over them; ``shuffle``: in a seeded random order. The search's validation images."""
    ds = random_subset(ds, n, seed)
    if shuffle:  # a random order, so that every prefix is a random sample (class-sorted folders are common)
        ds = Subset(ds, torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed + 1)).tolist())
    x0, _ = ds[0]
    if len(ds) * x0.numel() * 2 <= cache_bytes:
        return load_images(ds, None, batch_size=batch_size, num_workers=num_workers)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def image_count(val: tuple[Tensor, Tensor] | DataLoader) -> int:
    """How many images :func:`cached_subset` holds."""
    return len(val[0]) if isinstance(val, tuple) else len(val.dataset)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset before seeing it."""

    name: str
    num_classes: int
    in_chans: int
    input_size: int  # native / recommended training resolution

    def to_dict(self) -> dict:
        return asdict(self)


def _check_name(name: str) -> str:
    key = name.lower().replace("-", "_")
    key = {"fashionmnist": "fashion_mnist", "imagenet": "imagefolder"}.get(key, key)
    if key not in DATASETS:
        raise MutualNetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key


def _check_split(split: str) -> str:
    if split not in ("train", "val"):
        raise MutualNetError(f"unknown split {split!r}; use 'train' or 'val'")
    return split


def _imagefolder_dir(root: str | os.PathLike | None, split: str) -> Path:
    if root is None:
        raise MutualNetError("dataset 'imagefolder' needs a root directory holding train/ and val/ (--data-root)")
    path = Path(root) / split
    if not path.is_dir():
        raise MutualNetError(f"image folder {path} not found; expected {root}/train/<class>/*.jpg and "
                             f"{root}/val/<class>/*.jpg")
    return path


def _refuse_symlink_loops(top: Path) -> None:
    """Refuse a folder tree in which a symlinked folder leads back to one of its own ancestors.

    torchvision's ``ImageFolder`` follows folder symlinks; a loop makes it list the same images over and over
    (until the path is too long) and the run then fails with a misleading message, or trains on copies.
    """
    stack = [(str(top), os.path.realpath(top), frozenset())]
    try:
        while stack:
            path, real, chain = stack.pop()
            chain = chain | {real}
            with os.scandir(path) as entries:
                for e in entries:
                    if not e.is_dir(follow_symlinks=True):
                        continue
                    sub_real = os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name)
                    if sub_real in chain:
                        raise MutualNetError(f"image folder {top} has a symlink loop: {e.path} leads back to "
                                             f"{sub_real}; remove the link")
                    stack.append((e.path, sub_real, chain))
    except OSError as e:
        raise MutualNetError(f"cannot read image folder {top}: {e}") from None


def _imagefolder_classes(root) -> list[str]:
    classes = sorted(e.name for e in os.scandir(_imagefolder_dir(root, "train")) if e.is_dir())
    if not classes:
        raise MutualNetError(f"no class folders in {Path(root) / 'train'}; expected train/<class>/*.jpg")
    return classes


def dataset_info(name: str, root: str | os.PathLike | None = None) -> DatasetInfo:
    """Number of classes, image channels and native input size of a dataset (reads no images)."""
    key = _check_name(name)
    if key == "imagefolder":
        return DatasetInfo(key, len(_imagefolder_classes(root)), 3, 224)
    return {
        "cifar10": DatasetInfo(key, 10, 3, 32),
        "cifar100": DatasetInfo(key, 100, 3, 32),
        "fashion_mnist": DatasetInfo(key, 10, 1, 28),
        "synthetic": DatasetInfo(key, 10, 3, 32),
    }[key]


def _load_rgb(path: str) -> Image.Image:
    return read_image(path, "RGB")


# how ``imagefolder`` reads a file; the transforms are the same for both (benchmarks/bench_jpeg_path.py)
DECODERS = {"torchvision": read_image_tensor, "pil": _load_rgb}


def _build_imagefolder(root, split, input_size, augment, crop_scale, hflip, color_jitter, val_resize_ratio,
                       lighting=0.0, decoder="torchvision"):
    classes = _imagefolder_classes(root)
    if decoder not in DECODERS:
        raise MutualNetError(f"unknown image decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    tf = (train_transform(input_size, crop_scale=crop_scale, hflip=hflip, color_jitter=color_jitter,
                          lighting=lighting) if augment
          else eval_transform(input_size, resize_ratio=val_resize_ratio))
    _refuse_symlink_loops(_imagefolder_dir(root, split))
    try:
        ds = tvd.ImageFolder(str(_imagefolder_dir(root, split)), transform=tf, loader=DECODERS[decoder])
    except (FileNotFoundError, OSError) as e:
        raise MutualNetError(f"bad image folder {Path(root) / split}: {e}") from None
    if ds.classes != classes:
        raise MutualNetError(f"{Path(root) / split} has classes {ds.classes[:5]}... but train/ has "
                             f"{classes[:5]}...; train and val must hold the same class folders")
    return ds


# file names of the python versions (torchvision's tables): folder, train batches, test batch, meta file and keys
_CIFAR = {
    "cifar10": (tvd.CIFAR10.base_folder, [f for f, _ in tvd.CIFAR10.train_list], tvd.CIFAR10.test_list[0][0],
                tvd.CIFAR10.meta["filename"], tvd.CIFAR10.meta["key"], "labels", 10),
    "cifar100": (tvd.CIFAR100.base_folder, [f for f, _ in tvd.CIFAR100.train_list], tvd.CIFAR100.test_list[0][0],
                 tvd.CIFAR100.meta["filename"], tvd.CIFAR100.meta["key"], "fine_labels", 100),
}


def _read_cifar_batch(path: Path, key: str, labels_key: str, n_cls: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR python batch through the restricted unpickler: only numpy arrays are admitted, so a crafted
    file cannot run code; then its shape and labels are checked."""
    entry = read_pickle(path, f"{key} batch")
    data = entry.get("data") if isinstance(entry, dict) else None
    labels = entry.get(labels_key) if isinstance(entry, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise MutualNetError(f"malformed {key} batch {path}: 'data' must be a uint8 array of N x 3072")
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data) or not all(
            isinstance(v, int | np.integer) and 0 <= v < n_cls for v in labels):
        raise MutualNetError(f"malformed {key} labels in {path}: need {len(data)} integers in [0, {n_cls})")
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, 3, 32, 32)
    return images, torch.as_tensor(np.asarray(labels, dtype=np.int64))


def _load_cifar(key: str, root, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    folder_name, train_files, test_file, meta_file, names_key, labels_key, n_cls = _CIFAR[key]
    if root is None:
        raise MutualNetError(f"dataset {key!r} needs --data-root: the directory holding {folder_name}/")
    root = Path(root)
    folder = root if root.name == folder_name else root / folder_name  # accept the batches folder itself
    files = (train_files if split == "train" else [test_file]) + [meta_file]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise MutualNetError(f"{key} files missing in {folder}: {', '.join(missing)} (unpack the python version "
                             f"of the dataset there; mutualnet never downloads)")
    parts = [_read_cifar_batch(folder / f, key, labels_key, n_cls) for f in files[:-1]]
    meta = read_pickle(folder / meta_file, f"{key} meta file")
    classes = meta.get(names_key) if isinstance(meta, dict) else None
    if not isinstance(classes, list) or len(classes) != n_cls or not all(isinstance(c, str) for c in classes):
        raise MutualNetError(f"malformed {key} meta file {folder / meta_file}: '{names_key}' must list {n_cls} "
                             "class names")
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), classes


_IDX_DTYPES = {0x08: torch.uint8}


def _read_idx(path: Path) -> torch.Tensor:
    """Read an idx file (the MNIST format: magic, big-endian dims, raw bytes), gzipped or not."""
    raw = read_bytes(path, "Fashion-MNIST file")
    try:
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    except struct.error:
        raise MutualNetError(f"{path} is not an idx file (too short)") from None
    if zero != 0 or dtype not in _IDX_DTYPES:
        raise MutualNetError(f"{path} is not a uint8 idx file (magic {raw[:4].hex()})")
    body = raw[4 + 4 * ndim:]
    count = 1
    for d in dims:
        count *= d
    if len(body) != count:
        raise MutualNetError(f"{path} is truncated or malformed: header says {dims}, found {len(body)} bytes")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*dims)


def _find_idx(root: Path, stem: str) -> Path:
    for folder in (root, root / "raw", root / "FashionMNIST" / "raw"):
        for name in (f"{stem}.gz", stem):
            if (folder / name).is_file():
                return folder / name
    raise MutualNetError(f"Fashion-MNIST file {stem}[.gz] not found in {root}; install the Debian package "
                         f"fashion-mnist or pass --data-root to a folder holding the idx files")


def _load_fashion_mnist(root, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    root = Path(root or FASHION_MNIST_ROOT)
    if not root.is_dir():
        raise MutualNetError(f"Fashion-MNIST directory {root} not found; install the Debian package "
                             "dataset-fashion-mnist or pass --data-root")
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte")).to(torch.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise MutualNetError(f"Fashion-MNIST files in {root} disagree: images {tuple(images.shape)}, "
                             f"labels {tuple(labels.shape)}")
    if len(labels) and int(labels.max()) > 9:
        raise MutualNetError(f"Fashion-MNIST labels in {root} are out of range (max {int(labels.max())})")
    return images.unsqueeze(1), labels, list(tvd.FashionMNIST.classes)


def build_dataset(name: str, split: str, *, root: str | os.PathLike | None = None, input_size: int | None = None,
                  augment: bool | None = None, crop_scale: tuple[float, float] = (0.08, 1.0), hflip: bool = True,
                  color_jitter: float = 0.0, val_resize_ratio: float = 0.875, synthetic_length: int = 512,
                  seed: int = 0, crop_padding: int = 4, num_classes: int | None = None,
                  in_chans: int | None = None, lighting: float = 0.0, padding_mode: str = "zeros",
                  decoder: str = "torchvision") -> Dataset:
    """Build a dataset split yielding ``(normalised float C x H x W tensor, int label)``.

    Args:
        name: ``imagefolder``, ``cifar10``, ``cifar100``, ``fashion_mnist`` or ``synthetic``.
        split: ``train`` or ``val`` (CIFAR's and Fashion-MNIST's test sets serve as ``val``).
        root: data directory (``imagefolder``/``cifar*`` need one; Fashion-MNIST defaults to the Debian path).
        input_size: output side in pixels (default: the dataset's native size). MutualNet trains at the
            highest resolution and makes the others by resizing batches on the device.
        augment: training augmentation; defaults to True for ``train`` and False for ``val``. False gives the
            evaluation transform: Resize(input_size / val_resize_ratio) + CenterCrop for photos, the whole
            image resized to ``input_size`` for the small in-memory datasets.
        crop_scale, hflip, color_jitter: RandomResizedCrop area range, horizontal flip, jitter strength.
        lighting: PCA lighting noise std (:class:`~mutualnet.data.transforms.Lighting`; RGB images only).
        crop_padding, padding_mode: padding of the random crop used for the small datasets (CIFAR,
            Fashion-MNIST), ``"zeros"`` or ``"reflect"``.
        decoder: how ``imagefolder`` decodes files: ``torchvision`` (torchvision.io into a uint8 tensor, the
            faster per core) or ``pil``; the transforms are the same.
        synthetic_length, seed, num_classes, in_chans: the synthetic dataset's size, seed and shape (the
            ``val`` split holds different samples of the same classes).
    """
    key, split = _check_name(name), _check_split(split)
    augment = split == "train" if augment is None else augment
    if key != "synthetic" and (num_classes is not None or in_chans is not None):
        info = dataset_info(key, root)
        if num_classes not in (None, info.num_classes) or in_chans not in (None, info.in_chans):
            raise MutualNetError(f"{key} has {info.num_classes} classes and {info.in_chans} channels; "
                                 f"got num_classes={num_classes}, in_chans={in_chans}")
    if input_size is not None and input_size < 8:
        raise MutualNetError(f"input size {input_size} is too small (at least 8 pixels)")
    if key == "synthetic":
        info = dataset_info(key)
        return SyntheticImages(synthetic_length, num_classes or info.num_classes, input_size or info.input_size,
                               in_chans or info.in_chans, seed=seed,
                               offset=0 if split == "train" else synthetic_length)
    if key == "imagefolder":
        return _build_imagefolder(root, split, input_size or 224, augment, crop_scale, hflip, color_jitter,
                                  val_resize_ratio, lighting, decoder)
    images, labels, classes = (_load_fashion_mnist(root, split) if key == "fashion_mnist"
                               else _load_cifar(key, root, split))
    if input_size is not None:
        images = resize_uint8(images, input_size)
    mean, std = DATASET_STATS[key]
    return TensorImages(images, labels, mean=mean, std=std, train=augment, padding=crop_padding, hflip=hflip,
                        color_jitter=color_jitter, classes=classes, padding_mode=padding_mode, lighting=lighting)
