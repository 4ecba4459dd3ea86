"""Measured forward latency of one configuration on a real device."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import MutualNetError
from ..layers import allow_uncalibrated, use_config

__all__ = ["Latency", "measure_latency", "resolve_device"]


@dataclass(frozen=True)
class Latency:
    """One measurement: the median of ``repeats`` timed runs after ``warmup``, and its spread."""

    median_ms: float
    device: str
    batch_size: int
    threads: int
    repeats: int
    warmup: int = 0
    q1_ms: float | None = None  # first and third quartiles of the timed runs: their spread
    q3_ms: float | None = None
    min_ms: float | None = None

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.05: the middle half of runs within 5%)."""
        if self.q1_ms is None or self.q3_ms is None or self.median_ms <= 0:
            return 0.0
        return (self.q3_ms - self.q1_ms) / self.median_ms

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:1``; a clear error when the device is not there."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise MutualNetError(f"unknown device {name!r} (use cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MutualNetError("device cuda requested but no CUDA GPU is available")
    if dev.type not in ("cpu", "cuda"):
        raise MutualNetError(f"unsupported device {name!r} (use cpu or cuda)")
    return dev


def measure_latency(model: nn.Module, width: float, resolution: int, *, device: str = "cpu", batch_size: int = 1,
                    threads: int | None = None, warmup: int = 5, repeats: int = 20,
                    depth: int | None = None) -> Latency:
    """Median wall-clock forward latency (ms) after ``warmup`` untimed runs.

    The model is moved to ``device`` for the measurement and returned to its original device.
    """
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    threads_used = torch.get_num_threads()
    orig = next(model.parameters()).device
    was_training = model.training
    times = []
    with use_config(model, width, resolution, depth):
        model.eval().to(dev)
        x = torch.randn(batch_size, getattr(model, "in_chans", 3), resolution, resolution, device=dev)
        try:
            with torch.inference_mode(), allow_uncalibrated(model):  # timing does not depend on the statistics
                for i in range(warmup + repeats):
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    t0 = time.perf_counter()
                    model(x)
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    if i >= warmup:
                        times.append((time.perf_counter() - t0) * 1e3)
        finally:
            model.to(orig).train(was_training)
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    return Latency(statistics.median(times), str(dev), batch_size, threads_used, repeats, warmup, q1, q3, min(times))
