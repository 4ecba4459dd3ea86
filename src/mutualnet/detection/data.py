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
import math
import os
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ..errors import MutualNetError
from ..io import read_image, read_json

__all__ = ["CocoDetection", "load_coco", "collate"]


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _segmentation_ok(seg: object) -> bool:
    """A list of polygons (flat x, y lists of >= 3 points) or an RLE dict (``counts`` + ``size``)."""
    if isinstance(seg, list):
        return bool(seg) and all(isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                                 and all(_is_num(v) for v in poly) for poly in seg)
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        return (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)
                and (isinstance(counts, str) or (isinstance(counts, list) and all(_is_int(v) and v >= 0
                                                                                 for v in counts))))
    return False


def _check_coco(data: dict) -> str | None:
    """The first problem of a COCO instances dict, or None: every entry pycocotools and the dataset use is
    checked up front, so a bad file fails at start, not in the middle of an epoch."""
    image_ids, cat_ids = set(), set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            return f"images[{i}] needs an integer 'id' and a string 'file_name'"
        name = Path(img["file_name"])
        if name.is_absolute() or ".." in name.parts:
            return f"images[{i}] file_name {img['file_name']!r} must be relative to the image folder"
        if not all(_is_int(img.get(k)) and 0 < img[k] <= 1 << 16 for k in ("height", "width")):
            return f"images[{i}] needs positive integer 'height' and 'width'"
        image_ids.add(img["id"])
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            return f"categories[{i}] needs an integer 'id'"
        cat_ids.add(cat["id"])
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            return f"{where} is not a mapping"
        if ann.get("image_id") not in image_ids or not _is_int(ann.get("image_id")):
            return f"{where} refers to unknown image_id {ann.get('image_id')!r}"
        if ann.get("category_id") not in cat_ids or not _is_int(ann.get("category_id")):
            return f"{where} has unknown category_id {ann.get('category_id')!r} (not in 'categories')"
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)
                and bbox[2] >= 0 and bbox[3] >= 0):
            return f"{where} bbox must be 4 finite numbers [x, y, width, height] with width, height >= 0"
        if "segmentation" in ann and not _segmentation_ok(ann["segmentation"]):
            return f"{where} segmentation must be polygons (lists of x, y numbers) or RLE ({{counts, size}})"
        if "area" in ann and not _is_num(ann["area"]):
            return f"{where} area must be a finite number"
        if ann.get("iscrowd", 0) not in (0, 1):
            return f"{where} iscrowd must be 0 or 1"
        if "id" in ann and not _is_int(ann["id"]):
            return f"{where} id must be an integer"
    return None


def load_coco(annotations: str | os.PathLike) -> COCO:
    """Read and check a COCO annotation file; problems become one-line :class:`MutualNetError`\\ s."""
    path = Path(annotations)
    if not path.is_file():
        raise MutualNetError(f"annotation file not found: {path} (a COCO-format JSON, e.g. instances_val2017.json)")
    data = read_json(path, "annotation file")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                    "categories")):
        raise MutualNetError(f"annotation file {path} is not COCO format: it needs 'images', 'annotations' and "
                             "'categories' lists")
    if not data["categories"]:
        raise MutualNetError(f"annotation file {path} lists no categories")
    problem = _check_coco(data)
    if problem:
        raise MutualNetError(f"annotation file {path} has a malformed entry: {problem}")
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
        arr = np.asarray(read_image(path, "RGB"))
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
