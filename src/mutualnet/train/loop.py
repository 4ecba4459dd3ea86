"""The training loop: data, optimizer, schedule, validation, metrics and exact, crash-safe resume.

Plain functions in the torchvision reference style, each with explicit arguments: :func:`build_data`,
:func:`build_model`, :func:`train_one_epoch` (the iterations, each one :func:`~mutualnet.train.step.train_step`),
:func:`validate` / :func:`evaluate`; :func:`train` strings them together with the run kit
(:mod:`mutualnet.train.runkit`: the checkpoint writer and reader, the metrics log, the run's clock).

Resume is exact: the checkpoint holds the model, optimizer, schedule, grad scaler, every random state
(the sub-network sampler, torch, CUDA, python, numpy, per process) and the position in the epoch; the
data order and every batch's augmentation are functions of ``(seed, epoch, position)``
(:class:`~mutualnet.train.distributed.EpochSampler`, :class:`~mutualnet.train.distributed.SeededSamples`).
A resumed run therefore draws the same batches and sub-networks and follows the same loss trajectory as one
that was never interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..calibrate import calibrate
from ..checkpoint import CheckpointMeta, built_in_python, python_built_error
from ..data.datasets import DatasetInfo, random_subset
from ..errors import MutualNetError
from ..evaluate import evaluate
from ..layers import SlimmableBatchNorm2d, check_depth, config_key, convert_sync_batchnorm, zero_init_residual
from ..models import create_model
from ..models.tv import small_input_hint
from ..threads import training_threads
from .compiled import AutoCompile, CompiledModel
from .config import (
    SINGLE_NETWORK_MODES,
    TrainConfig,
    config_to_dict,
    resolve,
    save_config,
)
from .distributed import (
    DistInfo,
    EpochSampler,
    SeededSamples,
    ShardSampler,
    all_reduce_gradients,
    all_reduce_mean,
    broadcast_model,
    cleanup_distributed,
    init_distributed,
)
from .guard import DivergenceGuard
from .objects import ObjectData, resolve_objects
from .optim import build_optimizer, build_scheduler
from .runfolder import apply_lr, carry_metrics, open_run_folder
from .runkit import (
    Checkpointer,
    MetricsLog,
    RunClock,
    TrainState,
    autocast_for,
    epoch_line,
    load_train_checkpoint,
    optimizer_step,
    restore,
)
from .step import alpha_divergence, dropout_modules, sample_subnets, train_step
from .transfer import adopt_init, describe_init, load_pretrained

__all__ = ["train", "build_data", "build_model", "train_one_epoch", "validate",
           "TrainData", "EpochResult"]


# -- evaluation -------------------------------------------------------------------------------------
@contextlib.contextmanager
def _calibrated(model: nn.Module, batches: list, width: float, resolution: int, depth: int | None = None):
    """Re-estimate BN statistics at ``(width, resolution, depth)`` for the block, then drop them again.

    Shared running statistics are only right for the widest sub-network; any other configuration needs
    its own (the paper's post-statistics, :func:`mutualnet.calibrate.calibrate`). They are removed
    afterwards so training checkpoints never hold statistics that go stale.
    """
    images = torch.cat(batches)
    key = calibrate(model, images, width, resolution, num_images=len(images), batch_size=len(batches[0]),
                    depth=depth).key
    try:
        yield
    finally:
        for bn in model.modules():
            if isinstance(bn, SlimmableBatchNorm2d):
                bn.calibrated.pop(key, None)


# -- one epoch ---------------------------------------------------------------------------------------
@dataclass
class EpochResult:
    """What :func:`train_one_epoch` did: whether it reached the epoch's end, and its summed losses."""

    finished: bool = True
    loss_sum: float = 0.0  # sum over iterations of the summed sub-network losses
    iterations: int = 0
def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
                    state: TrainState, *, cfg: TrainConfig, device: torch.device, info: DistInfo,
                    sampler_gen: torch.Generator, steps_per_epoch: int, log: MetricsLog | None,
                    checkpointer: Checkpointer, guard: DivergenceGuard,
                    compiled: CompiledModel | AutoCompile | None = None) -> EpochResult:
    """Run the rest of epoch ``state.epoch`` (``finished`` False when ``run.max_steps`` stopped it early).

    ``state`` is updated in place after every iteration; ``last.pt`` is written every ``run.save_every``;
    ``guard`` stops a diverging run before its weights are saved; ``compiled`` (``run.compile``) runs the step
    (``run.compile: auto``: an :class:`AutoCompile` that times the first eager steps and decides).
    """
    result = EpochResult()
    t, r = cfg.train, cfg.run
    autocast = autocast_for(r.amp, device)
    params = [p for p in model.parameters() if p.requires_grad]
    distill = None if t.distill == "kl" else functools.partial(
        alpha_divergence, alpha_min=t.alpha_min, alpha_max=t.alpha_max, clip=t.alpha_clip, temperature=t.temperature)
    bar = tqdm(total=steps_per_epoch, initial=state.epoch_step, desc=f"epoch {state.epoch + 1}/{t.epochs}",
               disable=not (info.is_main and r.progress), dynamic_ncols=True, leave=False)
    tick, seen = time.perf_counter(), 0
    model.train()
    for images, labels in loader:
        if r.max_steps is not None and state.step >= r.max_steps:
            bar.close()
            result.finished = False
            return result
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if r.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        elastic = state.step >= t.full_depth_epochs * steps_per_epoch  # progressive shrinking: full depth first
        subnets = sample_subnets(t.mode, cfg.model.width_range, t.resolutions, t.num_subnets, sampler_gen,
                                 depth_range=cfg.model.depth_range if elastic else None)
        auto = compiled if isinstance(compiled, AutoCompile) else None
        step_model = (auto.step_model() if auto is not None else compiled) or model
        if step_model is not model:  # compiled: the same networks, a finite number of graphs
            subnets = step_model.snap_subnets(subnets)
        optimizer.zero_grad(set_to_none=True)
        started = time.perf_counter()
        losses = train_step(step_model, images, labels, subnets, label_smoothing=t.label_smoothing,
                            temperature=t.temperature, autocast=autocast, scaler=scaler, resize=cfg.data.resize,
                            distill=distill, regularize=t.regularize)
        losses = all_reduce_mean(losses, info)
        total = float(losses.sum())
        if auto is not None and (said := auto.observe(time.perf_counter() - started)) and info.is_main:
            tqdm.write(said)
        why = guard.check(total)
        if why:
            bar.close()
            last = checkpointer.run_dir / "last.pt"
            where = f"the last good checkpoint {last} is untouched" if last.exists() else "no checkpoint was saved"
            raise MutualNetError(
                f"{why} at iteration {state.step + 1} (epoch {state.epoch + 1}); training "
                f"stopped and {where}. Lower optim.lr, add optim.warmup_epochs or use run.amp=none/bf16, then "
                "resume with --resume")
        if info.enabled:
            all_reduce_gradients(params, info.world_size)
        if cfg.optim.clip_grad_value is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_value_(params, cfg.optim.clip_grad_value)
        lr = optimizer_step(optimizer, scheduler, scaler, state)
        result.loss_sum, result.iterations = result.loss_sum + total, result.iterations + 1
        seen += images.shape[0] * info.world_size
        bar.update(1)
        if state.step % r.log_every == 0 or state.epoch_step == steps_per_epoch:
            elapsed = time.perf_counter() - tick
            img_s = seen / elapsed if elapsed > 0 else 0.0
            tick, seen = time.perf_counter(), 0
            if log is not None:
                log.write({"kind": "train", "epoch": state.epoch, "step": state.step, "loss": total,
                           "losses": losses.tolist(), "lr": lr, "img_s": img_s})
            bar.set_postfix(loss=f"{total:.4f}", lr=f"{lr:.4g}", img_s=f"{img_s:.0f}")
        if r.save_every and state.step % r.save_every == 0 and state.epoch_step < steps_per_epoch:
            checkpointer.save(state)
    bar.close()
    return result


# -- setup ------------------------------------------------------------------------------------------
def _device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MutualNetError(f"run.device={name} but CUDA is not available; use run.device=cpu")
        return torch.device("cuda", info.local_rank) if info.enabled else torch.device(name)
    if name != "cpu":
        raise MutualNetError(f"unknown run.device {name!r}; use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


@dataclass
class TrainData:
    """The loaders of a run. Each batch's augmentation is seeded by (seed, epoch, position), see SeededSamples."""

    train: DataLoader
    val: DataLoader
    calib: DataLoader  # training images for the BN statistics of the validated non-widest configuration
    sampler: EpochSampler
    local_batch: int
    steps_per_epoch: int
    train_set: Dataset  # the training images (what the checkpoint's artefact meta describes)


def build_data(cfg: TrainConfig, data_info: DatasetInfo, info: DistInfo, device: torch.device,
               given: ObjectData | None = None) -> TrainData:
    """Datasets and loaders of a run; loaders get their own generators so they never draw from the global RNG.

    ``given``: dataset objects (:func:`mutualnet.train.fit`) used instead of the datasets ``data.name`` builds.
    """
    from ..data import build_dataset
    from ..data.splits import split_holdout

    d, r = cfg.data, cfg.run
    if d.batch_size % info.world_size:
        raise MutualNetError(f"data.batch_size {d.batch_size} is not divisible by {info.world_size} processes")
    local_batch = d.batch_size // info.world_size
    if given is not None:  # dataset objects (fit): their own transforms
        train_ds, val_ds = given.train, given.val
    else:
        synth = {}
        if data_info.name == "synthetic":
            synth = {"num_classes": cfg.model.num_classes, "in_chans": cfg.model.args.get("in_chans")}
        common = {"root": d.root, "input_size": d.input_size, "synthetic_length": d.synthetic_length,
                  "seed": r.seed, "decoder": d.decoder, **synth}
        train_ds = build_dataset(d.name, "train", crop_scale=tuple(d.crop_scale), hflip=d.hflip,
                                 color_jitter=d.color_jitter, crop_padding=d.crop_padding, lighting=d.lighting,
                                 padding_mode=d.padding_mode, **common)
        if d.holdout:  # validation on held-out training images, never on the test set (mutualnet.data.splits)
            eval_view = build_dataset(d.name, "train", augment=False, val_resize_ratio=d.val_resize_ratio, **common)
            train_ds, val_ds = split_holdout(train_ds, d.holdout, eval_view)
        else:
            val_ds = build_dataset(d.name, "val", val_resize_ratio=d.val_resize_ratio, **common)
    if d.train_subset is not None:
        train_ds = train_subset(train_ds, d.train_subset)
    if len(train_ds) < d.batch_size:
        raise MutualNetError(f"the training set has {len(train_ds)} images, fewer than data.batch_size "
                             f"{d.batch_size}")
    sampler = EpochSampler(len(train_ds), num_replicas=info.world_size, rank=info.rank, seed=r.seed)
    loader_args = {"num_workers": d.workers, "pin_memory": device.type == "cuda", "persistent_workers": d.workers > 0}
    train_loader = DataLoader(SeededSamples(train_ds), batch_size=local_batch, sampler=sampler, drop_last=True,
                              generator=torch.Generator().manual_seed(r.seed), **loader_args)
    val_loader = DataLoader(val_ds, batch_size=(d.val_batch_size or d.batch_size) // info.world_size or 1,
                            sampler=ShardSampler(len(val_ds), info.world_size, info.rank),
                            generator=torch.Generator().manual_seed(r.seed), **loader_args)
    calib_sampler = EpochSampler(len(train_ds), num_replicas=info.world_size, rank=info.rank, seed=r.seed + 7)
    calib_loader = DataLoader(SeededSamples(train_ds), batch_size=local_batch, sampler=calib_sampler,
                              num_workers=min(d.workers, 2), generator=torch.Generator().manual_seed(r.seed))
    return TrainData(train_loader, val_loader, calib_loader, sampler, local_batch, sampler.per_rank // local_batch,
                     train_ds)


def build_model(cfg: TrainConfig, device: torch.device, info: DistInfo, *, pretrained: bool = True,
                given: nn.Module | None = None) -> nn.Module:
    """The model of ``cfg.model`` on ``device`` (with ``model.init`` weights when ``pretrained``); ``given``: a
    model object (:func:`mutualnet.train.fit`) used instead of building one, checked and moved the same way."""
    m, t, r = cfg.model, cfg.train, cfg.run
    depth_range = None if m.depth_range is None else tuple(m.depth_range)
    model = given if given is not None else create_model(m.name, num_classes=m.num_classes,
                                                         width_range=tuple(m.width_range), depth_range=depth_range,
                                                         **m.args)
    if m.zero_init_residual and not zero_init_residual(model):
        raise MutualNetError(f"model.zero_init_residual: {m.name} has no residual blocks; leave the setting off")
    if t.regularize == "widest" and not dropout_modules(model):
        raise MutualNetError(f"train.regularize=widest changes nothing: {m.name} has no dropout or drop-path (weight "
                             "decay is applied once per step either way, see docs/parity.md); leave it at all")
    if given is None and info.is_main and (hint := small_input_hint(m.name, m.args, max(t.resolutions))):
        print(hint, file=sys.stderr, flush=True)
    if m.init and pretrained:  # transfer learning: all but the new classifier (see train/transfer.py)
        report = load_pretrained(model, m.init)
        if info.is_main:
            print(describe_init(report), flush=True)
    if min(t.resolutions) < model.min_resolution:
        raise MutualNetError(f"resolution {min(t.resolutions)} is too small for {m.name} "
                             f"(needs at least {model.min_resolution})")
    if r.sync_bn and info.enabled:
        convert_sync_batchnorm(model)
    model.to(device)
    if r.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def validate(model: nn.Module, data: TrainData, cfg: TrainConfig, state: TrainState, device: torch.device,
             info: DistInfo) -> dict:
    """A ``val`` metrics row: the widest configuration, and the narrowest (the shallowest too, with elastic depth)
    with BN statistics re-estimated."""
    t, r = cfg.train, cfg.run
    lo, hi = cfg.model.width_range
    d_lo = cfg.model.depth_range[0] if cfg.model.depth_range and t.mode not in SINGLE_NETWORK_MODES else None
    configs = {"widest": (hi, t.resolutions[0], None)}
    if (lo, t.resolutions[-1], d_lo) != (hi, t.resolutions[0], None):
        configs["narrowest"] = (lo, t.resolutions[-1], d_lo)
    kw = {"device": device, "autocast": autocast_for(r.amp, device), "max_batches": r.val_batches,
          "distributed": info.enabled, "channels_last": r.channels_last}
    row = {"kind": "val", "split": "holdout" if cfg.data.holdout else "test", "epoch": state.epoch, "step": state.step}
    for tag, (w, res, depth) in configs.items():
        depth = check_depth(model, depth)
        if tag == "widest":
            out = evaluate(model, data.val, w, res, **kw)
        else:
            batches = [x.to(device) for x, _ in _take(data.calib, r.calib_batches)]
            with _calibrated(model, batches, w, res, depth):
                out = evaluate(model, data.val, w, res, depth=depth, **kw)
        row |= {f"{k}_{tag}": out[k] for k in ("top1", "top5", "loss")} | {
            f"config_{tag}": config_key(w, res, depth)}
    model.train()
    return row


def train(cfg: TrainConfig, resume: str | Path | None = None, *, model: nn.Module | None = None,
          data: ObjectData | None = None) -> Path:
    """Train a network as ``cfg`` describes and return its run folder.

    Args:
        cfg: The configuration (see :mod:`mutualnet.train.config`); ``None`` fields are resolved.
        resume: A ``last.pt`` (or ``best.pt``) written by an earlier run to continue exactly.
        model, data: A model object and dataset objects to train instead of those ``cfg.model`` and
            ``cfg.data`` name (both or neither; :func:`mutualnet.train.fit` is the documented way in).

    The run folder holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``last.pt``, ``best.pt`` and
    ``tb/`` (TensorBoard). Under ``torchrun`` every process calls this; rank 0 writes the files.
    """
    from ..data import dataset_info, preprocessing_for
    from ..data.preprocess import class_names_of

    if (model is None) != (data is None):
        raise MutualNetError("train: give a model object and dataset objects together (mutualnet.train.fit), "
                             "or neither")
    ckpt = load_train_checkpoint(resume) if resume is not None else None
    if ckpt is not None and model is None and built_in_python(ckpt):
        raise python_built_error(ckpt, resume)
    if model is not None:  # objects: what the registry and the data folder would say comes from them
        adopted = None
        cfg, data_info = resolve_objects(cfg, model, data)
    else:
        adopted = adopt_init(cfg.model) if ckpt is None and cfg.model.init else None  # before data and workers
        data_info = dataset_info(cfg.data.name, cfg.data.root)
        cfg = resolve(cfg, data_info.to_dict() | {"root": cfg.data.root})
    d, t, o, r = cfg.data, cfg.train, cfg.optim, cfg.run
    if d.root is not None:  # recorded absolute, so calibrate/search/eval find the data from any folder
        d.root = str(Path(d.root).expanduser().absolute())
    run_dir = Path(r.out)
    info = init_distributed("cuda" if r.device.startswith("cuda") or (
        r.device == "auto" and torch.cuda.is_available()) else "cpu")
    if adopted and info.is_main:
        print(adopted, flush=True)
    log = lock = None
    try:
        if info.is_main:  # one writer per run folder; temporary files of a killed run are removed
            lock = open_run_folder(run_dir)
        if (run_dir / "last.pt").exists() and (ckpt is None or run_dir.resolve() != Path(resume).parent.resolve()):
            raise MutualNetError(f"{run_dir} already holds a run (last.pt); resume it with --resume "
                                 f"{run_dir / 'last.pt'} or choose another run.out")
        device = _device(r.device, info)
        if device.type == "cpu" and r.amp != "none" and info.is_main:
            print(f"note: run.amp={r.amp} on a CPU is usually slower than full precision; --set run.amp=none "
                  "(configs/mobilenet_v2_imagefolder_cpu.yaml is the CPU-sized recipe)", file=sys.stderr)
        torch.set_num_threads(training_threads(r.threads, torch.get_num_threads()))  # safe on a busy machine
        torch.manual_seed(r.seed)
        random.seed(r.seed)
        np.random.seed(r.seed)
        given, data = data, build_data(cfg, data_info, info, device, data)
        model = build_model(cfg, device, info, pretrained=ckpt is None, given=model)
        # the one record of how inputs are made: calibration, evaluation and the checkpoints read it
        model.preprocessing = preprocessing_for(data_info.name, d.input_size, d.val_resize_ratio, model.in_chans,
                                                d.resize, given=data.train_set)
        optimizer = build_optimizer(model, o.lr, o.momentum, o.nesterov, o.weight_decay, o.decay_all)
        scheduler = build_scheduler(optimizer, t.epochs * data.steps_per_epoch,
                                    round(o.warmup_epochs * data.steps_per_epoch), o.min_lr)
        scaler = torch.amp.GradScaler(device.type) if r.amp == "fp16" else None
        sampler_gen = torch.Generator().manual_seed(r.seed + 1)
        if ckpt is not None:
            state = restore(ckpt, resume, model, optimizer, scheduler, scaler, sampler_gen, info,
                            data.steps_per_epoch)
            apply_lr(optimizer, scheduler, o.lr)  # a changed optim.lr applies (a no-op when unchanged)
        else:
            state = TrainState()
            if info.enabled:
                broadcast_model(model)
        clock = RunClock(state, t.epochs * data.steps_per_epoch if r.max_steps is None
                         else min(r.max_steps, t.epochs * data.steps_per_epoch))
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if ckpt is not None:
                carry_metrics(Path(resume).parent, run_dir)  # resumed into a new run.out: the history comes along
            save_config(cfg, run_dir / "config.yaml")
            log = MetricsLog(run_dir, csv_files=r.csv, tensorboard=r.tensorboard,
                             resume_step=state.step if ckpt is not None else None)
        meta = CheckpointMeta.from_dict({
            "mode": t.mode, "resolutions": list(t.resolutions), "epochs": t.epochs,
            "num_subnets": t.num_subnets if t.mode not in SINGLE_NETWORK_MODES else 1,
            "dataset": {"name": None if given is not None else data_info.name, "root": d.root,
                        "num_classes": cfg.model.num_classes, "in_chans": model.in_chans,
                        **({"holdout": d.holdout} if d.holdout else {})},
            "preprocessing": model.preprocessing,
            **({"class_names": names} if (names := class_names_of(data.train_set)) else {})})
        config = config_to_dict(cfg)
        config["model"].pop("width_range", None)  # stored once, in model_args
        config["model"].pop("depth_range", None)  # likewise (a run without elastic depth: its config as before)
        if not t.full_depth_epochs:
            config["train"].pop("full_depth_epochs", None)
        checkpointer = Checkpointer(run_dir, model, optimizer, scheduler, scaler, sampler_gen, info, meta=meta,
                                    config=config, steps_per_epoch=data.steps_per_epoch, clock=clock)
        guard = DivergenceGuard()
        compiled = (CompiledModel(model, backend=r.compile_backend) if r.compile is True else
                    AutoCompile(model, steps_left=clock.total_steps - state.step, num_resolutions=len(t.resolutions),
                                device_type=device.type, backend=r.compile_backend,
                                reduce=lambda s: float(all_reduce_mean(torch.tensor([s], device=device), info)))
                    if r.compile == "auto" else None)
        while state.epoch < t.epochs:
            data.sampler.set_epoch(state.epoch, state.epoch_step * data.local_batch)
            result = train_one_epoch(model, data.train, optimizer, scheduler, scaler, state, cfg=cfg, device=device,
                                     info=info, sampler_gen=sampler_gen, steps_per_epoch=data.steps_per_epoch,
                                     log=log, checkpointer=checkpointer, guard=guard, compiled=compiled)
            epoch, ran = state.epoch, result.iterations > 0
            names, top1, row = ("last.pt",), None, None
            if r.val_every and ran and ((epoch + 1) % r.val_every == 0 or not result.finished):
                row = validate(model, data, cfg, state, device, info)  # a run stopped early leaves a best.pt too
                top1 = {k.removeprefix("top1_"): v for k, v in row.items() if k.startswith("top1_")}
                if log is not None:
                    log.write(row)
                if state.best_top1 is None or row["top1_widest"] > state.best_top1:
                    state.best_top1 = row["top1_widest"]
                    names = ("last.pt", "best.pt")
            clock.tick()
            if info.is_main and ran:
                loss = [result.loss_sum, result.iterations]
                print(epoch_line(epoch, t.epochs, loss, row, clock, result.finished), flush=True)
            if result.finished:
                state.epoch, state.epoch_step = epoch + 1, 0
            if not (run_dir / "best.pt").exists() and (not result.finished or state.epoch >= t.epochs):
                names = ("last.pt", "best.pt")  # never validated: the final weights are the best known
            checkpointer.save(state, names, top1)
            if not result.finished:
                break
    finally:
        if log is not None:
            log.close()
        if lock is not None:
            lock.release()
        cleanup_distributed(info)
    return run_dir


def train_subset(dataset: Dataset, n: int) -> Dataset:
    """``n`` images of ``dataset`` drawn at random with seed 0, so every run (any ``run.seed``) sees the same ones.

    A quick look at a recipe (``mutualnet compare --train-images``) trains on fewer images rather than on a
    fraction of an epoch, so the schedule (warm-up, cosine) still runs over whole epochs.
    """
    if n > len(dataset):
        raise MutualNetError(f"data.train_subset {n} exceeds the {len(dataset)} images of the training set")
    return random_subset(dataset, n, seed=0)


def _take(loader: DataLoader, n: int) -> list:
    out = []
    for i, batch in enumerate(loader):
        if i >= n:
            break
        out.append(batch)
    return out
