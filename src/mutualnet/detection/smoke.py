"""Smoke data: a tiny generated COCO-format detection set, so every detection command can be tried in a minute.

``mutualnet detect smoke-data --out smoke`` writes ``smoke/train.json`` + ``smoke/train/*.png`` and
``smoke/val.json`` + ``smoke/val/*.png``: 64-96 px images of noise with one to three shapes each, red
rectangles (category ``box``, polygon segmentations) and blue ellipses (``blob``, RLE segmentations), under
non-contiguous category ids as in COCO. pycocotools reads them; ``configs/detection/maskrcnn_smoke.yaml`` is
the recipe sized for them. They check that the commands run end to end, not what a detector can learn.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import MutualNetError
from ..io import atomic_write_text

__all__ = ["SHAPES", "write_shapes", "write_smoke_data"]

SHAPES = {3: "box", 7: "blob"}  # COCO category id -> name (non-contiguous on purpose, as COCO's are)


def write_shapes(annotations: str | os.PathLike, images: str | os.PathLike, n: int = 10, seed: int = 0) -> None:
    """Write ``n`` generated images into the folder ``images`` and their COCO instances JSON to ``annotations``.

    The JSON is written last (atomically), so a set whose annotations exist is complete.
    """
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(seed)
    folder = Path(images)
    folder.mkdir(parents=True, exist_ok=True)
    records, anns = [], []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(64, 97, size=2))
        img = np.full((h, w, 3), rng.integers(0, 60, size=3), dtype=np.uint8)
        img = np.clip(img + rng.integers(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cat = int(rng.choice(list(SHAPES)))
            bw, bh = (int(v) for v in rng.integers(16, 33, size=2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            m = np.zeros((h, w), dtype=np.uint8)
            if cat == 3:
                m[y0:y0 + bh, x0:x0 + bw] = 1
                seg = [[x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]]
            else:
                yy, xx = np.mgrid[:h, :w]
                m[((xx - x0 - bw / 2) / (bw / 2)) ** 2 + ((yy - y0 - bh / 2) / (bh / 2)) ** 2 <= 1] = 1
                rle = mask_util.encode(np.asfortranarray(m))
                seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            img[m.astype(bool)] = (220, 40, 40) if cat == 3 else (40, 90, 230)
            ys, xs = np.nonzero(m)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": bbox,
                         "area": float(m.sum()), "iscrowd": 0, "segmentation": seg})
        Image.fromarray(img).save(folder / f"{i:03d}.png")
        records.append({"id": i + 1, "file_name": f"{i:03d}.png", "height": h, "width": w})
    data = {"images": records, "annotations": anns,
            "categories": [{"id": k, "name": v, "supercategory": "shape"} for k, v in SHAPES.items()]}
    atomic_write_text(annotations, json.dumps(data))


def write_smoke_data(out: str | os.PathLike, train_images: int = 16, val_images: int = 8,
                     seed: int = 0) -> dict[str, tuple[Path, Path]]:
    """The smoke set under ``out``: ``{"train": (train.json, train/), "val": (val.json, val/)}``.

    ``out`` must not exist or be empty: generated files never replace a user's.
    """
    out = Path(out)
    for name, n in (("train_images", train_images), ("val_images", val_images)):
        if not 1 <= n <= 10_000:
            raise MutualNetError(f"{name} must be between 1 and 10000, got {n}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MutualNetError(f"{out} exists and is not an empty folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        sets = {}
        for offset, (split, n) in enumerate((("train", train_images), ("val", val_images))):
            sets[split] = (out / f"{split}.json", out / split)
            write_shapes(*sets[split], n=n, seed=seed + offset)
    except OSError as e:
        raise MutualNetError(f"cannot write the smoke data to {out}: {e.strerror or e}") from None
    return sets
