"""ImageNet data path: training images/s per CPU core, PIL decode vs torchvision.io decode, same transforms.

Writes a synthetic JPEG folder at ImageNet sizes (sides drawn around ImageNet's typical 500 x 375, quality
90, smooth random content so the files compress like photos), then times the ``imagefolder`` training
pipeline of :func:`mutualnet.data.build_dataset` (decode + RandomResizedCrop + flip [+ colour jitter] +
normalise) with each decoder, in alternated rounds, one thread, one process (= one loader worker). Images/s
per core are images per second of this process's CPU time (on a shared machine, wall time counts the other
jobs too); wall-clock images/s are printed beside. Prints the min-max over rounds, the ratio, and how many
cores a GPU consuming ``--gpu-img-s`` images/s needs (the GPU rate is an assumption: no GPU measured it here).

    python benchmarks/bench_jpeg_path.py [--images 64] [--rounds 5] [--jitter 0.4] [--gpu-img-s 1000,2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from mutualnet.data import datasets


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        d = root / "train" / f"class{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        w = int(torch.randint(400, 600, (1,), generator=g))
        h = int(torch.randint(300, 450, (1,), generator=g))
        coarse = torch.rand(1, 3, h // 16, w // 16, generator=g)
        img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        img = (img + 0.05 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)
        arr = (img[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(d / f"{i}.jpg", quality=90)
    (root / "val").mkdir(exist_ok=True)
    for c in range(4):
        (root / "val" / f"class{c}").mkdir(exist_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--jitter", type=float, default=0.4)
    p.add_argument("--gpu-img-s", default="1000,2000,3000")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"== ImageNet training data path, 1 core (torch {torch.__version__}), {args.images} JPEGs ~500x375, "
          f"crop {args.size}, colour jitter {args.jitter}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root, args.images)
        sets = {}
        for decoder in ("pil", "torchvision"):
            sets[decoder] = datasets.build_dataset("imagefolder", "train", root=root, input_size=args.size,
                                                   augment=True, color_jitter=args.jitter, decoder=decoder)
        a, b = sets["pil"][0][0], sets["torchvision"][0][0]
        assert a.shape == b.shape == (3, args.size, args.size) and a.dtype == b.dtype == torch.float32
        times: dict[str, list[float]] = {k: [] for k in sets}
        wall: dict[str, list[float]] = {k: [] for k in sets}
        for _ in range(args.rounds):
            for k, ds in sets.items():
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(len(ds)):
                    ds[i]
                times[k].append(len(ds) / (time.process_time() - c0))
                wall[k].append(len(ds) / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:12s}: {med[k]:7.1f} images/s per core (CPU time; min {min(v):.1f}, max {max(v):.1f}, "
              f"n={len(v)} rounds); wall {statistics.median(wall[k]):.1f} images/s")
    best = max(med, key=med.get)
    print(f"ratio torchvision / pil: {med['torchvision'] / med['pil']:.3f}x images/s (faster: {best})")
    for rate in (float(r) for r in args.gpu_img_s.split(",")):
        print(f"a GPU step consuming {rate:.0f} images/s (assumed) needs {rate / med[best]:.1f} cores of {best} "
              f"decoding ({rate / med['pil']:.1f} with pil)")


if __name__ == "__main__":
    main()
