"""The run kit: what any training loop needs around its iterations, shared by classification and detection.

Where a run stands (:class:`TrainState`, :class:`RunClock`, :func:`epoch_line`); the checkpoint writer
(:class:`Checkpointer`: model, optimizer, schedule, grad scaler, every random state of every process, the
position in the epoch) and its reader (:func:`restore`); the metrics log (:class:`MetricsLog`: ``metrics.jsonl``,
CSV, TensorBoard, trimmed to the checkpoint on resume); and the optimizer step and autocast every loop shares
(:func:`optimizer_step`, :func:`autocast_for`). The run folder's safety underneath (its lock, finite checks, the
save order, a torn metrics line) is :mod:`mutualnet.train.runfolder`. :mod:`mutualnet.train.loop` (classification)
and :mod:`mutualnet.detection.train` both build their runs from these parts, so both resume exactly.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import CheckpointMeta, atomic_save, checkpoint_dict, load_checkpoint
from ..errors import MutualNetError
from ..extras import missing
from ..io import atomic_write_text
from .config import TrainConfig, apply_overrides, load_config
from .distributed import DistInfo
from .runfolder import check_finite, check_resume_changes, read_metrics, save_order

__all__ = ["TrainState", "RunClock", "epoch_line", "Checkpointer", "restore", "MetricsLog", "optimizer_step",
           "autocast_for", "load_train_checkpoint", "resume_config"]


# -- metrics ----------------------------------------------------------------------------------------
class MetricsLog:
    """Rows to ``metrics.jsonl`` (and ``train.csv`` / ``val.csv``) plus TensorBoard scalars.

    On resume, rows after the checkpoint's iteration are dropped, so the files describe one run.
    """

    def __init__(self, run_dir: Path, *, csv_files: bool, tensorboard: bool, resume_step: int | None) -> None:
        self.path, self.run_dir, self.csv_files = run_dir / "metrics.jsonl", run_dir, csv_files
        rows = read_metrics(self.path, resume_step)  # a line torn by a kill is dropped
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        for kind in ("train", "val"):
            (run_dir / f"{kind}.csv").unlink(missing_ok=True)
        if csv_files:
            for r in rows:
                self._csv(r)
        self.tb = None
        if tensorboard and missing("tensorboard"):
            print("note: tensorboard is not installed, so metrics go to metrics.jsonl only (pip install "
                  "\"mutualnet[tensorboard]\", or --set run.tensorboard=false to silence this)", file=sys.stderr)
        elif tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=None if resume_step is None else resume_step + 1)

    def _csv(self, row: dict) -> None:
        scalars = {k: v for k, v in row.items() if isinstance(v, int | float | str) and k != "kind"}
        path = self.run_dir / f"{row['kind']}.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(scalars), extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(scalars)

    def write(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.csv_files:
            self._csv(row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and k not in ("epoch", "step"):
                    self.tb.add_scalar(f"{row['kind']}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# -- random state -----------------------------------------------------------------------------------
def _rng_state(sampler_gen: torch.Generator) -> dict:
    """Every random state of this process, as tensors and lists (loadable with ``weights_only=True``)."""
    py = random.getstate()
    npy = np.random.get_state()
    state = {"sampler": sampler_gen.get_state(), "torch": torch.get_rng_state(),
             "python": [py[0], list(py[1]), py[2]],
             "numpy": [npy[0], torch.from_numpy(npy[1].astype(np.int64)), int(npy[2]), int(npy[3]), float(npy[4])]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, sampler_gen: torch.Generator) -> None:
    sampler_gen.set_state(state["sampler"])
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], npy[1].numpy().astype(np.uint32), npy[2], npy[3], npy[4]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather(obj: Any, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


# -- the run's position and its checkpoint writer ----------------------------------------------------
@dataclass
class TrainState:
    """Where a run stands. Updated after every iteration and saved in every checkpoint, so a checkpoint
    written at any point records exactly where the data order and the schedule stand."""

    epoch: int = 0  # current epoch (0-based)
    epoch_step: int = 0  # iterations done in it
    step: int = 0  # iterations done in all
    best_top1: float | None = None  # best validation top-1 of the widest configuration so far
    elapsed_s: float = 0.0  # wall time of the whole run, resumed parts included (RunClock)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Checkpointer:
    """Writes ``last.pt`` / ``best.pt``: model, optimizer, schedule, scaler, every random state, the position.

    Refuses to write non-finite weights or statistics, so the last good checkpoint survives a diverged run. Under
    ``torchrun`` every process gathers its random state and rank 0 writes.
    """

    def __init__(self, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
                 sampler_gen: torch.Generator, info: DistInfo, *, meta: CheckpointMeta, config: dict,
                 steps_per_epoch: int, clock: RunClock | None = None) -> None:
        self.run_dir, self.model, self.optimizer, self.scheduler = run_dir, model, optimizer, scheduler
        self.scaler = scaler
        self.sampler_gen, self.info, self.meta, self.steps_per_epoch = sampler_gen, info, meta, steps_per_epoch
        self.clock = clock
        self.config = config

    def save(self, state: TrainState, names: tuple[str, ...] = ("last.pt",), top1: dict | None = None) -> None:
        check_finite(self.model, state.step, self.run_dir / "last.pt")  # parameters and BN statistics
        rngs = _gather(_rng_state(self.sampler_gen), self.info)
        if self.clock is not None:
            self.clock.sync()
        if not self.info.is_main:
            return
        train_state = {**state.to_dict(), "optimizer": self.optimizer.state_dict(),
                       "scheduler": self.scheduler.state_dict(),
                       "scaler": self.scaler.state_dict() if self.scaler is not None else None, "rng": rngs,
                       "world_size": self.info.world_size, "steps_per_epoch": self.steps_per_epoch}
        if top1 is not None:
            self.meta.top1 = top1
        self.meta.epoch, self.meta.step = state.epoch, state.step
        obj = checkpoint_dict(self.model, self.meta, config=self.config, train_state=train_state)
        for name in save_order(names):  # best.pt before last.pt: consistent after a kill between them
            atomic_save(obj, self.run_dir / name)


def optimizer_step(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                   scaler: torch.amp.GradScaler | None, state: TrainState) -> float:
    """One optimizer step (through the grad scaler under fp16) and one schedule step; advances ``state``.

    Returns the learning rate the step used. Classification and detection training both step here.
    """
    lr = optimizer.param_groups[0]["lr"]
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    state.step += 1
    state.epoch_step += 1
    return lr


def autocast_for(amp: str, device: torch.device) -> contextlib.AbstractContextManager | None:
    """The autocast context of ``run.amp`` (none | bf16 | fp16) on ``device``; None for full precision."""
    if amp == "none":
        return None
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def restore(ckpt: dict, source: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
            sampler_gen: torch.Generator, info: DistInfo, steps_per_epoch: int) -> TrainState:
    """Load a training checkpoint into the run's objects; returns where the run stands."""
    try:
        model.load_state_dict(ckpt["model"])
        ts = ckpt["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise MutualNetError(f"cannot resume from {source}: it does not match this config "
                             f"({str(e).splitlines()[0][:200]})") from None
    if scaler is not None and ts.get("scaler"):
        scaler.load_state_dict(ts["scaler"])
    state = TrainState(**{k: ts[k] for k in ("epoch", "epoch_step", "step", "best_top1")},
                       elapsed_s=float(ts.get("elapsed_s", 0.0)))
    rngs = ts["rng"]
    _set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0], sampler_gen)
    if state.epoch_step >= steps_per_epoch:
        state.epoch, state.epoch_step = state.epoch + 1, 0
    return state


class RunClock:
    """Wall time of a whole run, resumed parts included (kept in the checkpoint), and the time still to go."""

    def __init__(self, state: TrainState, total_steps: int) -> None:
        self.state, self.total_steps = state, total_steps
        self.base, self.step0 = float(state.elapsed_s), state.step
        self.t0 = self.epoch_t0 = time.perf_counter()
        self.epoch_s = 0.0

    def sync(self) -> float:
        """Write the run's elapsed seconds into ``state`` (so a checkpoint carries them) and return them."""
        self.state.elapsed_s = self.base + time.perf_counter() - self.t0
        return self.state.elapsed_s

    def tick(self) -> None:
        """Close an epoch: its seconds (validation included) become ``epoch_s``."""
        now = time.perf_counter()
        self.epoch_s, self.epoch_t0 = now - self.epoch_t0, now
        self.sync()

    def eta_s(self) -> float | None:
        """Seconds left at this session's pace (None before the first iteration)."""
        done = self.state.step - self.step0
        if done <= 0:
            return None
        return (time.perf_counter() - self.t0) / done * max(self.total_steps - self.state.step, 0)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def epoch_line(epoch: int, epochs: int, loss: list, row: dict | None, clock: RunClock, finished: bool) -> str:
    """The one line printed after every epoch, with or without progress bars.

    ``loss`` is ``[sum, iterations]`` of the epoch's summed sub-network losses; ``row`` its validation.
    """
    head = f"epoch {epoch + 1}/{epochs}" + ("" if finished else f" (stopped by run.max_steps at iteration "
                                                                 f"{clock.state.step})")
    parts = [f"loss {loss[0] / loss[1]:.4f}" if loss[1] else "no iterations"]
    if row is not None:
        acc = f"top-1 widest {row['top1_widest']:.2f}%"
        if "top1_narrowest" in row:
            acc += f", narrowest {row['top1_narrowest']:.2f}%"
        parts.append(acc)
    parts.append(f"{_duration(clock.epoch_s)} (run {_duration(clock.state.elapsed_s)})")
    eta = clock.eta_s()
    if finished and eta:
        parts.append(f"ETA {_duration(eta)}")
    return f"{head}: " + ", ".join(parts)


# -- resume -----------------------------------------------------------------------------------------
def load_train_checkpoint(path: str | Path, schema: type = TrainConfig) -> dict:
    """A training checkpoint of ``schema``'s task (weights, stored config, training state), or one clear error."""
    rule = schema.RESUME
    ckpt = load_checkpoint(path)
    if ckpt.get("task", "classification") != rule.task or not isinstance(ckpt.get("config"), dict) \
            or "train_state" not in ckpt:
        raise MutualNetError(f"{path} holds no training state of `{rule.command}` (a {rule.task} run); it cannot be "
                             "resumed")
    return ckpt


def resume_config(path: str | Path, overrides: list[str] | None = None, *, schema: type = TrainConfig) -> Any:
    """The config a training checkpoint was trained with, to continue it exactly: the one reader of a resumed
    run's config, for classification (``schema`` :class:`~mutualnet.train.config.TrainConfig`) and detection
    (``DetectionConfig``).

    The stored config gets back the model's trained ranges (stored once, in the model's arguments) and the run
    folder where the checkpoint now is; then ``key=value`` overrides. Only the settings the schema's ``RESUME``
    rule names may change (:class:`~mutualnet.train.runfolder.ResumeRule`; classification: ``run.*``, the learning
    rate and its schedule, epochs, the data location); each change is printed, any other is refused. The result is
    checked by :func:`~mutualnet.train.config.load_config` as a fresh recipe is.
    """
    rule = schema.RESUME
    ckpt = load_train_checkpoint(path, schema)
    saved = copy.deepcopy(ckpt["config"])
    ranges = saved.setdefault(rule.ranges.rstrip("."), {}) if rule.ranges else saved
    for name in ("width_range", "depth_range"):  # stored once, in the model's arguments
        if ckpt["model_args"].get(name) is not None:
            ranges.setdefault(name, list(ckpt["model_args"][name]))
    *section, key = rule.out.split(".")
    (saved.setdefault(section[0], {}) if section else saved)[key] = str(Path(path).parent)
    data = apply_overrides(copy.deepcopy(saved), overrides)
    changes = check_resume_changes(saved, data, rule)
    if changes:
        print("resuming with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()))
    return load_config(None, None, schema=schema, **data)
