"""Search a trained checkpoint: its data, every width x resolution, and the files a search leaves.

:func:`search_checkpoint` is what ``mutualnet search`` runs (and the demo and the comparison call):
rebuild the model and its dataset from the checkpoint, build the query table resumably in ``out``, and
write ``query_table.json`` / ``.csv`` and ``calibrated.pt`` (the checkpoint with every searched
configuration's BN statistics and the table under ``"query_table"``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist
from torch.utils.data import DataLoader

from ..calibrate import CalibrationResult, calibrate, is_calibrated
from ..checkpoint import (
    atomic_save,
    checkpoint_dict,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from ..data.checkpoint import data_from_checkpoint
from ..data.datasets import random_subset
from ..data.preprocess import artefact_fields
from ..data.splits import choose_split
from ..errors import MutualNetError
from ..evaluate import evaluate
from ..io import LOCK_NAME, clean_stale_temps, folder_lock
from ..layers import WidthRange, check_depth, config_key, depth_range_of
from ..models import model_info
from ..profiling import profile, resolve_device
from ..train.distributed import cleanup_distributed, init_distributed
from .build import (
    STATS_DIR,
    SearchPlan,
    build_query_table,
    clear_search_state,
    merge_search_states,
    report_test_accuracy,
)
from .table import QueryTable, config_text

__all__ = ["SearchResult", "search_checkpoint", "calibrate_checkpoint", "evaluate_checkpoint", "checkpoint_resolutions",
           "describe_evaluation"]


@dataclass(frozen=True)
class SearchResult:
    """What a search wrote and how long it took."""

    table: QueryTable
    table_path: Path
    csv_path: Path
    checkpoint_path: Path
    num_widths: int
    num_resolutions: int
    seconds: float

    def describe(self) -> list[str]:
        """What ``mutualnet search`` prints: the search's size and pace, the best row and the frontier's size, and
        the files written (one JSON line, for scripts)."""
        import json

        table, cal = self.table, self.table.meta["calibration"]
        best = max(table.rows, key=lambda r: r["top1"])
        test = f" (test set: {best['test_top1']:.2f}%)" if "test_top1" in best else ""
        return [f"searched {len(table)} configurations ({self.num_widths} widths x {self.num_resolutions} resolutions) "
                f"in {self.seconds:.1f}s; calibration {cal['images_per_s']} images/s, "
                f"{100 * (cal['share_of_search_time'] or 0):.0f}% of search time",
                f"best: width {best['width']:g} at {best['resolution']} px, top-1 {best['top1']:.2f}% on the "
                f"{table.meta.get('split', 'test')} images{test}, {best['mflops']:.2f} MFLOPs; frontier: "
                f"{sum(r['pareto'] for r in table.rows)} configurations",
                json.dumps({"table": str(self.table_path), "csv": str(self.csv_path),
                            "checkpoint": str(self.checkpoint_path)})]


def checkpoint_resolutions(ckpt: dict, resolutions: list[int] | None = None) -> list[int]:
    """``resolutions``, else those the checkpoint was trained at, else its model's recipe; highest first."""
    res = resolutions or (ckpt.get("meta") or {}).get("resolutions") or model_info(ckpt["model_name"]).resolutions
    return sorted({int(r) for r in res}, reverse=True)


def search_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, dataset: str | None = None,
                      data_root: str | None = None, workers: int | None = None, seed: int = 0,
                      width_step: float = 0.05, widths: tuple[float, float] | None = None,
                      resolutions: list[int] | None = None, calib_images: int = 2000, val_images: int | None = None,
                      halving: float | None = None, calib_tol: float | None = None,
                      batch_size: int = 200, device: str = "cpu", latency: bool = False, latency_batch_size: int = 1,
                      threads: int | None = None, resize_then_crop: bool = False, split: str | None = None,
                      report_test: bool = True, progress: bool = True) -> SearchResult:
    """Calibrate BN and evaluate every width x resolution of ``checkpoint``; write the outputs to ``out``.

    Args:
        checkpoint: A trained mutualnet checkpoint.
        out: Output folder; a killed search started again with the same arguments continues there.
        dataset, data_root, workers: Override the checkpoint's dataset (see :func:`data_from_checkpoint`).
        seed: Seed of the calibration / validation subsets.
        width_step: Width grid step; ``widths``: ``(lo, hi)`` sub-range of the trained widths to search.
        resolutions: Input sides (default: the checkpoint's training resolutions).
        calib_images, val_images: Images per calibration, validation images (None: all).
        halving: Successive halving's first fraction of the validation images (see build_query_table).
        calib_tol: Stop each calibration once its statistics have converged (see build_query_table).
        batch_size: Calibration and evaluation batch size.
        device, threads: Where to run; CPU threads.
        latency, latency_batch_size: Also measure median forward latency.
        resize_then_crop: Evaluate each resolution with its own Resize + CenterCrop (default: resize the crop
            of the highest resolution on the device, as in the paper).
        split: Where the table's accuracies (what selection ranks by) are measured: ``holdout`` (the
            checkpoint's held-out training images, :mod:`mutualnet.data.splits`) or ``test``; None: ``holdout``
            when the checkpoint was trained with ``data.holdout``, else ``test``. Recorded in the table's meta.
        report_test: With ``split="holdout"``, also measure every configuration on the test set (``test_top1``,
            ``test_top5`` columns: reported, never selected on).
        progress: Show a progress bar.

    Under ``torchrun`` (``WORLD_SIZE`` > 1), process ``k`` of ``W`` computes the distinct networks ``k::W``
    into ``out/shard-k`` (resumable like a single search); after a barrier (gloo), rank 0 merges the shards and
    writes the same table and ``calibrated.pt`` a single process writes. Not with ``halving``.
    """
    owned = not (dist.is_available() and dist.is_initialized())  # a caller's process group is left to the caller
    # gloo: the barriers only carry a token, whatever ``device`` is; the first waits for the slowest shard
    dist_info = init_distributed("cpu", timeout=timedelta(days=7))
    try:
        if dist_info.enabled and halving is not None:
            raise MutualNetError("--halving cannot be combined with torchrun; run a halving search in one process")
        if dist_info.enabled and device.startswith("cuda") and ":" not in device:
            device = f"cuda:{dist_info.local_rank}"
        for name, v in (("calib-images", calib_images), ("eval-batch-size", batch_size),
                        ("batch-size", latency_batch_size)):
            if v <= 0:
                raise MutualNetError(f"--{name} must be positive")
        if val_images is not None and val_images <= 0:
            raise MutualNetError("--val-images must be positive")
        ckpt = load_checkpoint(checkpoint)
        model = model_from_checkpoint(ckpt).eval()
        rng = model.width_range
        if widths:
            if not (rng.contains(widths[0]) and rng.contains(widths[1]) and widths[0] <= widths[1]):
                raise MutualNetError(f"--widths {widths[0]:g},{widths[1]:g} is outside the trained range "
                                     f"[{rng.lo:g}, {rng.hi:g}]")
            rng = WidthRange(float(widths[0]), float(widths[1]))
        grid = rng.grid(width_step)
        resolutions = checkpoint_resolutions(ckpt, resolutions)
        data = data_from_checkpoint(ckpt, model, dataset=dataset, data_root=data_root, workers=workers)
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise MutualNetError(f"--out {out} exists and is not a folder")
        split = choose_split(split, data.info)
        source = "holdout" if split == "holdout" else "val"
        if resize_then_crop:
            val, calib = (lambda r: data.build(source, r)), (lambda r: data.build("train", r))
        else:
            val, calib = data.build(source, resolutions[0]), data.build("train", resolutions[0])
        ckpt_meta = dict(ckpt.get("meta") or {})
        meta = {"model": ckpt["model_name"], "model_args": ckpt["model_args"],
                "checkpoint": os.path.abspath(checkpoint), "mode": ckpt_meta.get("mode"), "dataset": data.info,
                "split": split, **artefact_fields(model, ckpt_meta)}
        t0 = time.perf_counter()

        def build(state_dir: Path, shard: tuple[int, int] | None) -> QueryTable:
            for folder in (state_dir, state_dir / STATS_DIR):  # a killed search's temp files are removed
                clean_stale_temps(folder)
            plan = SearchPlan.of(model, resolutions=resolutions, widths=grid, calib_images=calib_images,
                                 calib_tol=calib_tol, val_images=val_images, halving=halving, batch_size=batch_size,
                                 latency=latency, latency_batch_size=latency_batch_size,
                                 resize_then_crop=resize_then_crop, seed=seed, shard=shard)
            return build_query_table(model, val, calib, plan, device=device, threads=threads, state_dir=state_dir,
                                     meta=meta, num_workers=data.workers, progress=progress)

        shards = [out / f"shard-{k}" for k in range(dist_info.world_size)] if dist_info.enabled else []
        if dist_info.enabled:
            mine = shards[dist_info.rank]
            with folder_lock(mine, "search shard folder"):
                build(mine, (dist_info.rank, dist_info.world_size))
            dist.barrier()  # every shard finished (a failed rank makes torchrun stop the others)
            if not dist_info.is_main:
                dist.barrier()  # rank 0 has written the outputs
                table_path = out / "query_table.json"
                return SearchResult(QueryTable.load(table_path), table_path, out / "query_table.csv",
                                    out / "calibrated.pt", len(grid), len(resolutions), time.perf_counter() - t0)
        with folder_lock(out, "search folder"), contextlib.ExitStack() as held:  # one search per folder
            if not dist_info.enabled:  # shards of a torchrun search interrupted here: their work is taken, then removed
                shards = sorted(p for p in out.glob("shard-*") if p.is_dir() and p.name[len("shard-"):].isdigit())
                for shard in shards:  # refused while a torchrun search still computes into them
                    held.enter_context(folder_lock(shard, "search shard folder"))
            if shards:
                merge_search_states(shards if dist_info.enabled else [*shards, out], out)
            table = build(out, None)  # single process: the search; sharded: restores the merged rows
            if split == "holdout" and report_test:
                t_test = time.perf_counter()
                test = data.build("val", resolutions[0])
                if resize_then_crop:
                    test = {r: data.build("val", r) for r in resolutions}
                report_test_accuracy(model, table, test, batch_size=batch_size, device=device,
                                     num_workers=data.workers, progress=progress)
                # part of the search's time: the demo's "search N min" left out this pass (3.4 of 5.3 min there)
                table.meta.setdefault("timing_s", {})["test_eval_s"] = round(time.perf_counter() - t_test, 3)
            table_path = table.save(out / "query_table.json")
            model.to("cpu")
            ckpt_path = save_checkpoint(out / "calibrated.pt", model, meta=ckpt_meta | {"calibrated": True},
                                        query_table=table.to_dict())
            clear_search_state(out)
            for shard in shards:
                clear_search_state(shard)
                (shard / LOCK_NAME).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    shard.rmdir()
        if dist_info.enabled:
            dist.barrier()
        return SearchResult(table, Path(table_path), out / "query_table.csv", Path(ckpt_path), len(grid),
                            len(resolutions), time.perf_counter() - t0)

    finally:
        if owned:
            cleanup_distributed(dist_info)


def calibrate_checkpoint(checkpoint: str | os.PathLike, width: float, resolution: int, out: str | os.PathLike, *,
                         dataset: str | None = None, data_root: str | None = None, workers: int | None = None,
                         seed: int = 0, calib_images: int = 2000, crop_size: int | None = None, batch_size: int = 200,
                         device: str = "cpu", depth: int | None = None) -> CalibrationResult:
    """Add one (``width``, ``resolution``[, ``depth``])'s BN statistics to ``checkpoint`` and write it to ``out``
    (atomically).

    Any width in the trained range works, not only a query table's grid; everything else in the checkpoint
    is kept, so ``out`` may be ``checkpoint`` itself. The images are the checkpoint's training set at the
    evaluation crop (``crop_size``, default the highest training resolution), resized on the device.
    """
    if calib_images <= 0 or batch_size <= 0:
        raise MutualNetError("--calib-images and --batch-size must be positive")
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    model.width_range.check(width)  # before any data is read
    check_depth(model, depth)
    dev = resolve_device(device)
    data = data_from_checkpoint(ckpt, model, dataset=dataset, data_root=data_root, workers=workers)
    crop = crop_size or max([*(ckpt.get("meta") or {}).get("resolutions", []), resolution])
    res = calibrate(model, data.build("train", crop), width, resolution, num_images=calib_images,
                    batch_size=batch_size, device=dev, seed=seed, num_workers=data.workers, depth=depth)
    model.to("cpu")
    atomic_save(ckpt | {"model": checkpoint_dict(model, ckpt.get("meta"))["model"]}, out)
    return res


def evaluate_checkpoint(checkpoint: str | os.PathLike, configs: Sequence[tuple] | None = None, *,
                        dataset: str | None = None, data_root: str | None = None, workers: int | None = None,
                        seed: int = 0, recalibrate: bool = False, calib_images: int = 2000,
                        val_images: int | None = None, batch_size: int = 200, device: str = "cpu") -> dict:
    """What ``mutualnet eval`` does: top-1 / top-5 of configurations of any checkpoint, without a query table.

    Each configuration is evaluated on the validation split of the checkpoint's dataset (a ``val_images``
    subset drawn with ``seed``, as the search draws it) with the BatchNorm statistics it has: its calibrated
    ones, or, at the top width and full depth, the shared running ones. A configuration without statistics is
    an error unless ``recalibrate`` re-estimates them from ``calib_images`` training images first (the
    checkpoint file is not changed).

    Args:
        checkpoint: Any mutualnet checkpoint (``best.pt``, ``calibrated.pt``, a converted one).
        configs: ``(width, resolution)`` pairs, or ``(width, resolution, depth)`` for a model trained with
            elastic depth (depth: blocks each elastic stage runs); default: the top width at the highest
            recorded resolution, full depth.
        dataset, data_root, workers: Override the checkpoint's data
            (:func:`mutualnet.data.checkpoint.data_from_checkpoint`).

    Returns:
        ``{"checkpoint", "dataset", "results"}``; each result holds width, resolution, top1, top5, images,
        mflops and ``bn_statistics`` (where the statistics came from), and ``depth`` for a model with elastic
        depth (its full depth where none was asked for).
    """
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    if calib_images <= 0 or batch_size <= 0 or (val_images is not None and val_images <= 0):
        raise MutualNetError("--calib-images, --batch-size and --val-images must be positive")
    dev = resolve_device(device)
    top_res = max((ckpt.get("meta") or {}).get("resolutions") or [0])
    asked = list(configs or [(model.width_range[1], top_res)])
    configs = []
    for c in asked:  # everything is checked before any data is read
        if len(c) not in (2, 3):
            raise MutualNetError(f"a configuration is (width, resolution[, depth]), got {c!r}")
        w, r, d = c[0], c[1], c[2] if len(c) == 3 else None
        model.width_range.check(w)
        if r < 1:
            raise MutualNetError(f"resolution must be positive, got {r}")
        configs.append((w, r, check_depth(model, d)))
    if configs[0][1] == 0:
        raise MutualNetError(f"{checkpoint} records no resolutions; pass --config WIDTH,RESOLUTION")
    d_rng = depth_range_of(model)
    elastic = d_rng is not None and d_rng.elastic
    data = data_from_checkpoint(ckpt, model, dataset=dataset, data_root=data_root, workers=workers)
    crop = max([top_res, *(r for _, r, _ in configs)])  # evaluation crop, resized on the device (as in training)
    val = random_subset(data.build("val", crop), val_images, seed)
    model.to(dev)
    results = []
    for w, r, d in configs:
        if recalibrate:
            res = calibrate(model, data.build("train", crop), w, r, num_images=calib_images, batch_size=batch_size,
                            seed=seed, num_workers=data.workers, depth=d)
            source = f"re-estimated on {res.num_images} training images"
        elif is_calibrated(model, w, r, d):
            source = "calibrated (stored in the checkpoint)"
        elif model.width_range.is_top(w) and d is None:
            source = "shared running statistics (top width)"
        else:
            raise MutualNetError(f"{config_key(w, r, d)} has no calibrated BatchNorm statistics in {checkpoint}; "
                                 "add --calibrate to re-estimate them")
        out = evaluate(model, DataLoader(val, batch_size=batch_size, num_workers=data.workers), w, r, device=dev,
                       depth=d)
        results.append({"width": w, "resolution": r, **({"depth": d_rng.hi if d is None else d} if elastic else {}),
                        "top1": out["top1"], "top5": out["top5"], "images": out["count"],
                        "mflops": profile(model, w, r, depth=d).mflops, "bn_statistics": source})
    return {"checkpoint": str(checkpoint), "dataset": data.info, "results": results}


def describe_evaluation(result: dict) -> list[str]:
    """One line per configuration of :func:`evaluate_checkpoint`'s result (what ``mutualnet eval`` prints)."""
    return [f"{config_text(row)}: top-1 {row['top1']:.2f}%, top-5 {row['top5']:.2f}% on {row['images']} "
            f"{result['dataset']['name']} validation images ({row['mflops']:.2f} MFLOPs; BN: {row['bn_statistics']})"
            for row in result["results"]]
