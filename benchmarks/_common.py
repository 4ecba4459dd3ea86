"""Shared helpers for the benchmarks: interleaved timing so ratios are measured side by side."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def interleaved(fns: dict[str, Callable[[], None]], *, warmup: int = 2, repeats: int = 10,
                sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, run in alternation (ABAB...) so drift hits all alike."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def device_sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def header(title: str, device: torch.device) -> None:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu, {torch.get_num_threads()} threads"
    print(f"== {title} ({name}, torch {torch.__version__})")
