"""COCO-format detection data: an annotation JSON plus an image folder.

:class:`CocoDetection` yields ``(image, target)`` in the form torchvision's detection models take: a float
image in [0, 1] (the detector normalises and resizes it) and a dict with ``boxes`` (XYXY pixels), ``labels``
(contiguous 1..K; 0 is background), ``masks`` (N x H x W uint8), ``image_id``, ``area`` and ``iscrowd``.
Polygon and RLE segmentations are decoded by pycocotools; boxes, masks and the image are flipped together
by torchvision's v2 transforms. Crowd regions and degenerate boxes are left out of the training targets (the
COCO evaluator still reads them from the annotation file).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import MutualNetError

__all__ = ["CocoDetection", "load_coco", "collate"]


def load_coco(annotations: str | os.PathLike) -> COCO:
    """Read and check a COCO annotation file; problems become one-line :class:`MutualNetError`\\ s."""
    path = Path(annotations)
    if not path.is_file():
        raise MutualNetError(f"annotation file not found: {path} (a COCO-format JSON, e.g. instances_val2017.json)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MutualNetError(f"annotation file {path} is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                    "categories")):
        raise MutualNetError(f"annotation file {path} is not COCO format: it needs 'images', 'annotations' and "
                             "'categories' lists")
    try:
        for img in data["images"]:
            int(img["id"]), str(img["file_name"]), int(img["height"]), int(img["width"])
        for cat in data["categories"]:
            int(cat["id"])
        for ann in data["annotations"]:
            int(ann["image_id"]), int(ann["category_id"])
            if len(ann["bbox"]) != 4:
                raise ValueError("bbox")
    except (KeyError, TypeError, ValueError) as e:
        raise MutualNetError(f"annotation file {path} has a malformed entry (missing or bad {e})") from None
    if not data["categories"]:
        raise MutualNetError(f"annotation file {path} lists no categories")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class CocoDetection(Dataset):
    """A COCO-format dataset for Mask R-CNN training and evaluation.

    Args:
        annotations: COCO instances JSON.
        images: Folder the ``file_name`` entries are relative to.
        train: Random horizontal flips (training); off for evaluation and calibration.
        skip_empty: Leave out images without (non-crowd) objects (torchvision's reference does for training).

    Attributes:
        coco: The pycocotools ``COCO`` index (ground truth for ``COCOeval``).
        cat_ids: COCO category ids; label ``i + 1`` is ``cat_ids[i]``.
        num_classes: ``len(cat_ids) + 1`` (background included), what the detector is built with.
    """

    def __init__(self, annotations: str | os.PathLike, images: str | os.PathLike, *, train: bool = False,
                 skip_empty: bool = False) -> None:
        self.root = Path(images)
        if not self.root.is_dir():
            raise MutualNetError(f"image folder not found: {self.root}")
        self.coco = load_coco(annotations)
        self.cat_ids = sorted(self.coco.getCatIds())
        self.label_of = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.num_classes = len(self.cat_ids) + 1
        ids = sorted(self.coco.imgs)
        if skip_empty:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns.get(i, []))]
        if not ids:
            raise MutualNetError(f"{annotations} lists no usable images")
        self.ids = ids
        self.transform = v2.RandomHorizontalFlip(0.5) if train else None

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, image_id: int) -> torch.Tensor:
        info = self.coco.imgs[image_id]
        path = self.root / info["file_name"]
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except (FileNotFoundError, OSError) as e:
            raise MutualNetError(f"cannot read image {path}: {e.__class__.__name__}") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = self.ids[index]
        img = self.load_image(image_id)
        h, w = img.shape[-2:]
        boxes, labels, masks, areas = [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            x, y, bw, bh = ann["bbox"]
            if ann.get("iscrowd", 0) or bw < 1 or bh < 1:
                continue
            boxes.append([x, y, x + bw, y + bh])
            labels.append(self.label_of[ann["category_id"]])
            masks.append(self.coco.annToMask(ann) if "segmentation" in ann else _box_mask(ann["bbox"], h, w))
            areas.append(float(ann.get("area", bw * bh)))
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                              format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": tv_tensors.Mask(torch.from_numpy(np.stack(masks)) if masks
                                     else torch.zeros(0, h, w, dtype=torch.uint8)),
            "image_id": image_id,
            "area": torch.tensor(areas, dtype=torch.float32),
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
        }
        image = tv_tensors.Image(img)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor)
                                                 else v for k, v in target.items()}


def _box_mask(bbox: list[float], h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    x, y, bw, bh = (int(round(v)) for v in bbox)
    m[y:y + bh, x:x + bw] = 1
    return m


def collate(batch: list) -> tuple[list, list]:
    """Detection batches are lists: images differ in size until the detector's transform pads them."""
    return tuple(zip(*batch))
