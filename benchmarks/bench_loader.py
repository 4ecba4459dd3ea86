"""Training loader: images/s of the loader ``mutualnet train`` uses vs the bare tensor augmentation.

CIFAR and Fashion-MNIST are augmented as tensors (random crop with 4 px zero padding + flip). Training wraps
the dataset in ``SeededSamples`` so that every batch's augmentation is reproducible on resume; this measures
what that costs, in one process, the variants alternated round by round (``--batches`` batches each):

* ``augmentation``: ``DataLoader(TensorImages, shuffle=True)``, the batched augmentation alone;
* ``seeded loader``: what training runs, ``SeededSamples`` + ``EpochSampler`` (one RNG seed per batch);
* ``per-sample augmentation``: the same augmentation one image at a time (``__getitem__`` only);
* ``per-sample seeding (before)``: the former loader, one RNG fork and reseed per image.

Goal: the seeded loader at >= 0.8x the augmentation's images/s. Image content does not change the cost, so
the data are random uint8 tensors of each dataset's shape (50,000 x 3 x 32 x 32, 60,000 x 1 x 28 x 28).

    python benchmarks/bench_loader.py [--batch 128] [--batches 50] [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import itertools

import torch
from _common import header, ratio_text, rounds
from torch.utils.data import DataLoader, Dataset

from mutualnet.data import TensorImages
from mutualnet.train.distributed import EpochSampler, SeededSamples


class PerSample(Dataset):
    """The dataset seen one item at a time (hides ``__getitems__``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset[i]


class ForkPerSample(PerSample):
    """The former ``SeededSamples``: fork the RNG and reseed it for every image."""

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def endless(dataset: Dataset, batch: int, seeded: bool):
    """Batches of successive epochs: shuffled, or in ``EpochSampler``'s order with its per-sample seeds."""
    sampler = EpochSampler(len(dataset), seed=0) if seeded else None
    for epoch in itertools.count():
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from DataLoader(dataset, batch_size=batch, sampler=sampler, shuffle=not seeded, drop_last=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=50, help="batches per variant per round")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=None, help="dataset size (default: the real datasets' sizes)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    header(f"training loader, batch {args.batch}, {args.batches} batches per round", torch.device("cpu"))
    for name, n, c, s in (("cifar", 50_000, 3, 32), ("fashion_mnist", 60_000, 1, 28)):
        n = args.images or n
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g)
        ds = TensorImages(images, torch.randint(0, 10, (n,), generator=g), mean=(0.5,) * c, std=(0.25,) * c,
                          train=True, padding=4)
        loaders = {
            "augmentation": endless(ds, args.batch, seeded=False),
            "seeded loader": endless(SeededSamples(ds), args.batch, seeded=True),
            "per-sample augmentation": endless(PerSample(ds), args.batch, seeded=False),
            "per-sample seeding (before)": endless(ForkPerSample(ds), args.batch, seeded=True),
        }

        def pull(it):
            return lambda: [next(it) for _ in range(args.batches)]

        t = rounds({k: pull(it) for k, it in loaders.items()}, warmup=1, repeats=args.repeats)
        per = args.batch * args.batches
        print(f"-- {name}-shaped uint8 images ({n} x {c} x {s} x {s})")
        for k, v in t.items():
            print(f"{k:28s}: {per / v.median:9.0f} img/s  ({v.spread(1e3 / args.batches, 'ms/batch')})")
        aug, seeded, per_sample, before = (t[k] for k in loaders)
        # a time ratio other / seeded, round by round, is the img/s ratio seeded / other
        print(f"ratio seeded loader / augmentation, img/s     : {ratio_text(aug, seeded)}   (goal >= 0.8x)")
        print(f"ratio seeded loader / per-sample augmentation : {ratio_text(per_sample, seeded)}")
        print(f"ratio seeded loader / before (per-sample fork): {ratio_text(before, seeded)}")

if __name__ == "__main__":
    main()
