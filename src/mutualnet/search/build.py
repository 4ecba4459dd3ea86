"""Build the query table: calibrate and evaluate every width x resolution, resumably.

For each resolution (highest first) and each width on the grid: re-estimate BN statistics
(:func:`mutualnet.calibrate.calibrate`), measure top-1/top-5 on the validation images, count MACs and
parameters, optionally time the forward pass. Test-time resolutions are made as in the paper: the
evaluation crop at the highest resolution, resized on the device (``resize_then_crop=True`` instead
builds the evaluation transform at each resolution).

Calibration and validation images are decoded once and reused for every configuration (the validation
set is cached in memory when it fits ``cache_bytes``, else streamed per configuration).

With ``state_dir``, each finished configuration is persisted at once (its BN statistics, then its row,
each written atomically), so a killed search started again with the same settings continues where it
stopped; :func:`clear_search_state` removes these files once the final outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..calibrate import calibrate, check_resolution, load_images
from ..checkpoint import atomic_save
from ..data.transforms import model_resize, resize_batch
from ..errors import MutualNetError
from ..io import read_json, read_torch_file
from ..layers import SlimmableBatchNorm2d, config_key, get_width, set_width
from ..profiling import measure_latency, profile, resolve_device
from .grid import width_grid
from .table import QueryTable, atomic_write_text

__all__ = ["build_query_table", "evaluate", "model_fingerprint", "clear_search_state", "STATE_FILE"]

STATE_FILE = "query_table.partial.json"
STATS_DIR = "partial_stats"

DataSpec = Dataset | Callable[[int], Dataset]


def model_fingerprint(model: nn.Module) -> str:
    """SHA-1 of the weights and running statistics (not calibrated statistics): which network a table is of."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        if ".calib_stats." in name or name.startswith("calib_stats."):
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple[Tensor, Tensor] | DataLoader, width: float, resolution: int, *,
             batch_size: int = 200, device: torch.device | str | None = None,
             resize: str | None = None) -> tuple[float, float, int]:
    """Top-1 and top-5 accuracy (%) at (``width``, ``resolution``); batches are resized on the device.

    ``data`` is ``(images, labels)`` tensors or a loader yielding such batches; ``resize`` is the resize mode
    (None: the one recorded on the model).
    """
    resize = model_resize(model, resize)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    previous, was_training = get_width(model), model.training
    set_width(model, width)
    model.eval()
    if isinstance(data, tuple):
        images, labels = data
        batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size))
    else:
        batches = data
    c1 = c5 = n = 0
    try:
        for x, y in batches:
            x = resize_batch(x.to(dev, non_blocking=True).float(), resolution, resize)
            y = torch.as_tensor(y).to(dev)
            logits = model(x)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hit = top == y[:, None]
            c1 += int(hit[:, 0].sum())
            c5 += int(hit.any(1).sum())
            n += len(y)
    finally:
        set_width(model, previous)
        model.train(was_training)
    if n == 0:
        raise MutualNetError("the validation set is empty")
    return 100.0 * c1 / n, 100.0 * c5 / n, n


def _bn_stats(model: nn.Module, key: str) -> dict[str, Tensor]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, SlimmableBatchNorm2d) and key in m.calibrated:
            mean, var = m.calibrated[key]
            out[f"{name}.mean"], out[f"{name}.var"] = mean.detach().cpu(), var.detach().cpu()
    return out


def _read_stats(path: Path) -> dict[str, Tensor]:
    """A partial search's saved statistics, through the guarded reader (a corrupt file is recomputed)."""
    try:
        stats = read_torch_file(path, "search statistics")
    except MutualNetError:
        return {}
    ok = isinstance(stats, dict) and all(isinstance(v, Tensor) and v.is_floating_point() and bool(v.isfinite().all())
                                         for v in stats.values())
    return stats if ok else {}


def _restore_bn_stats(model: nn.Module, key: str, stats: dict[str, Tensor]) -> bool:
    bns = [(name, m) for name, m in model.named_modules() if isinstance(m, SlimmableBatchNorm2d)]
    if any(f"{name}.mean" not in stats or f"{name}.var" not in stats for name, _ in bns):
        return False
    for name, m in bns:
        dev = m.weight.device
        m.calibrated[key] = (stats[f"{name}.mean"].to(dev), stats[f"{name}.var"].to(dev))
    return True


def clear_search_state(state_dir: str | Path) -> None:
    """Remove the partial-search files of ``state_dir`` (after the final outputs are safely written)."""
    state_dir = Path(state_dir)
    stats = state_dir / STATS_DIR
    if stats.is_dir():
        for f in stats.glob("*.pt"):
            f.unlink(missing_ok=True)
        try:
            stats.rmdir()
        except OSError:
            pass
    (state_dir / STATE_FILE).unlink(missing_ok=True)


class _State:
    """Finished rows and timings of a search, persisted after every configuration."""

    def __init__(self, state_dir: Path | None, signature: dict) -> None:
        self.dir, self.signature = state_dir, signature
        self.rows: list[dict] = []
        self.timing = {"calib_s": 0.0, "calib_images": 0, "eval_s": 0.0, "profile_s": 0.0, "latency_s": 0.0}
        if state_dir is None or not (state_dir / STATE_FILE).is_file():
            return
        try:
            saved = read_json(state_dir / STATE_FILE, "search state")
            QueryTable(rows=saved["rows"])  # the rows a finished search would write: finite, known types
            saved["timing"] = dict(saved["timing"])
        except (MutualNetError, KeyError, TypeError, AttributeError, ValueError):
            raise MutualNetError(f"{state_dir / STATE_FILE} is corrupt; delete it to start the search over") from None
        if saved.get("signature") != signature:
            diff = sorted(k for k in set(signature) | set(saved.get("signature", {}))
                          if signature.get(k) != saved.get("signature", {}).get(k))
            raise MutualNetError(f"{state_dir} holds an unfinished search with other settings ({', '.join(diff)}); "
                                 f"use another output folder or delete {state_dir / STATE_FILE}")
        self.rows, self.timing = saved["rows"], saved["timing"]

    def stats_path(self, key: str) -> Path:
        return self.dir / STATS_DIR / f"{key}.pt"

    def commit(self, row: dict, stats: dict[str, Tensor], key: str) -> None:
        self.rows.append(row)
        if self.dir is None:
            return
        atomic_save(stats, self.stats_path(key))  # statistics first: a persisted row always has its statistics
        atomic_write_text(self.dir / STATE_FILE, json.dumps(
            {"signature": self.signature, "rows": self.rows, "timing": self.timing}, indent=1))


def _resolve(spec: DataSpec, resolution: int) -> Dataset:
    return spec(resolution) if callable(spec) and not isinstance(spec, Dataset) else spec


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()
    return Subset(ds, idx)


def _val_source(ds: Dataset, n: int | None, seed: int, batch_size: int, num_workers: int, cache_bytes: int):
    ds = _subset(ds, n, seed)
    x0, _ = ds[0]
    if len(ds) * x0.numel() * 2 <= cache_bytes:
        return load_images(ds, None, batch_size=batch_size, num_workers=num_workers)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def build_query_table(
    model: nn.Module,
    val_data: DataSpec,
    calib_data: DataSpec,
    *,
    resolutions: Sequence[int],
    widths: Sequence[float] | None = None,
    width_step: float = 0.05,
    calib_images: int = 2000,
    val_images: int | None = None,
    batch_size: int = 200,
    calib_batch_size: int | None = None,
    device: str = "cpu",
    latency: bool = False,
    latency_batch_size: int = 1,
    threads: int | None = None,
    resize_then_crop: bool = False,
    state_dir: str | Path | None = None,
    meta: dict | None = None,
    num_workers: int = 0,
    seed: int = 0,
    cache_bytes: int = 2 * 2**30,
    progress: bool = True,
    resize: str | None = None,
) -> QueryTable:
    """Calibrate and evaluate every (width, resolution); the model keeps every configuration's BN statistics.

    Args:
        model: the trained slimmable model.
        val_data, calib_data: validation and calibration (training images, evaluation transform) datasets
            at the highest resolution, or callables ``resolution -> Dataset`` (needed for ``resize_then_crop``).
        resolutions: input sides to evaluate (any order; reported highest first).
        widths: explicit widths; default: ``width_grid(*model.width_range, width_step)``.
        calib_images, val_images: images for calibration (per configuration) and validation (None: all).
        batch_size, calib_batch_size: evaluation and calibration batch sizes.
        device: where calibration, evaluation and (with ``latency``) timing run.
        latency, latency_batch_size, threads: also measure median forward latency on ``device``.
        resize_then_crop: evaluate each resolution with its own Resize + CenterCrop instead of resizing the
            highest resolution's crop.
        state_dir: folder for the resumable partial state (see module docstring).
        meta: table metadata to record (model, checkpoint, dataset, ...).
        num_workers, seed: loader workers; seed of the calibration / validation subsets.
        cache_bytes: keep decoded validation images in memory up to this size (float16).
        progress: show a tqdm bar over configurations.
        resize: how lower resolutions are made (``"antialias"`` / ``"official"``) for calibration and
            evaluation; None: the mode recorded on the model (its checkpoint's). Recorded in the table's meta.
    """
    if not resolutions:
        raise MutualNetError("no resolutions to search")
    resolutions = sorted({check_resolution(model, r) for r in resolutions}, reverse=True)
    lo, hi = model.width_range
    widths = [float(w) for w in (widths if widths is not None else width_grid(lo, hi, width_step))]
    for w in widths:
        if not (lo - 1e-6 <= w <= hi + 1e-6):
            raise MutualNetError(f"width {w:g} is outside this model's trained range [{lo:g}, {hi:g}]")
    if resize_then_crop and not (callable(val_data) and callable(calib_data)
                                 and not isinstance(val_data, Dataset) and not isinstance(calib_data, Dataset)):
        raise MutualNetError("resize_then_crop needs val_data and calib_data as callables resolution -> Dataset")
    if calib_images <= 0:
        raise MutualNetError(f"number of calibration images must be positive, got {calib_images}")
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    calib_bs = calib_batch_size or batch_size
    resize = model_resize(model, resize)
    model.to(dev).eval()
    meta = dict(meta or {})
    signature = {"model": model_fingerprint(model), "widths": widths, "resolutions": resolutions,
                 "calib_images": calib_images, "calib_batch_size": calib_bs, "val_images": val_images,
                 "resize_then_crop": resize_then_crop, "resize": resize, "latency": latency, "seed": seed,
                 "latency_batch_size": latency_batch_size if latency else None,
                 "device": str(dev), "dataset": meta.get("dataset")}
    state = _State(Path(state_dir) if state_dir is not None else None, signature)
    table = QueryTable(meta=meta)
    for row in state.rows:
        key = config_key(row["width"], row["resolution"])
        stats_ok = state.dir is not None and state.stats_path(key).is_file() and _restore_bn_stats(
            model, key, _read_stats(state.stats_path(key)))
        if stats_ok:
            table.add(row)
    state.rows = list(table.rows)
    timed = {(row["macs"], row["params"], row["resolution"]): row["latency_ms"] for row in table.rows
             if row.get("latency_ms") is not None}
    todo = [(w, r) for r in resolutions for w in widths if table.find(w, r) is None]
    total = len(widths) * len(resolutions)
    start = time.perf_counter()
    bar = tqdm(total=total, initial=total - len(todo), desc="search", unit="cfg", disable=not progress,
               dynamic_ncols=True)
    calib = val = None
    loaded_for = None
    calib_used = state.timing.get("calib_images_per_config")  # what existed, not what was asked for
    try:
        for w, r in todo:
            src_res = r if resize_then_crop else resolutions[0]
            if loaded_for != src_res:  # decode once per source resolution (once in all, by default)
                calib = val = None
                calib, _ = load_images(_resolve(calib_data, src_res), calib_images, seed=seed,
                                       batch_size=calib_bs, num_workers=num_workers)
                val = _val_source(_resolve(val_data, src_res), val_images, seed, batch_size,
                                  num_workers, cache_bytes)
                calib_used = state.timing["calib_images_per_config"] = min(calib_images, len(calib))
                if isinstance(calib, Tensor) and dev.type == "cuda":
                    calib = calib.to(dev)
                loaded_for = src_res
            bar.set_postfix_str(f"w={w:g} r={r}")
            res = calibrate(model, calib, w, r, num_images=calib_images, batch_size=calib_bs, device=dev,
                            resize=resize)
            t0 = time.perf_counter()
            top1, top5, _ = evaluate(model, val, w, r, batch_size=batch_size, device=dev, resize=resize)
            t1 = time.perf_counter()
            prof = profile(model, w, r)
            t2 = time.perf_counter()
            lat, same_network = None, (prof.macs, prof.params, r)  # widths rounding to the same channels
            if latency:
                lat = timed.get(same_network)
                if lat is None:  # timed once per distinct network, so identical networks get one number
                    lat = timed[same_network] = measure_latency(model, w, r, device=str(dev),
                                                                batch_size=latency_batch_size,
                                                                threads=threads).median_ms
            t3 = time.perf_counter()
            row = table.add({"width": w, "resolution": r, "top1": top1, "top5": top5, "macs": prof.macs,
                             "params": prof.params, "latency_ms": lat})
            for k, v in (("calib_s", res.seconds), ("calib_images", res.num_images), ("eval_s", t1 - t0),
                         ("profile_s", t2 - t1), ("latency_s", t3 - t2)):
                state.timing[k] += v
            state.commit({k: row[k] for k in ("width", "resolution", "top1", "top5", "macs", "params",
                                              "latency_ms")}, _bn_stats(model, res.key), res.key)
            bar.update(1)
            bar.set_postfix_str(f"w={w:g} r={r} top1={top1:.1f}")
    finally:
        bar.close()
    t = state.timing
    search_s = t["calib_s"] + t["eval_s"] + t["profile_s"] + t["latency_s"]
    table.meta.update({
        "widths": widths, "resolutions": resolutions, "val_images": val_images,
        "resize_then_crop": resize_then_crop, "resize": resize, "device": str(dev),
        "calibration": {"images": calib_images if calib_used is None else calib_used, "batch_size": calib_bs,
                        "seconds": round(t["calib_s"], 3),
                        "images_per_s": round(t["calib_images"] / t["calib_s"], 1) if t["calib_s"] else None,
                        "share_of_search_time": round(t["calib_s"] / search_s, 3) if search_s else None},
        "timing_s": {k: round(v, 3) for k, v in t.items() if k.endswith("_s")} | {
            "this_run_wall": round(time.perf_counter() - start, 3)},
        "latency": ({"device": str(dev), "batch_size": latency_batch_size, "threads": torch.get_num_threads()}
                    if latency else None),
    })
    return table
