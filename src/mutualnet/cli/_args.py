"""Argument types and groups several subcommands share."""

from __future__ import annotations

import argparse

__all__ = ["ints", "width_pair", "add_data_args"]


def width_pair(s: str) -> tuple[float, float]:
    """``LO,HI`` widths."""
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected LO,HI, e.g. 0.25,1.0") from None
    return lo, hi


def ints(s: str) -> list[int]:
    """Comma-separated integers."""
    try:
        return [int(v) for v in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated integers, e.g. 224,192,160") from None


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The flags of :func:`mutualnet.data.checkpoint.data_from_checkpoint`."""
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's meta 'dataset')")
    p.add_argument("--data-root", help="dataset folder (default: the checkpoint's)")
    p.add_argument("--workers", type=int, help="data loader workers (default: 0 for in-memory datasets, else 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration / validation subsets")
