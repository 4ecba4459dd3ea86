"""Latency tables on the user's own device: measure every configuration of a query table.

FLOPs do not predict latency well across devices (depthwise convolutions, memory-bound layers), so the
budget a deployment really has is milliseconds on *its* hardware. This fills the ``latency_ms`` column
of a query table with :func:`mutualnet.profiling.measure_latency` and records how it was measured in the
table's metadata, so selection by latency (``QueryTable.select(max_latency_ms=...)``) uses numbers of
this device. Three things make the numbers trustworthy on a machine that is doing other work too:

- **one measurement per network**: widths that round to the same channel counts (0.70 and 0.75 of a
  small model) are the same network; it is timed once and the number shared, so identical networks
  never get different latencies;
- **spread recorded**: warm-up, repeats, median and interquartile range of each network go into
  ``meta["latency"]["networks"]``;
- **outliers re-measured**: a network slower than a costlier one at the same resolution, or with a wide
  spread, is timed again and the lower median kept (interference only ever adds time).
"""

from __future__ import annotations

import platform

import torch
from torch import nn
from tqdm import tqdm

from ..errors import MutualNetError
from ..layers import config_key
from ..profiling import Latency, measure_latency, resolve_device

__all__ = ["fill_latency", "network_groups", "suspect_networks"]

SPREAD_LIMIT = 0.25  # interquartile range above this share of the median: re-measure
SLOWER_THAN_COSTLIER = 1.10  # slower than a network with more MACs at the same resolution by this factor


def network_groups(rows: list[dict]) -> dict[tuple[int, int, int], list[dict]]:
    """Rows grouped by the network they run: same MACs, parameters and resolution means the same channels."""
    groups: dict[tuple[int, int, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((int(row["macs"]), int(row["params"]), int(row["resolution"])), []).append(row)
    return groups


def suspect_networks(measured: dict[tuple[int, int, int], Latency]) -> list[tuple[int, int, int]]:
    """Networks whose measurement looks disturbed: a wide spread (of 5 or more repeats), or slower than a
    costlier network at the same resolution."""
    suspects = [k for k, lat in measured.items() if lat.repeats >= 5 and lat.spread > SPREAD_LIMIT]
    for key, lat in measured.items():
        costlier = [m for k, m in measured.items() if k[2] == key[2] and k[0] > key[0]]
        if costlier and lat.median_ms > SLOWER_THAN_COSTLIER * min(m.median_ms for m in costlier):
            suspects.append(key)
    return sorted(set(suspects))


def fill_latency(table, model: nn.Module, *, device: str = "cpu", batch_size: int = 1, threads: int | None = None,
                 warmup: int = 5, repeats: int = 20, progress: bool = True, remeasure: int = 1) -> dict:
    """Measure every row of ``table`` (a :class:`mutualnet.search.QueryTable`) in place; returns the metadata.

    Rows are measured on the slimmable model itself (what :class:`~mutualnet.deploy.AdaptiveNet` runs),
    one measurement per distinct network (:func:`network_groups`); suspicious measurements
    (:func:`suspect_networks`) are repeated up to ``remeasure`` times, keeping the lower median.
    """
    dev = resolve_device(device)
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise MutualNetError("batch size and repeats must be positive, warm-up non-negative")
    previous_threads = torch.get_num_threads()
    groups = network_groups(table.rows)
    measured: dict[tuple[int, int, int], Latency] = {}
    remeasured: set[tuple[int, int, int]] = set()

    def measure(key: tuple[int, int, int]) -> Latency:
        row = groups[key][-1]  # the widest of identical networks: its width is the one make_divisible keeps
        return measure_latency(model, row["width"], row["resolution"], device=str(dev), batch_size=batch_size,
                               threads=threads, warmup=warmup, repeats=repeats)

    try:
        for key in tqdm(groups, desc=f"latency on {dev}", unit="network", disable=not progress):
            measured[key] = measure(key)
        for _ in range(max(remeasure, 0)):
            for key in suspect_networks(measured):
                again = measure(key)
                remeasured.add(key)
                if again.median_ms < measured[key].median_ms:
                    measured[key] = again
        threads_used = next(iter(measured.values())).threads
    finally:
        torch.set_num_threads(previous_threads)
    for key, rows in groups.items():
        for row in rows:
            row["latency_ms"] = measured[key].median_ms
    info = {"device": str(dev), "batch_size": batch_size, "threads": threads_used if dev.type == "cpu" else None,
            "warmup": warmup, "repeats": repeats, "statistic": "median",
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor()
                                                                                       or platform.machine()),
            "torch": str(torch.__version__), "networks_measured": len(groups), "remeasured": len(remeasured),
            "networks": [{"configs": [config_key(r["width"], r["resolution"]) for r in groups[key]],
                          "median_ms": round(lat.median_ms, 4), "q1_ms": round(lat.q1_ms, 4),
                          "q3_ms": round(lat.q3_ms, 4), "min_ms": round(lat.min_ms, 4),
                          "remeasured": key in remeasured} for key, lat in measured.items()]}
    table.meta["latency"] = info
    if hasattr(table, "mark_pareto"):
        table.mark_pareto()
    return info
