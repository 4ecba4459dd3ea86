"""Data path: end-to-end training images/s, resizing on the device vs making each resolution in the loader.

Both variants decode the same JPEG image folder with RandomResizedCrop at the highest resolution and run the
same MutualNet step (4 sub-networks). ``device`` resizes the batch tensor on the training device
(what ``mutualnet train`` does); ``loader`` has every data-loader worker also resize each decoded crop to
every training resolution (as the official implementation does), so the step receives ready-made tensors.

    python benchmarks/bench_data_path.py [--model mobilenet_v2] [--resolutions 96,80,64,48] [--workers 0]
        [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import Timing, header, ratio_text
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

import mutualnet as mn
from mutualnet.data import IMAGENET_MEAN, IMAGENET_STD, build_dataset
from mutualnet.train.step import SubNet, distill_loss, train_step


def make_folder(root: Path, n: int, size: int = 320, classes: int = 4) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n // classes):
                arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.jpg", quality=90)


class MultiRes:
    """Per-sample transform of the loader variant: one crop, then a tensor per training resolution."""

    def __init__(self, resolutions: list[int], crop_scale=(0.08, 1.0)) -> None:
        self.crop = v2.Compose([v2.RandomResizedCrop(resolutions[0], scale=crop_scale, antialias=True),
                                v2.RandomHorizontalFlip()])
        self.resize = [v2.Resize((r, r), antialias=True) for r in resolutions]
        self.to_tensor = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __call__(self, img):
        img = self.crop(img)
        return [self.to_tensor(r(img)) for r in self.resize]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--resolutions", default="96,80,64,48")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res = [int(r) for r in args.resolutions.split(",")]
    dev = torch.device(args.device)
    model = mn.create_model(args.model, num_classes=4).to(dev).train()
    lo, hi = model.width_range
    gen = torch.Generator().manual_seed(0)

    def plan():
        widths = [lo, lo + (hi - lo) * float(torch.rand((), generator=gen)),
                  lo + (hi - lo) * float(torch.rand((), generator=gen))]
        return [SubNet(hi, res[0], "labels")] + [
            SubNet(w, res[int(torch.randint(len(res), (1,), generator=gen))], "teacher") for w in widths]

    with tempfile.TemporaryDirectory() as tmp:
        make_folder(Path(tmp), args.images)
        ds_device = build_dataset("imagefolder", "train", root=tmp, input_size=res[0])
        ds_loader = ImageFolder(str(Path(tmp) / "train"), transform=MultiRes(res))

        def run_device() -> int:
            dl = DataLoader(ds_device, args.batch, shuffle=True, num_workers=args.workers, drop_last=True)
            n = 0
            for x, y in dl:
                x, y = x.to(dev), y.to(dev)
                model.zero_grad(set_to_none=True)
                train_step(model, x, y, plan())
                n += len(y)
            return n

        def run_loader() -> int:
            dl = DataLoader(ds_loader, args.batch, shuffle=True, num_workers=args.workers, drop_last=True)
            n = 0
            for xs, y in dl:
                by_res = {r: x.to(dev) for r, x in zip(res, xs)}
                y = y.to(dev)
                model.zero_grad(set_to_none=True)
                teacher = None
                for sub in plan():
                    model.set_width(sub.width)
                    logits = model(by_res[sub.resolution])
                    loss = F.cross_entropy(logits, y) if teacher is None else distill_loss(logits, teacher)
                    loss.backward()
                    teacher = logits.detach() if teacher is None else teacher
                n += len(y)
            return n

        header(f"data path, {args.model}, resolutions {res}, batch {args.batch}, {args.workers} workers", dev)
        run_device(), run_loader()  # warm-up: page cache, worker start-up, allocator
        times = {"device": Timing(), "loader": Timing()}
        for _ in range(args.repeats):  # alternated; time per image, so a ratio loader / device is the speed-up
            for name, fn in (("device", run_device), ("loader", run_loader)):
                t0, c0 = time.perf_counter(), time.process_time()
                n = fn()
                times[name].wall.append((time.perf_counter() - t0) / n)
                times[name].cpu.append((time.process_time() - c0) / n)
    dev_t, loader_t = times["device"], times["loader"]
    cpu_note = " (cpu: this process only)" if args.workers else ""
    print(f"resize on the device       : {1 / dev_t.median:8.1f} img/s  ({dev_t.spread(1e3, 'ms/img')})")
    print(f"each resolution in loader  : {1 / loader_t.median:8.1f} img/s  ({loader_t.spread(1e3, 'ms/img')})")
    print(f"speed-up device / loader   : {ratio_text(loader_t, dev_t)}{cpu_note}")

if __name__ == "__main__":
    main()
