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

Each runtime a deployment may use (``eager``: the slimmable model, ``torchscript`` / ``onnxruntime``: the
exported sub-network, see :mod:`mutualnet.deploy.runtime`) fills its own column ``latency_<runtime>_ms``;
``latency_ms`` is the first runtime's, the one the table is deployed with.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..checkpoint import atomic_save, load_checkpoint, model_from_checkpoint
from ..errors import MutualNetError
from ..layers import config_key
from ..profiling import Latency, measure_latency, resolve_device
from ..search.build import distinct_widths
from ..search.table import QueryTable, latency_column
from .runtime import build_runner

__all__ = ["fill_latency", "network_groups", "suspect_networks", "runtime_latency", "write_latency_copies",
           "measure_checkpoint_latency"]

SPREAD_LIMIT = 0.25  # interquartile range above this share of the median: re-measure
SLOWER_THAN_COSTLIER = 1.10  # slower than a network with more MACs at the same resolution by this factor


def network_groups(model: nn.Module, rows: list[dict]) -> dict[tuple[int, int, int, float], list[dict]]:
    """Rows grouped by the network they run: the same channels everywhere (:func:`distinct_widths`, as the
    search decides it) at the same resolution. Keys are ``(macs, params, resolution, first width)``."""
    same = distinct_widths(model, sorted({float(row["width"]) for row in rows}))
    groups: dict[tuple[int, int, int, float], list[dict]] = {}
    for row in rows:
        key = (int(row["macs"]), int(row["params"]), int(row["resolution"]), same[float(row["width"])])
        groups.setdefault(key, []).append(row)
    return groups


def suspect_networks(measured: dict[tuple, Latency]) -> list[tuple]:
    """Networks whose measurement looks disturbed: a wide spread (of 5 or more repeats), or slower than a
    costlier network at the same resolution."""
    suspects = [k for k, lat in measured.items() if lat.repeats >= 5 and lat.spread > SPREAD_LIMIT]
    for key, lat in measured.items():
        costlier = [m for k, m in measured.items() if k[2] == key[2] and k[0] > key[0]]
        if costlier and lat.median_ms > SLOWER_THAN_COSTLIER * min(m.median_ms for m in costlier):
            suspects.append(key)
    return sorted(set(suspects))


def runtime_latency(model: nn.Module, width: float, resolution: int, runtime: str = "eager", *,
                    device: str = "cpu", batch_size: int = 1, threads: int | None = None, warmup: int = 5,
                    repeats: int = 20) -> Latency:
    """:func:`measure_latency` of (``width``, ``resolution``) on ``runtime`` (the others than eager: CPU)."""
    if runtime == "eager":
        return measure_latency(model, width, resolution, device=device, batch_size=batch_size, threads=threads,
                               warmup=warmup, repeats=repeats)
    if threads is not None:
        torch.set_num_threads(threads)
    run = build_runner(model, width, resolution, runtime, threads=threads, allow_uncalibrated=True)  # as eager
    x = torch.randn(batch_size, getattr(model, "in_chans", 3), resolution, resolution)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        run(x)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    return Latency(statistics.median(times), "cpu", batch_size, torch.get_num_threads(), repeats, warmup, q1, q3,
                   min(times))


def fill_latency(table, model: nn.Module, *, device: str = "cpu", batch_size: int = 1, threads: int | None = None,
                 warmup: int = 5, repeats: int = 20, progress: bool = True, remeasure: int = 1,
                 runtimes: Sequence[str] = ("eager",)) -> dict:
    """Measure every row of ``table`` (a :class:`mutualnet.search.QueryTable`) in place; returns the metadata.

    Rows are measured on each of ``runtimes`` (``eager``: the slimmable model itself, what
    :class:`~mutualnet.deploy.AdaptiveNet` runs by default), one measurement per distinct network
    (:func:`network_groups`); suspicious measurements (:func:`suspect_networks`) are repeated up to
    ``remeasure`` times, keeping the lower median. Each runtime fills ``latency_<runtime>_ms``; ``latency_ms``
    is the first runtime's.
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
    groups = network_groups(model, table.rows)
    by_runtime: dict[str, dict[tuple, Latency]] = {}
    remeasured: set[tuple] = set()

    def measure(key: tuple, runtime: str) -> Latency:
        row = groups[key][-1]  # the widest of identical networks: its width is the one make_divisible keeps
        return runtime_latency(model, row["width"], row["resolution"], runtime, device=str(dev),
                               batch_size=batch_size, threads=threads, warmup=warmup, repeats=repeats)

    try:
        for rt in runtimes:
            measured = by_runtime[rt] = {}
            for key in tqdm(groups, desc=f"{rt} latency on {dev}", unit="network", disable=not progress):
                measured[key] = measure(key, rt)
            for _ in range(max(remeasure, 0)):
                for key in suspect_networks(measured):
                    again = measure(key, rt)
                    remeasured.add(key)
                    if again.median_ms < measured[key].median_ms:
                        measured[key] = again
        measured = by_runtime[runtimes[0]]
        threads_used = next(iter(measured.values())).threads
    finally:
        torch.set_num_threads(previous_threads)
    for key, rows in groups.items():
        for row in rows:
            for rt in runtimes:
                row[latency_column(rt)] = by_runtime[rt][key].median_ms
            row["latency_ms"] = measured[key].median_ms
    info = {"device": str(dev), "batch_size": batch_size, "threads": threads_used if dev.type == "cpu" else None,
            "runtime": runtimes[0], "runtimes": runtimes,
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


def _same_configs(a: QueryTable, b: QueryTable) -> bool:
    return {(r["width"], r["resolution"]) for r in a.rows} == {(r["width"], r["resolution"]) for r in b.rows}


def _copy_latency(src: QueryTable, dst: QueryTable) -> None:
    """Put ``src``'s measured latencies (and how they were measured) into ``dst``, a copy of the same table."""
    for row in dst.rows:
        measured = src.find(row["width"], row["resolution"])
        row.update({k: v for k, v in measured.items() if k.startswith("latency_")})
    dst.meta["latency"] = src.meta["latency"]
    dst.mark_pareto()


def write_latency_copies(table: QueryTable, checkpoint: str | os.PathLike, *,
                         table_path: str | os.PathLike | None = None,
                         out: str | os.PathLike | None = None) -> list[Path]:
    """Write a measured ``table`` to ``out``, else into every copy of it, each atomically: ``table_path``, the
    table embedded in ``checkpoint`` (``calibrated.pt``) and ``query_table.json`` beside it (copies of other
    configurations are left alone). Returns the files written."""
    if out is not None:
        return [table.save(out)]
    written = []
    if table_path is not None:
        written.append(table.save(table_path))
    beside = Path(checkpoint).parent / "query_table.json"
    if beside.is_file() and (table_path is None or beside.resolve() != Path(table_path).resolve()):
        other = QueryTable.load(beside)
        if _same_configs(other, table):
            _copy_latency(table, other)
            written.append(other.save(beside))
    ckpt = load_checkpoint(checkpoint)
    if isinstance(ckpt.get("query_table"), dict):
        embedded = QueryTable.from_dict(ckpt["query_table"], source=f"the table inside {checkpoint}")
        if _same_configs(embedded, table):
            _copy_latency(table, embedded)
            atomic_save(ckpt | {"query_table": embedded.to_dict()}, checkpoint)
            written.append(Path(checkpoint))
    return written


def measure_checkpoint_latency(checkpoint: str | os.PathLike, table_path: str | os.PathLike | None = None, *,
                               out: str | os.PathLike | None = None, runtimes: Sequence[str] = ("eager",),
                               **measure: Any) -> tuple[QueryTable, dict, list[Path]]:
    """What ``mutualnet latency`` does: measure every configuration of the checkpoint's query table (or of
    ``table_path``) on this device with :func:`fill_latency` (``measure``: its keyword arguments), then
    :func:`write_latency_copies`. Returns the filled table, how it was measured and the files written."""
    ckpt = load_checkpoint(checkpoint)
    embedded = isinstance(ckpt.get("query_table"), dict)
    if table_path is None and not embedded:
        raise MutualNetError(f"{checkpoint} holds no query table; pass --table query_table.json (or use the "
                             "calibrated.pt that `mutualnet search` writes)")
    table = (QueryTable.load(table_path) if table_path is not None
             else QueryTable.from_dict(ckpt["query_table"], source=f"the table inside {checkpoint}"))
    if not table.rows:
        raise MutualNetError(f"query table {table_path or checkpoint} is empty")
    model = model_from_checkpoint(ckpt).eval()
    rng = model.width_range
    if bad := [r for r in table.rows if not rng.contains(r["width"])]:
        raise MutualNetError(f"table width {bad[0]['width']:g} is outside the checkpoint's range "
                             f"[{rng.lo:g}, {rng.hi:g}]; is it the table of another model?")
    info = fill_latency(table, model, runtimes=runtimes, **measure)
    return table, info, write_latency_copies(table, checkpoint, table_path=table_path, out=out)
