"""Train a slimmable Mask R-CNN with the sandwich rule, one input scale per sub-network.

Each iteration runs the widest, the narrowest and ``num_subnets - 2`` random widths (the sandwich rule) on
the same images; every sub-network gets its own input scale (the widest the largest, as in MutualNet's
classification training; the others a random one of ``scales``) and is trained on the ground truth -- the sum
of Mask R-CNN's losses, no inplace distillation, as in the paper. The plan comes from the classification
trainer's :func:`mutualnet.train.step.sample_subnets` in its ``mutual_gt`` mode, so both tasks sample alike.
Gradients of all sub-networks accumulate and the optimiser steps once. The recipe is torchvision's detection
reference (SGD with momentum, linear warm-up, step decay); the loop is built from the classification trainer's
parts (:mod:`mutualnet.train.runkit`): the same schedule builder, AMP, data order (``EpochSampler`` +
``SeededSamples``: every image's flip is a function of (seed, epoch, index)), :class:`TrainState`,
:class:`Checkpointer` (``last.pt`` with every random state, refusing non-finite weights), :func:`restore` and
:class:`MetricsLog`, so a run resumes exactly, mid-epoch too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint import CheckpointMeta
from ..errors import MutualNetError
from ..io import atomic_write_text
from ..layers import use_config
from ..profiling import resolve_device
from ..train.config import load_config
from ..train.distributed import DistInfo, EpochSampler, SeededSamples
from ..train.guard import DivergenceGuard
from ..train.optim import build_scheduler
from ..train.runfolder import ResumeRule
from ..train.runkit import (
    Checkpointer,
    MetricsLog,
    TrainState,
    autocast_for,
    load_train_checkpoint,
    optimizer_step,
    restore,
    resume_config,
)
from ..train.step import SubNet, sample_subnets
from ..validate import MAX_RESOLUTION, MAX_WIDTH
from .data import CocoDetection, collate
from .model import TASK, SlimmableMaskRCNN, build_detector, load_backbone_weights

__all__ = ["DetectionConfig", "detection_step", "train_detector"]


@dataclass
class DetectionConfig:
    """Everything a detection run needs; YAML keys are these field names."""

    # how its checkpoints resume (train.runkit.resume_config): the schedule, the run's length, where it runs and
    # what it logs may change; the model, the data's sampling and the seed were fixed by the checkpoint
    RESUME: ClassVar[ResumeRule] = ResumeRule(
        TASK, "mutualnet detect train", "", "out",
        ("out", "epochs", "max_iterations", "lr", "base_lr", "warmup_iters", "lr_steps", "clip_grad_norm", "device",
         "amp", "num_workers", "log_every", "save_every", "tensorboard", "annotations", "images"))

    annotations: str = ""  # COCO instances JSON of the training set
    images: str = ""  # folder the JSON's file_name entries are relative to
    out: str = "runs/detect"  # run folder
    backbone: str = "vgg16_bn"  # vgg16_bn (paper) or resnet50
    init: str | None = None  # mutualnet classification checkpoint or torchvision state dict for the backbone
    width_range: tuple[float, float] = (0.25, 1.0)
    num_subnets: int = 4  # sandwich: widest + narrowest + (n - 2) random
    scales: list[int] = field(default_factory=lambda: [600, 480, 360, 240])  # short sides
    max_size: int = 1000  # long-side cap
    epochs: int = 24  # 2x schedule
    max_iterations: int | None = None  # stop after this many iterations (a trial run; lr_steps keep their epochs)
    batch_size: int = 8
    lr: float | None = None  # None: the linear scaling rule, base_lr * batch_size / base_batch_size
    base_lr: float = 0.02  # learning rate at base_batch_size images per step (torchvision's detection reference)
    base_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    lr_steps: list[int] = field(default_factory=lambda: [16, 22])  # epochs where lr *= 0.1
    clip_grad_norm: float | None = None
    device: str = "auto"
    amp: str = "none"  # none | bf16 | fp16 (fp16 uses a GradScaler)
    num_workers: int = 4
    seed: int = 0
    log_every: int = 20
    save_every: int = 500  # also save last.pt every this many iterations (0: only at epoch end)
    tensorboard: bool = False
    # shared FPN / heads and torchvision's sampling sizes
    fpn_channels: int = 256
    representation_size: int = 1024
    mask_layers: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    anchor_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000

    def model_kwargs(self) -> dict[str, Any]:
        return dict(width_range=tuple(self.width_range), scales=tuple(self.scales), max_size=self.max_size,
                    fpn_channels=self.fpn_channels, representation_size=self.representation_size,
                    mask_layers=tuple(self.mask_layers), anchor_sizes=tuple(self.anchor_sizes),
                    rpn_batch_size_per_image=self.rpn_batch_size_per_image,
                    box_batch_size_per_image=self.box_batch_size_per_image,
                    rpn_pre_nms_top_n_train=self.rpn_pre_nms_top_n_train,
                    rpn_post_nms_top_n_train=self.rpn_post_nms_top_n_train,
                    rpn_pre_nms_top_n_test=self.rpn_pre_nms_top_n_test,
                    rpn_post_nms_top_n_test=self.rpn_post_nms_top_n_test)

    def validate(self) -> None:
        if not self.annotations or not self.images:
            raise MutualNetError("set the training data: annotations (COCO JSON) and images (folder)")
        lo, hi = self.width_range
        if not 0 < lo <= hi:
            raise MutualNetError(f"width_range must be 0 < lo <= hi, got {list(self.width_range)}")
        if self.num_subnets < 2:
            raise MutualNetError("num_subnets must be >= 2 (the sandwich rule runs the widest and the narrowest)")
        if not self.scales or min(self.scales) < 32:
            raise MutualNetError(f"scales must be input short sides >= 32, got {self.scales}")
        if self.batch_size < 1 or self.epochs < 1 or self.base_batch_size < 1:
            raise MutualNetError("batch_size, base_batch_size and epochs must be >= 1")
        if max(self.scales) > MAX_RESOLUTION or not 1 <= self.max_size <= MAX_RESOLUTION:
            raise MutualNetError(f"scales and max_size must be at most {MAX_RESOLUTION} pixels")
        checks = [(self.lr is None or self.lr > 0, "lr must be > 0 (or unset: the linear scaling rule)"),
                  (self.base_lr > 0, "base_lr must be > 0"),
                  (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
                  (self.weight_decay >= 0, "weight_decay must be >= 0"), (hi <= MAX_WIDTH, "width_range too wide"),
                  (self.num_workers >= 0 and self.warmup_iters >= 0, "num_workers and warmup_iters must be >= 0"),
                  (self.log_every >= 1, "log_every must be >= 1"),
                  (0 <= self.seed < 2**32, "seed must be in [0, 2^32)"),
                  (self.max_iterations is None or self.max_iterations >= 1, "max_iterations must be >= 1"),
                  (self.clip_grad_norm is None or self.clip_grad_norm > 0, "clip_grad_norm must be > 0")]
        for ok, msg in checks:
            if not ok:
                raise MutualNetError(msg)
        if self.amp not in ("none", "bf16", "fp16"):
            raise MutualNetError(f"amp must be none, bf16 or fp16, got {self.amp!r}")

    def scaled_lr(self) -> float:
        """``lr`` if set, else the linear scaling rule (Goyal et al., 2017): ``base_lr * batch_size / base_batch_size``.

        Mask R-CNN's usual 0.02 is for 16 images per step; keeping it at 2 images (a CPU trial) is 8x too high
        and diverges.
        """
        return float(self.lr) if self.lr is not None else self.base_lr * self.batch_size / self.base_batch_size


def detection_step(model: SlimmableMaskRCNN, images: list, targets: list, subnets: list[SubNet], *,
                   autocast: contextlib.AbstractContextManager | None = None,
                   scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """Forward + backward every sub-network on the batch; gradients accumulate (the caller steps once).

    Returns the summed loss of each sub-network (``loss_w<width>_s<scale>``) and their mean (``loss``).
    """
    logs: dict[str, float] = {}
    total = 0.0
    for net in subnets:
        width, scale = net.width, net.resolution
        with use_config(model, width, scale), autocast or contextlib.nullcontext():
            losses = model(images, targets)
        loss = sum(v.float() for v in losses.values())
        if not torch.isfinite(loss):
            raise MutualNetError(f"loss is {loss.item()} at width {width:g}, scale {scale}; lower the learning rate")
        (scaler.scale(loss) if scaler is not None else loss).backward()
        logs[f"loss_w{width:.3f}_s{scale}"] = loss.item()
        total += loss.item()
    logs["loss"] = total / len(subnets)
    return logs


def _meta(cfg: DetectionConfig, dataset: CocoDetection) -> CheckpointMeta:
    return CheckpointMeta(task=TASK, mode="mutual_gt", resolutions=sorted(cfg.scales, reverse=True),
                          num_subnets=cfg.num_subnets, epochs=cfg.epochs, max_size=cfg.max_size,
                          dataset={"name": "coco", "annotations": str(cfg.annotations), "images": str(cfg.images),
                                   "num_classes": dataset.num_classes, "cat_ids": dataset.cat_ids})


def _config(cfg: DetectionConfig) -> dict:
    """The config as a checkpoint stores it: the width range lives once, in ``model_args``."""
    return {k: v for k, v in _plain(dataclasses.asdict(cfg)).items() if k != "width_range"}


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def train_or_resume(config: str | Path | None, overrides: list[str] | None = None, *,
                    resume: str | Path | None = None, **values: Any) -> tuple[Path, DetectionConfig]:
    """What ``mutualnet detect train`` does: resume ``resume`` (its own config plus ``overrides``), or train the
    recipe ``config`` with ``overrides`` and the flags' ``values`` (None: the recipe's). Returns the run folder and
    the config it trained with."""
    cfg = (resume_config(resume, overrides, schema=DetectionConfig) if resume
           else load_config(config, overrides, schema=DetectionConfig, **values))
    return train_detector(cfg, resume=resume), cfg


def train_detector(cfg: DetectionConfig, *, resume: str | Path | None = None, progress: bool = True) -> Path:
    """Train, writing ``config.yaml``, ``metrics.jsonl`` and ``last.pt`` to ``cfg.out``; returns the run folder.

    ``last.pt`` is written atomically at the end of every epoch and every ``save_every`` iterations, with the
    optimizer, schedule, scaler, every random state and the position in the epoch; ``resume`` continues from
    it exactly. A run folder that already holds a ``last.pt`` is never overwritten by a fresh run.
    """
    cfg.validate()
    cfg = dataclasses.replace(cfg, lr=cfg.scaled_lr())  # config.yaml records the learning rate used
    out = Path(cfg.out)
    if resume is None and (out / "last.pt").exists():
        raise MutualNetError(f"{out} already holds a run (last.pt); resume it with --resume {out / 'last.pt'} or "
                             "choose another --out")
    ckpt = load_train_checkpoint(resume, DetectionConfig) if resume is not None else None
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    info = DistInfo()
    device = resolve_device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                            "cpu" if cfg.device == "auto" else cfg.device)
    dataset = CocoDetection(cfg.annotations, cfg.images, train=True, skip_empty=True)
    model = build_detector(cfg.backbone, dataset.num_classes, **cfg.model_kwargs())
    if ckpt is None and cfg.init:
        load_backbone_weights(model, cfg.init)
    model.to(device).train()
    batch_size = min(cfg.batch_size, len(dataset))
    sampler = EpochSampler(len(dataset), seed=cfg.seed)
    loader = DataLoader(SeededSamples(dataset), batch_size=batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, collate_fn=collate, persistent_workers=cfg.num_workers > 0,
                        generator=torch.Generator().manual_seed(cfg.seed))
    steps_per_epoch = len(dataset) // batch_size
    total = cfg.epochs * steps_per_epoch if cfg.max_iterations is None else min(cfg.max_iterations,
                                                                                 cfg.epochs * steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, total, cfg.warmup_iters,
                                milestones=[e * steps_per_epoch for e in cfg.lr_steps])
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    autocast = autocast_for(cfg.amp, device)
    generator = torch.Generator().manual_seed(cfg.seed)  # the sub-network plan
    state = TrainState()
    if ckpt is not None:
        state = restore(ckpt, resume, model, optimizer, scheduler, scaler, generator, info, steps_per_epoch)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(_plain(dataclasses.asdict(cfg)), sort_keys=False))
    log = MetricsLog(out, csv_files=False, tensorboard=cfg.tensorboard,
                     resume_step=state.step if ckpt is not None else None)
    checkpointer = Checkpointer(out, model, optimizer, scheduler, scaler, generator, info, meta=_meta(cfg, dataset),
                                config=_config(cfg), steps_per_epoch=steps_per_epoch)
    scales = sorted(cfg.scales, reverse=True)
    guard = DivergenceGuard()
    bar = tqdm(total=total, initial=state.step, desc="detect train", disable=not progress)
    try:
        while state.step < total:
            sampler.set_epoch(state.epoch, state.epoch_step * batch_size)
            for images, targets in loader:
                if state.step >= total:
                    break
                images = [im.to(device) for im in images]
                targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
                optimizer.zero_grad(set_to_none=True)
                subnets = sample_subnets("mutual_gt", cfg.width_range, scales, cfg.num_subnets, generator)
                logs = detection_step(model, images, targets, subnets, autocast=autocast, scaler=scaler)
                why = guard.check(logs["loss"])
                if why:
                    last = out / "last.pt"
                    kept = f"{last} is untouched" if last.exists() else "no checkpoint was saved"
                    raise MutualNetError(f"{why} at iteration {state.step + 1} (epoch {state.epoch + 1}, lr "
                                         f"{optimizer.param_groups[0]['lr']:.3g}); training stopped and {kept}. Lower "
                                         "lr or raise warmup_iters, then resume with --resume")
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if cfg.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
                lr = optimizer_step(optimizer, scheduler, scaler, state)
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{lr:.2g}")
                if state.step % cfg.log_every == 0 or state.step == 1 or state.step == total:
                    log.write({"kind": "train", "epoch": state.epoch, "step": state.step, "lr": lr, **logs})
                if cfg.save_every and state.step % cfg.save_every == 0 and state.epoch_step < steps_per_epoch:
                    checkpointer.save(state)
            if state.epoch_step >= steps_per_epoch:
                state.epoch, state.epoch_step = state.epoch + 1, 0
            checkpointer.save(state)
    finally:
        bar.close()
        log.close()
    return out
