"""argparse ``type=`` functions that check numbers where they enter: finite, in range, within memory bounds.

argparse reports a failed type as ``argument --flag: <message>``, so every error names its flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..errors import MutualNetError
from ..validate import MAX_CLASSES, MAX_IN_CHANS, MAX_RESOLUTION, MAX_THREADS, MAX_WIDTH, check_float, check_int

__all__ = ["int_arg", "float_arg", "positive_int", "nonneg_int", "resolution", "resolutions", "width", "widths",
           "threads", "positive_float", "seed", "float_list", "width_step", "num_classes", "in_chans", "configs",
           "size", "add_data_args"]


def _number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                          f"got {text!r}") from None


def library_arg(parse: Callable[[str], object]) -> Callable[[str], object]:
    """A flag parsed by a library function: its MutualNetError becomes argparse's one-line flag error."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except MutualNetError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def int_arg(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer flag within ``[lo, hi]``."""

    def parse(text: str) -> int:
        try:
            return check_int(_number(text, int), "value", lo, hi)
        except MutualNetError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def float_arg(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str], float]:
    """A finite number flag within the bounds (``nan`` and ``inf`` are refused)."""

    def parse(text: str) -> float:
        try:
            return check_float(_number(text, float), "value", lo, hi, lo_open=lo_open)
        except MutualNetError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "number"
    return parse


def _list(item: Callable[[str], int | float], example: str, length: int | None = None) -> Callable[[str], list]:
    def parse(text: str) -> list:
        parts = [p for p in text.split(",") if p.strip()]
        if not parts or (length is not None and len(parts) != length):
            raise argparse.ArgumentTypeError(f"expected {'' if length is None else f'{length} '}comma-separated "
                                              f"values, e.g. {example}, got {text!r}")
        return [item(p.strip()) for p in parts]

    parse.__name__ = "list"
    return parse


positive_int = int_arg(1)
nonneg_int = int_arg(0)
seed = int_arg(0, 2**32 - 1)
threads = int_arg(1, MAX_THREADS)
resolution = int_arg(1, MAX_RESOLUTION)
width = float_arg(0.0, MAX_WIDTH, lo_open=True)
positive_float = float_arg(0.0, lo_open=True)
width_step = float_arg(1e-3, MAX_WIDTH)  # a finer grid than 0.001 is thousands of configurations
num_classes = int_arg(1, MAX_CLASSES)
in_chans = int_arg(1, MAX_IN_CHANS)
resolutions = _list(resolution, "224,192,160")
float_list = _list(width, "0.25,1.0")


def widths(text: str) -> tuple[float, float]:
    """``LO,HI`` widths with ``0 < LO <= HI``."""
    lo, hi = _list(width, "0.25,1.0", 2)(text)
    if lo > hi:
        raise argparse.ArgumentTypeError(f"expected LO,HI with LO <= HI, got {text!r}")
    return lo, hi


def configs(text: str) -> list[tuple[float, int]]:
    """``WIDTH@RES,...`` pairs, e.g. ``1.0@28,0.5@20``."""
    out = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        w, sep, r = item.partition("@")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected WIDTH@RES,..., e.g. 1.0@28,0.5@20, got {text!r}")
        out.append((width(w), resolution(r)))
    if not out:
        raise argparse.ArgumentTypeError(f"expected WIDTH@RES,..., e.g. 1.0@28,0.5@20, got {text!r}")
    return out


def size(text: str) -> tuple[int, int]:
    """``HxW`` in pixels, e.g. ``480x640``."""
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 480x640, got {text!r}")
    return resolution(parts[0]), resolution(parts[1])


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The flags of :func:`mutualnet.data.checkpoint.data_from_checkpoint`, shared by search and calibrate."""
    p.add_argument("--dataset", help="dataset name (default: the checkpoint's meta 'dataset')")
    p.add_argument("--data-root", help="dataset folder (default: the checkpoint's)")
    p.add_argument("--workers", type=nonneg_int,
                   help="data loader workers (default: 0 for in-memory datasets, else 4; never more than the CPU "
                        "cores available)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the calibration / validation subsets")
