"""Latency tables on the user's own device: measure every configuration of a query table.

FLOPs do not predict latency well across devices (depthwise convolutions, memory-bound layers), so the
budget a deployment really has is milliseconds on *its* hardware. This fills the ``latency_ms`` column
of a query table with :func:`mutualnet.profiling.measure_latency` (warm-up, then the median of repeats)
and records how it was measured (device, batch size, threads, repeats) in the table's metadata, so
selection by latency (``QueryTable.select(max_latency_ms=...)``) uses numbers of this device.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..errors import MutualNetError
from ..profiling import measure_latency, resolve_device
from ..search.table import latency_column
from .runtime import build_runner

__all__ = ["fill_latency", "runtime_latency_ms"]


def runtime_latency_ms(model: nn.Module, width: float, resolution: int, runtime: str, *, batch_size: int = 1,
                       threads: int | None = None, warmup: int = 5, repeats: int = 20) -> float:
    """Median milliseconds of one forward of (``width``, ``resolution``) on ``runtime`` (CPU), after warm-up."""
    if threads is not None:
        torch.set_num_threads(threads)
    run = build_runner(model, width, resolution, runtime, threads=threads)
    x = torch.randn(batch_size, getattr(model, "in_chans", 3), resolution, resolution)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        run(x)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def fill_latency(table, model: nn.Module, *, device: str = "cpu", batch_size: int = 1, threads: int | None = None,
                 warmup: int = 5, repeats: int = 20, progress: bool = True,
                 runtimes: Sequence[str] = ("eager",)) -> dict:
    """Measure every row of ``table`` (a :class:`mutualnet.search.QueryTable`) in place; returns the metadata.

    ``eager`` rows are measured on the slimmable model itself (what :class:`~mutualnet.deploy.AdaptiveNet`
    runs by default); ``torchscript`` and ``onnxruntime`` on the exported sub-network (CPU only). Each
    runtime fills its column ``latency_<runtime>_ms``; ``latency_ms`` is that of the first runtime, the one
    the table is deployed with, so ``table.select(max_latency_ms=...)`` uses it.
    """
    dev = resolve_device(device)
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise MutualNetError("batch size and repeats must be positive, warm-up non-negative")
    runtimes = list(dict.fromkeys(runtimes))
    if not runtimes:
        raise MutualNetError("give at least one runtime")
    for rt in runtimes:
        latency_column(rt)
        if rt != "eager" and dev.type != "cpu":
            raise MutualNetError(f"runtime {rt} is measured on the CPU; use --device cpu (or --runtime eager)")
    previous_threads = torch.get_num_threads()
    threads_used = threads or previous_threads
    try:
        for row in tqdm(table.rows, desc=f"latency on {dev}", unit="config", disable=not progress):
            for rt in runtimes:
                if rt == "eager":
                    lat = measure_latency(model, row["width"], row["resolution"], device=str(dev),
                                          batch_size=batch_size, threads=threads, warmup=warmup, repeats=repeats)
                    ms, threads_used = lat.median_ms, lat.threads
                else:
                    ms = runtime_latency_ms(model, row["width"], row["resolution"], rt, batch_size=batch_size,
                                            threads=threads, warmup=warmup, repeats=repeats)
                row[latency_column(rt)] = ms
            row["latency_ms"] = row[latency_column(runtimes[0])]
    finally:
        torch.set_num_threads(previous_threads)
    info = {"device": str(dev), "batch_size": batch_size, "threads": threads_used if dev.type == "cpu" else None,
            "runtime": runtimes[0], "runtimes": runtimes,
            "warmup": warmup, "repeats": repeats, "statistic": "median",
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor()
                                                                                       or platform.machine()),
            "torch": torch.__version__}
    table.meta["latency"] = info
    if hasattr(table, "mark_pareto"):
        table.mark_pareto()
    return info
