"""Shared helpers for the benchmarks: interleaved timing so ratios are measured side by side.

The protocol every benchmark follows: one thread (a 2-thread run on a shared 2-core machine is not
reproducible), the variants of a comparison alternated round by round in one process (so load drift hits
all alike), and the result printed as the median with the per-round min-max and the number of rounds,
for wall and CPU time, plus the machine's load average at the time.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """Seconds per call of one variant, one entry per round: wall clock and this process's CPU time."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def spread(self, scale: float = 1e3, unit: str = "ms") -> str:
        """``median [min-max] unit, cpu median`` of the rounds."""
        return (f"{self.median * scale:.2f} [{min(self.wall) * scale:.2f}-{max(self.wall) * scale:.2f}] {unit}, "
                f"cpu {self.cpu_median * scale:.2f} {unit}")


def rounds(fns: dict[str, Callable[[], None]], *, warmup: int = 2, repeats: int = 10,
           sync: Callable[[], None] | None = None) -> dict[str, Timing]:
    """Time each function ``repeats`` times, alternated (ABAB...) after ``warmup`` untimed rounds."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {k: Timing() for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            out[k].wall.append(time.perf_counter() - t0)
            out[k].cpu.append(time.process_time() - c0)
    return out


def interleaved(fns: dict[str, Callable[[], None]], *, warmup: int = 2, repeats: int = 10,
                sync: Callable[[], None] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, run in alternation (ABAB...) so drift hits all alike."""
    return {k: t.median for k, t in rounds(fns, warmup=warmup, repeats=repeats, sync=sync).items()}


def ratio(a: Timing, b: Timing, *, cpu: bool = False) -> tuple[float, float, float]:
    """Median and min/max over rounds of ``a / b`` taken round by round (both ran back to back)."""
    xs, ys = (a.cpu, b.cpu) if cpu else (a.wall, b.wall)
    per_round = [x / y for x, y in zip(xs, ys) if y > 0]
    return statistics.median(per_round), min(per_round), max(per_round)


def ratio_text(a: Timing, b: Timing) -> str:
    """``1.012x [0.990-1.040] (cpu 1.010x), n=10``: the per-round ratio's median and spread."""
    m, lo, hi = ratio(a, b)
    c = ratio(a, b, cpu=True)[0]
    return f"{m:.3f}x [{lo:.3f}-{hi:.3f}] (cpu {c:.3f}x), n={len(a.wall)}"


def load_text() -> str:
    """The machine's load average, to state how busy it was (other jobs share the cores)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable"
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def device_sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def header(title: str, device: torch.device) -> None:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu, {torch.get_num_threads()} threads"
    print(f"== {title} ({name}, torch {torch.__version__}; {load_text()})")
