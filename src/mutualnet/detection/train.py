"""Train a slimmable Mask R-CNN with the sandwich rule, one input scale per sub-network.

Each iteration runs the widest, the narrowest and ``num_subnets - 2`` random widths (the sandwich rule) on
the same images; every sub-network gets its own input scale (the widest the largest, as in MutualNet's
classification training; the others a random one of ``scales``) and is trained on the ground truth -- the sum
of Mask R-CNN's losses, no inplace distillation, as in the paper. The plan comes from the classification
trainer's :func:`mutualnet.train.step.sample_subnets` in its ``mutual_gt`` mode, so both tasks sample alike.
Gradients of all sub-networks accumulate and the optimiser steps once. The loop follows torchvision's
detection reference: SGD with momentum, linear warm-up, step decay; ``config.yaml`` + ``metrics.jsonl`` +
``last.pt`` in the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from ..checkpoint import FORMAT, VERSION, atomic_save, load_checkpoint
from ..errors import MutualNetError
from ..io import atomic_write_text, read_jsonl
from ..profiling import resolve_device
from ..train.config import apply_overrides, build_dataclass, read_yaml_mapping
from ..train.guard import DivergenceGuard
from ..train.step import SubNet, sample_subnets
from ..validate import MAX_RESOLUTION, MAX_WIDTH
from .data import CocoDetection, collate
from .model import TASK, SlimmableMaskRCNN, build_detector, load_backbone_weights

__all__ = ["DetectionConfig", "detection_step", "train_detector", "load_config",
           "detector_checkpoint", "resume_config"]


@dataclass
class DetectionConfig:
    """Everything a detection run needs; YAML keys are these field names."""

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
    num_workers: int = 4
    seed: int = 0
    log_every: int = 20
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

    def scaled_lr(self) -> float:
        """``lr`` if set, else the linear scaling rule (Goyal et al., 2017): ``base_lr * batch_size / base_batch_size``.

        Mask R-CNN's usual 0.02 is for 16 images per step; keeping it at 2 images (a CPU trial) is 8x too high
        and diverges.
        """
        return float(self.lr) if self.lr is not None else self.base_lr * self.batch_size / self.base_batch_size


def load_config(path: str | None = None, overrides: list[str] | None = None, **values: Any) -> DetectionConfig:
    """A :class:`DetectionConfig` from a YAML file, then ``values`` (non-None), then ``key=value`` overrides."""
    raw = read_yaml_mapping(path) if path is not None else {}
    raw.update({k: v for k, v in values.items() if v is not None})
    apply_overrides(raw, overrides)
    names = {f.name for f in dataclasses.fields(DetectionConfig)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise MutualNetError(f"unknown detection setting(s): {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    cfg = build_dataclass(DetectionConfig, raw)  # types checked, naming the key: `--set epochs=abc` is one line
    cfg.validate()
    return cfg


def detection_step(model: SlimmableMaskRCNN, images: list, targets: list, subnets: list[SubNet]) -> dict[str, float]:
    """Forward + backward every sub-network on the batch; gradients accumulate (the caller steps once).

    Returns the summed loss of each sub-network (``loss_w<width>_s<scale>``) and their mean (``loss``).
    """
    logs: dict[str, float] = {}
    total = 0.0
    for net in subnets:
        width, scale = net.width, net.resolution
        model.set_config(width, scale)
        losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise MutualNetError(f"loss is {loss.item()} at width {width:g}, scale {scale}; lower the learning rate")
        loss.backward()
        logs[f"loss_w{width:.3f}_s{scale}"] = loss.item()
        total += loss.item()
    logs["loss"] = total / len(subnets)
    return logs


def detector_checkpoint(model: SlimmableMaskRCNN, cfg: DetectionConfig, dataset: CocoDetection, **extra: Any) -> dict:
    """Self-describing detection checkpoint (mutualnet format, ``task: detection``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {"task": TASK, "mode": "mutual", "resolutions": sorted(cfg.scales, reverse=True),
            "width_range": list(cfg.width_range), "max_size": cfg.max_size,
            "dataset": {"name": "coco", "annotations": str(cfg.annotations), "images": str(cfg.images),
                        "num_classes": dataset.num_classes, "cat_ids": dataset.cat_ids}}
    return {"format": FORMAT, "version": VERSION, "task": TASK, "model_name": f"maskrcnn_{cfg.backbone}",
            "model_args": dict(model.detector_args), "model": state, "meta": meta,
            "config": _plain(dataclasses.asdict(cfg)), **extra}


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _lr_factor(it: int, epoch: int, cfg: DetectionConfig) -> float:
    warm = 1.0 if it >= cfg.warmup_iters else 0.001 + (1 - 0.001) * it / max(cfg.warmup_iters, 1)
    return warm * 0.1 ** sum(epoch >= s for s in cfg.lr_steps)


def _resume_state(path: str | Path) -> dict:
    ckpt = load_checkpoint(path)
    if ckpt.get("task") != TASK or not {"optimizer", "subnet_rng", "torch_rng", "epoch", "iteration"} <= set(ckpt):
        raise MutualNetError(f"{path} is not a detection training checkpoint (written by `mutualnet detect train`)")
    return ckpt


def resume_config(path: str | Path, overrides: list[str] | None = None) -> DetectionConfig:
    """The config a detection checkpoint was trained with, with ``key=value`` overrides (e.g. ``epochs=36``)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("task") != TASK or not isinstance(ckpt.get("config"), dict):
        raise MutualNetError(f"{path} is not a detection training checkpoint (written by `mutualnet detect train`)")
    return load_config(None, overrides, **ckpt["config"])


def train_detector(cfg: DetectionConfig, *, resume: str | Path | None = None, progress: bool = True) -> Path:
    """Train, writing ``config.yaml``, ``metrics.jsonl`` and ``last.pt`` to ``cfg.out``; returns the run folder.

    ``last.pt`` is written atomically at the end of every epoch and holds the optimizer and sampling state;
    ``resume`` continues from such a checkpoint at the next epoch. A run folder that already holds a
    ``last.pt`` is never overwritten by a fresh run.
    """
    cfg.validate()
    cfg = dataclasses.replace(cfg, lr=cfg.scaled_lr())  # config.yaml records the learning rate used
    out = Path(cfg.out)
    if resume is None and (out / "last.pt").exists():
        raise MutualNetError(f"{out} already holds a run (last.pt); resume it with --resume {out / 'last.pt'} or "
                             "choose another --out")
    ckpt = _resume_state(resume) if resume is not None else None
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)  # the sub-network plan
    sampler_gen = torch.Generator()  # the image order, reseeded per epoch so a resumed run sees the same order
    device = resolve_device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                            "cpu" if cfg.device == "auto" else cfg.device)
    dataset = CocoDetection(cfg.annotations, cfg.images, train=True, skip_empty=True)
    model = build_detector(cfg.backbone, dataset.num_classes, **cfg.model_kwargs())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    start_epoch, it = 0, 0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise MutualNetError(f"cannot resume from {resume}: it does not match this config "
                                 f"({str(e).strip().splitlines()[0][:200]})") from None
        generator.set_state(ckpt["subnet_rng"])
        torch.set_rng_state(ckpt["torch_rng"])  # RPN / RoI sampling draws from the global generator
        start_epoch, it = int(ckpt["epoch"]) + 1, int(ckpt["iteration"])
    elif cfg.init:
        load_backbone_weights(model, cfg.init)
    model.to(device).train()
    for state in optimizer.state.values():  # after a resume, the momentum buffers follow the model's device
        for k, v in state.items():
            if torch.is_tensor(v):
                state[k] = v.to(device)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(_plain(dataclasses.asdict(cfg)), sort_keys=False))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=RandomSampler(dataset, generator=sampler_gen),
                        num_workers=cfg.num_workers, collate_fn=collate, drop_last=len(dataset) >= cfg.batch_size,
                        persistent_workers=cfg.num_workers > 0)
    total = cfg.epochs * len(loader) if cfg.max_iterations is None else min(cfg.max_iterations,
                                                                            cfg.epochs * len(loader))
    metrics = out / "metrics.jsonl"
    if ckpt is not None and metrics.exists():  # rows after the checkpoint, and a line torn by a kill, are dropped
        rows, _ = read_jsonl(metrics, "metrics log")
        rows = [r for r in rows if isinstance(r, dict) and isinstance(r.get("iteration"), int) and r["iteration"] <= it]
        atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in rows))
    t0 = time.time()
    guard = DivergenceGuard()
    bar = tqdm(total=total, initial=it, desc="detect train", disable=not progress)
    with open(metrics, "a") as log:
        for epoch in range(start_epoch, math.ceil(total / len(loader))):
            sampler_gen.manual_seed(cfg.seed * 100003 + epoch)
            for images, targets in loader:
                if it >= total:
                    break
                lr = cfg.lr * _lr_factor(it, epoch, cfg)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                images = [im.to(device) for im in images]
                targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
                optimizer.zero_grad(set_to_none=True)
                subnets = sample_subnets("mutual_gt", cfg.width_range, sorted(cfg.scales, reverse=True),
                                         cfg.num_subnets, generator)
                logs = detection_step(model, images, targets, subnets)
                why = guard.check(logs["loss"])
                if why:
                    bar.close()
                    kept = f"{out / 'last.pt'} (epoch end) is untouched" if (out / "last.pt").exists() else \
                        "no checkpoint was saved"
                    raise MutualNetError(f"{why} at iteration {it + 1} (epoch {epoch + 1}, lr {lr:.3g}); training "
                                         f"stopped and {kept}. Lower lr or raise warmup_iters, then resume with "
                                         "--resume")
                if cfg.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
                optimizer.step()
                it += 1
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{lr:.2g}")
                if it % cfg.log_every == 0 or it == 1 or it == total:
                    log.write(json.dumps({"iteration": it, "epoch": epoch, "lr": lr,
                                          "time_s": round(time.time() - t0, 2), **logs}) + "\n")
                    log.flush()
            atomic_save(detector_checkpoint(model, cfg, dataset, optimizer=optimizer.state_dict(), epoch=epoch,
                                            iteration=it, subnet_rng=generator.get_state(),
                                            torch_rng=torch.get_rng_state()), out / "last.pt")
    bar.close()
    return out
