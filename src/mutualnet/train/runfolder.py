"""A run folder that cannot corrupt itself: one writer at a time, nothing non-finite saved, consistent
checkpoints after a kill at any moment, a log that survives a torn line, and resume settings never ignored.

Small functions the training loop calls at its edges:

- :func:`open_run_folder` takes the folder's lock (a second run or resume gets an error naming the holder)
  and removes the temporary files a killed save left behind;
- :func:`check_finite` refuses to save a model whose weights *or buffers* (BatchNorm running statistics)
  are NaN or infinite: divergence stops the run and the last good checkpoint stays good;
- :func:`save_order` writes ``best.pt`` before ``last.pt``: a kill between the two leaves ``last.pt`` behind,
  and the resumed run repeats that validation and rewrites ``best.pt``, so the two always agree;
- :func:`read_metrics` drops a line a kill tore in half;
- :func:`check_resume_changes` applies the settings a resumed run can honour and refuses the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MutualNetError
from ..io import FolderLock, atomic_write_bytes, clean_stale_temps, folder_lock, read_bytes, read_jsonl

__all__ = ["open_run_folder", "nonfinite_tensors", "check_finite", "save_order", "read_metrics", "config_changes",
           "check_resume_changes", "apply_lr", "carry_metrics", "ResumeRule", "RESUMABLE"]


def open_run_folder(run_dir: str | Path) -> FolderLock:
    """Lock ``run_dir`` for this process and clean the temporary files of an earlier, killed run.

    Returns the held lock; release it (``.release()``) when the run ends. The kernel releases it too if the
    process dies, so a crashed run never blocks the next one.
    """
    lock = folder_lock(run_dir, "run folder")
    lock.acquire()
    clean_stale_temps(run_dir)
    return lock


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``model`` holding NaN or infinity."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return [n for n, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite(model: nn.Module, step: int, last: Path) -> None:
    """Raise if anything ``model`` would save is non-finite: the run has diverged, even when the loss has not
    shown it yet (BatchNorm running variances overflow first)."""
    bad = nonfinite_tensors(model)
    if bad:
        raise MutualNetError(
            f"training diverged: {len(bad)} weights or BatchNorm statistics became non-finite by iteration {step} "
            f"(e.g. {bad[0]}); stopped without overwriting {last}. Lower optim.lr or add optim.warmup_epochs, "
            "then resume with --resume")


def save_order(names: tuple[str, ...] | list[str]) -> list[str]:
    """``best.pt`` first, ``last.pt`` last (see the module docstring for why)."""
    return sorted(names, key=lambda n: n != "best.pt")


def read_metrics(path: Path, up_to_step: int | None) -> list[dict]:
    """The rows of a ``metrics.jsonl`` at or before ``up_to_step``; a line torn by a kill is dropped."""
    if up_to_step is None or not path.exists():
        return []
    rows, _ = read_jsonl(path, "metrics log")
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("step", 0), int)
            and r.get("step", 0) <= up_to_step]


def carry_metrics(src_dir: Path, dst_dir: Path) -> None:
    """Start ``dst_dir/metrics.jsonl`` from ``src_dir``'s when a run is resumed into a new folder."""
    src, dst = Path(src_dir) / "metrics.jsonl", Path(dst_dir) / "metrics.jsonl"
    if src.exists() and not dst.exists() and Path(src_dir).resolve() != Path(dst_dir).resolve():
        atomic_write_bytes(dst, read_bytes(src, "metrics log"))


@dataclass(frozen=True)
class ResumeRule:
    """How a task's training checkpoint resumes (:func:`mutualnet.train.runkit.resume_config` reads it from the
    config schema's ``RESUME``). Only the ``resumable`` settings may change: the checkpoint's optimizer state, data
    order and model were made under the old values, so applying another change silently would be a lie and
    ignoring it a worse one."""

    task: str  # the checkpoint's task (classification, detection)
    command: str  # what writes such checkpoints, for the error that names it
    ranges: str  # where the stored config holds the model's trained ranges: its section ("model.") or "" (flat)
    out: str  # the dotted key of the run folder: where the checkpoint now is (the folder may have moved)
    resumable: tuple[str, ...]  # settings a resume may change ("run." covers a section)
    fixed: tuple[str, ...] = ()  # settings of a resumable section that may not change


RESUMABLE = ResumeRule("classification", "mutualnet train", "model.", "run.out",
                       ("run.", "optim.lr", "optim.min_lr", "optim.warmup_epochs", "train.epochs", "data.root",
                        "data.workers", "data.val_batch_size"), fixed=("run.seed",))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and not key.endswith(".args"):
            out |= _flat(v, key)
        else:
            out[key] = v
    return out


def config_changes(saved: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every setting that differs between two config dicts."""
    a, b = _flat(saved), _flat(new)
    same = lambda x, y: x == y or (isinstance(x, float) and isinstance(y, float) and math.isclose(x, y))  # noqa: E731
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if not same(a.get(k), b.get(k))}


def check_resume_changes(saved: dict, new: dict, rule: ResumeRule = RESUMABLE) -> dict[str, tuple[Any, Any]]:
    """The changes a resume applies; raises naming the first setting that cannot change on resume."""
    changes = config_changes(saved, new)
    for key, (old, value) in changes.items():
        if key in rule.fixed or not any(key == r or (r.endswith(".") and key.startswith(r)) for r in rule.resumable):
            raise MutualNetError(
                f"--resume cannot change {key} ({old!r} -> {value!r}): the checkpoint was trained with the old "
                f"value. Start a new run (--config, another {rule.out}) to change it; on resume only "
                f"{', '.join(r.rstrip('.') + ('.*' if r.endswith('.') else '') for r in rule.resumable)} can change")
    return changes


def apply_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, lr: float) -> None:
    """Make a resumed schedule use base learning rate ``lr`` (the loaded states hold the old one).

    With an unchanged ``lr`` this changes nothing; the schedule's position (``last_epoch``) is kept.
    """
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    for group, fn in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
