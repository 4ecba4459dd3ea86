"""Latency tables on the user's own device: measure every configuration of a query table.

FLOPs do not predict latency well across devices (depthwise convolutions, memory-bound layers), so the
budget a deployment really has is milliseconds on *its* hardware. This fills the ``latency_ms`` column
of a query table with :func:`mutualnet.profiling.measure_latency` (warm-up, then the median of repeats)
and records how it was measured (device, batch size, threads, repeats) in the table's metadata, so
selection by latency (``QueryTable.select(max_latency_ms=...)``) uses numbers of this device.
"""

from __future__ import annotations

import platform

import torch
from torch import nn
from tqdm import tqdm

from ..profiling import measure_latency, resolve_device

__all__ = ["fill_latency"]


def fill_latency(table, model: nn.Module, *, device: str = "cpu", batch_size: int = 1, threads: int | None = None,
                 warmup: int = 5, repeats: int = 20, progress: bool = True) -> dict:
    """Measure every row of ``table`` (a :class:`mutualnet.search.QueryTable`) in place; returns the metadata.

    Rows are measured on the slimmable model itself (what :class:`~mutualnet.deploy.AdaptiveNet` runs).
    The frontier by latency is then available to ``table.select(max_latency_ms=...)``.
    """
    dev = resolve_device(device)
    if batch_size < 1 or repeats < 1 or warmup < 0:
        from ..errors import MutualNetError

        raise MutualNetError("batch size and repeats must be positive, warm-up non-negative")
    previous_threads = torch.get_num_threads()
    threads_used = previous_threads
    try:
        for row in tqdm(table.rows, desc=f"latency on {dev}", unit="config", disable=not progress):
            lat = measure_latency(model, row["width"], row["resolution"], device=str(dev), batch_size=batch_size,
                                  threads=threads, warmup=warmup, repeats=repeats)
            row["latency_ms"] = lat.median_ms
            threads_used = lat.threads
    finally:
        torch.set_num_threads(previous_threads)
    info = {"device": str(dev), "batch_size": batch_size, "threads": threads_used if dev.type == "cpu" else None,
            "warmup": warmup, "repeats": repeats, "statistic": "median",
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor()
                                                                                       or platform.machine()),
            "torch": torch.__version__}
    table.meta["latency"] = info
    if hasattr(table, "mark_pareto"):
        table.mark_pareto()
    return info
