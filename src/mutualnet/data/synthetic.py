"""A learnable synthetic image dataset for tests and smoke runs (no files, no download)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SyntheticImages"]


class SyntheticImages(Dataset):
    """``num_classes`` smooth random templates; each sample is its class template plus noise.

    Deterministic for a given ``seed`` and index, so runs and resumes are reproducible. Images are
    already normalised float tensors of shape ``(in_chans, size, size)``. ``offset`` shifts the sample
    indices without changing the templates, so a validation split (same classes, unseen samples) is
    ``SyntheticImages(..., offset=train_length)``.
    """

    def __init__(self, length: int = 256, num_classes: int = 10, size: int = 32, in_chans: int = 3,
                 noise: float = 0.5, seed: int = 0, offset: int = 0) -> None:
        self.length, self.num_classes, self.size, self.in_chans, self.noise, self.seed = (
            length, num_classes, size, in_chans, noise, seed)
        self.offset = offset
        g = torch.Generator().manual_seed(seed)
        coarse = torch.randn(num_classes, in_chans, 4, 4, generator=g)
        self.templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                                         align_corners=False)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        if not 0 <= i < self.length:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.offset + i)
        label = int(torch.randint(self.num_classes, (1,), generator=g))
        x = self.templates[label] + self.noise * torch.randn(self.in_chans, self.size, self.size, generator=g)
        return x, label
