"""The held-out split: training images set aside before training, on which configurations are chosen.

A query table ranks configurations and ``select`` / ``compare`` pick the best one within a budget; if that
choice is made on the test images it also reports, the reported accuracy is flattered (most for an arm with many
configurations to choose from). ``data.holdout: N`` carves ``N`` images out of the training set — a fixed
subset drawn with :data:`HOLDOUT_SEED`, so every run, arm and ``run.seed`` holds out the same images — that
are never trained on (nor used for BN calibration): validation during training and the query table use them,
and the test set is only ever *reported*.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from ..errors import MutualNetError

__all__ = ["HOLDOUT_SEED", "SPLITS", "holdout_indices", "split_holdout", "choose_split"]

HOLDOUT_SEED = 2020  # the same held-out images for every run, whatever its run.seed
SPLITS = ("holdout", "test")  # where a query table's accuracies come from


def holdout_indices(length: int, holdout: int) -> tuple[list[int], list[int]]:
    """``(training, held-out)`` indices of a training set of ``length`` images, ``holdout`` of them held out.

    Both sorted; the held-out ones are a random draw with :data:`HOLDOUT_SEED` (independent of any run's seed).
    """
    if not 0 < holdout < length:
        raise MutualNetError(f"data.holdout {holdout} must be between 1 and {length - 1} "
                             f"(the training set has {length} images)")
    perm = torch.randperm(length, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    held = sorted(perm[:holdout].tolist())
    train = sorted(perm[holdout:].tolist())
    return train, held


def split_holdout(train_set: Dataset, holdout: int | None, eval_set: Dataset | None = None) -> tuple[Dataset, Dataset]:
    """The training set without its held-out images, and the held-out images.

    Args:
        train_set: The whole training split (any transform).
        holdout: Images to hold out (None or 0: none — the training set is returned whole and the second
            value is an empty subset).
        eval_set: The same images with the evaluation transform (no augmentation), for the held-out part;
            default: ``train_set``.
    """
    if not holdout:
        return train_set, Subset(eval_set if eval_set is not None else train_set, [])
    if eval_set is not None and len(eval_set) != len(train_set):
        raise MutualNetError(f"the evaluation view of the training set has {len(eval_set)} images, "
                             f"not {len(train_set)}")
    train, held = holdout_indices(len(train_set), holdout)
    return Subset(train_set, train), Subset(eval_set if eval_set is not None else train_set, held)


def choose_split(split: str | None, data_info: dict) -> str:
    """The split a table is measured on: ``split`` checked, or ``holdout`` when the data has held-out images."""
    if split is None:
        return "holdout" if data_info.get("holdout") else "test"
    if split not in SPLITS:
        raise MutualNetError(f"unknown split {split!r}; choose {' or '.join(SPLITS)}")
    if split == "holdout" and not data_info.get("holdout"):
        raise MutualNetError("the checkpoint was trained without held-out images (data.holdout); "
                             "search it on the test set (--split test)")
    return split
