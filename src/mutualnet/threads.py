"""CPU threads that survive a busy machine: OpenMP waits passively, or threads match the cores that are free.

Why: torch's CPU kernels run on GNU OpenMP, whose threads spin at the barrier that ends every parallel
region until their partner arrives. When another process (another terminal, a service, a CI neighbour)
holds one of the cores, the partner is descheduled and the spinning thread burns the time slice it waits
for: a 12-iteration training run on 2 cores took 111-156 s instead of 16 s (``benchmarks/bench_contention.py``).
With ``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps instead: no collapse, though two threads sharing one
free core still lose to one thread, so training also takes no more threads than there are free cores.

libgomp reads the variable once, when ``import torch`` loads it, so the package sets it first thing
(``mutualnet/__init__.py``, before anything imports torch) and only when the user has set neither
``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT``: an explicit choice is respected. When torch was imported before
mutualnet the policy can no longer change in this process. Either way, :func:`training_threads` runs training
with no more threads than cores are free at its start.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["prefer_passive_wait", "passive_wait", "free_cores", "training_threads"]

_USER_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_state = {"passive": False}


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for torch's OpenMP unless the user chose, or torch already loaded it.

    Returns whether this process's OpenMP will wait passively because of this call.
    """
    if any(v in os.environ for v in _USER_VARS) or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _state["passive"] = True
    return True


def passive_wait() -> bool:
    """Whether this process's OpenMP threads sleep rather than spin while they wait (set by us or the user)."""
    return _state["passive"] or os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def _cpu_times() -> tuple[int, int] | None:
    """``(idle, total)`` jiffies of all CPUs from ``/proc/stat`` (Linux), or ``None`` elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])  # guest time is already counted in user


def free_cores(interval: float = 0.2) -> float | None:
    """How many of this process's cores sat idle over ``interval`` seconds (``None`` where unknown)."""
    a = _cpu_times()
    time.sleep(interval)
    b = _cpu_times()
    if a is None or b is None or b[1] <= a[1]:
        return None
    online = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else online
    return min(usable, (b[0] - a[0]) / (b[1] - a[1]) * online)


def training_threads(requested: int | None, default: int) -> int:
    """The intra-op threads a training run uses: ``requested`` if given, else ``default`` capped at the free cores.

    Measured on a busy 2-core machine (``docs/benchmarks.md``), even passive threads ran 1.6-1.9x slower than
    one thread when the second core was taken, so a run takes only the cores free at its start (at least one):
    a quiet machine keeps every core. Passive waiting still limits the damage when a competitor arrives later.
    A user who set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` chose the threading; ``default`` then stands.
    """
    if requested:
        return requested
    if default <= 1 or (any(v in os.environ for v in _USER_VARS) and not _state["passive"]):
        return default
    free = free_cores()
    return default if free is None else max(1, min(default, int(free + 0.25)))
