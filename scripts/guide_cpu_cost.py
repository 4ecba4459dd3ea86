"""Measure what docs/guide.md's CPU recipe costs here: one epoch of training and one default search.

Writes a 10-class ImageFolder of generated 400 x 300 JPEGs (a hue per class plus noise; 32 training and 10
validation images per class by default) under ``--out``, then runs, with ``OMP_NUM_THREADS=1``::

    mutualnet train --config configs/mobilenet_v2_imagefolder_cpu.yaml --set data.root=OUT/mydata \\
        --set run.out=OUT/runs/mine --set train.epochs=1 --set run.progress=false
    mutualnet search --checkpoint OUT/runs/mine/best.pt --out OUT/runs/mine/search --no-progress

and prints, for each, wall seconds, CPU seconds (the command and its loader workers) and the load average before
and after: on a shared machine the wall time says more about the others than about the recipe.

    python scripts/guide_cpu_cost.py --out /var/tmp/guide_cost
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "mobilenet_v2_imagefolder_cpu.yaml"


def make_data(root: Path, per_class: int, val_per_class: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            hue = np.array([np.cos(c), np.sin(c), np.cos(2 * c)]) * 60 + 120
            for i in range(n):
                img = np.clip(hue + rng.normal(0, 50, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.jpg", quality=90)


def timed(argv: list[str]) -> dict:
    """Run a command; its wall and CPU seconds (children included) and the load average around it."""
    load0 = os.getloadavg()[0]
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(argv, check=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "load_before": load0, "load_after": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--per-class", type=int, default=32, help="training images per class (10 classes)")
    p.add_argument("--val-per-class", type=int, default=10)
    p.add_argument("--size", default="400x300", help="image width x height")
    p.add_argument("--set", action="append", default=[], help="extra train --set (a test shrinks the run)")
    p.add_argument("--search-args", default="", help="extra search flags (a test shrinks the search)")
    args = p.parse_args(argv)
    data, run = args.out / "mydata", args.out / "runs" / "mine"
    make_data(data, args.per_class, args.val_per_class, tuple(int(v) for v in args.size.split("x")))
    cli = [sys.executable, "-m", "mutualnet"]
    train = timed([*cli, "train", "--config", str(RECIPE), "--set", f"data.root={data}", "--set", f"run.out={run}",
                   "--set", "train.epochs=1", "--set", "run.progress=false", *[a for s in args.set for a in ("--set", s)]])
    search = timed([*cli, "search", "--checkpoint", str(run / "best.pt"), "--out", str(run / "search"),
                    "--no-progress", *args.search_args.split()])
    n = 10 * args.per_class
    for name, r in (("train (1 epoch)", train), ("search", search)):
        print(f"{name}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} CPU-s, load {r['load_before']:.1f} -> "
              f"{r['load_after']:.1f}")
    print(f"training: {n / train['wall_s']:.2f} images/s wall, {n / train['cpu_s']:.2f} images per CPU-second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
