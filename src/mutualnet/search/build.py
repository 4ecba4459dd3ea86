"""Build the query table: calibrate and evaluate every width x resolution (x depth), resumably.

For each resolution (highest first), each depth of a model with elastic depth (deepest first) and each width
on the grid: re-estimate BN statistics
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
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..calibrate import calibrate, load_images
from ..checkpoint import atomic_save
from ..data.datasets import random_subset
from ..data.preprocess import model_preprocessing
from ..errors import MutualNetError
from ..evaluate import hits
from ..io import read_json, read_torch_file
from ..layers import (
    SlimmableBatchNorm2d,
    channel_config,
    check_depth,
    check_resolution,
    config_key,
    depth_range_of,
    width_range_of,
)
from ..profiling import measure_latency, profile, resolve_device
from .table import QueryTable, atomic_write_text, config_of

__all__ = ["build_query_table", "distinct_widths", "can_reach_frontier", "model_fingerprint",
           "clear_search_state", "merge_search_states", "STATE_FILE"]

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


def _file_key(row: dict) -> str:
    """The name a row's statistics are saved under in a partial search: its configuration, depth included as
    the table writes it (no model needed to read it back)."""
    return config_key(row["width"], row["resolution"], row.get("depth"))


def _batches(data: tuple[Tensor, Tensor] | DataLoader, batch_size: int, start: int = 0, stop: int | None = None):
    """Batches of images ``start:stop`` of in-memory ``(images, labels)`` or of a loader's dataset."""
    if isinstance(data, tuple):
        images, labels = data
        stop = len(images) if stop is None else stop
        return ((images[i:min(i + batch_size, stop)], labels[i:min(i + batch_size, stop)])
                for i in range(start, stop, batch_size))
    if start == 0 and stop is None:
        return data
    stop = len(data.dataset) if stop is None else stop
    return DataLoader(Subset(data.dataset, range(start, stop)), batch_size=batch_size, shuffle=False,
                      num_workers=data.num_workers)


def distinct_widths(model: nn.Module, widths: Sequence[float]) -> dict[float, float]:
    """Each width mapped to the first width of ``widths`` that is the same network (same channels everywhere).

    Channel rounding makes neighbouring widths identical networks: the demo's 11 widths are 5 networks.
    Their rows (accuracy, MACs, latency) and calibrated statistics are equal, so a search computes one.
    """
    first: dict[tuple, float] = {}
    return {float(w): first.setdefault(channel_config(model, w), float(w)) for w in widths}


def can_reach_frontier(hits: dict, macs: dict, z: float = 3.0) -> set:
    """Configurations not significantly beaten by a cheaper-or-equal one on the images both have seen.

    ``hits[c]`` is the top-1 hit vector of configuration ``c`` on the first ``len(hits[c])`` validation images
    (in a random order), ``macs[c]`` its cost. ``c`` is dropped when some ``b`` with ``macs[b] <= macs[c]``
    wins on more of their common images than it loses, by more than ``z`` standard deviations of the paired
    (McNemar) sign test: ``wins - losses > z * sqrt(wins + losses)``. Such a ``c`` is off the frontier unless
    the rest of the images reverse a gap of ``z`` sigmas.
    """
    keep = set()
    for c, hc in hits.items():
        beaten = False
        for b, hb in hits.items():
            if b == c or macs[b] > macs[c]:
                continue
            n = min(len(hb), len(hc))
            if n == 0:
                continue
            wins = int((hb[:n] & ~hc[:n]).sum())
            losses = int((hc[:n] & ~hb[:n]).sum())
            if wins - losses > z * (wins + losses) ** 0.5:
                beaten = True
                break
        if not beaten:
            keep.add(c)
    return keep


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


def _read_state(state_dir: Path, fix: str) -> dict | None:
    """The persisted state of a search in ``state_dir`` (None if there is none), checked before use: its rows
    are what a finished search would write (finite, known types); a damaged file is one error ending in ``fix``."""
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        saved = read_json(path, "search state")
        QueryTable(rows=saved["rows"])
        saved["timing"], saved["signature"] = dict(saved["timing"]), dict(saved["signature"])
    except (MutualNetError, KeyError, TypeError, AttributeError, ValueError):
        raise MutualNetError(f"{path} is corrupt; {fix}") from None
    return saved


def merge_search_states(shard_dirs: Sequence[str | Path], state_dir: str | Path) -> int:
    """Gather the partial states of sharded searches into ``state_dir``'s; returns the number of rows.

    The merged state is what one process would have left after computing all of them (rows, statistics,
    summed timings), so :func:`build_query_table` with ``state_dir`` then only restores them and writes the
    same table a single process writes. Statistics are written before the state file that names them, so a
    merge killed at any moment can simply be run again.
    """
    state_dir = Path(state_dir)
    rows: dict[tuple, dict] = {}
    timing: dict[str, float] = {}
    signature = None
    for d in map(Path, shard_dirs):
        saved = _read_state(d, f"delete {d} to compute that shard again")
        if saved is None:
            continue
        shard_timing, shard_signature = saved["timing"], saved["signature"]
        if signature is not None and shard_signature != signature:
            raise MutualNetError(f"{d} holds a shard of a search with other settings; delete it")
        signature = shard_signature
        for k, v in shard_timing.items():  # work done: summed; images per configuration: the same in every shard
            timing[k] = v if k == "calib_images_per_config" else timing.get(k, 0) + v
        for row in saved["rows"]:
            key = _file_key(row)
            stats = _read_stats(d / STATS_DIR / f"{key}.pt")
            if not stats:
                continue  # never happens for a committed row; a damaged file is recomputed by a plain search
            atomic_save(stats, state_dir / STATS_DIR / f"{key}.pt")
            rows[config_of(row)] = row
    if signature is None:
        return 0
    atomic_write_text(state_dir / STATE_FILE, json.dumps(
        {"signature": signature, "rows": list(rows.values()), "timing": timing}, indent=1))
    return len(rows)


class _State:
    """Finished rows and timings of a search, persisted after every configuration."""

    def __init__(self, state_dir: Path | None, signature: dict) -> None:
        self.dir, self.signature = state_dir, signature
        self.rows: list[dict] = []
        self.timing = {"calib_s": 0.0, "calib_images": 0, "eval_s": 0.0, "profile_s": 0.0, "latency_s": 0.0}
        saved = None if state_dir is None else _read_state(state_dir, "delete it to start the search over")
        if saved is None:
            return
        if saved["signature"] != signature:
            diff = sorted(k for k in set(signature) | set(saved["signature"])
                          if signature.get(k) != saved["signature"].get(k))
            raise MutualNetError(f"{state_dir} holds an unfinished search with other settings ({', '.join(diff)}); "
                                 f"use another output folder or delete {state_dir / STATE_FILE}")
        self.rows, self.timing = saved["rows"], saved["timing"]

    def stats_path(self, key: str) -> Path:
        return self.dir / STATS_DIR / f"{key}.pt"

    def commit(self, row: dict, stats: dict[str, Tensor]) -> None:
        self.rows.append(row)
        if self.dir is None:
            return
        # statistics first: a persisted row always has its statistics
        atomic_save(stats, self.stats_path(_file_key(row)))
        atomic_write_text(self.dir / STATE_FILE, json.dumps(
            {"signature": self.signature, "rows": self.rows, "timing": self.timing}, indent=1))


def _resolve(spec: DataSpec, resolution: int) -> Dataset:
    return spec(resolution) if callable(spec) and not isinstance(spec, Dataset) else spec


def val_source(ds: Dataset, n: int | None, seed: int, batch_size: int, num_workers: int,
               cache_bytes: int = 2 * 2**30, shuffle: bool = False) -> tuple[Tensor, Tensor] | DataLoader:
    """``n`` images of ``ds`` (a seeded subset; None: all) decoded into memory when they fit ``cache_bytes``
    (float16), else a loader over them; ``shuffle``: in a seeded random order."""
    ds = random_subset(ds, n, seed)
    if shuffle:  # a random order, so that every prefix is a random sample (class-sorted folders are common)
        ds = Subset(ds, torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed + 1)).tolist())
    x0, _ = ds[0]
    if len(ds) * x0.numel() * 2 <= cache_bytes:
        return load_images(ds, None, batch_size=batch_size, num_workers=num_workers)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def _num_images(val: tuple[Tensor, Tensor] | DataLoader) -> int:
    return len(val[0]) if isinstance(val, tuple) else len(val.dataset)


def build_query_table(
    model: nn.Module,
    val_data: DataSpec,
    calib_data: DataSpec,
    *,
    resolutions: Sequence[int],
    widths: Sequence[float] | None = None,
    width_step: float = 0.05,
    calib_images: int = 2000,
    calib_tol: float | None = None,
    val_images: int | None = None,
    halving: float | None = None,
    z: float = 3.0,
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
    shard: tuple[int, int] | None = None,
    depths: Sequence[int] | None = None,
) -> QueryTable:
    """Calibrate and evaluate every (width, resolution[, depth]); the model keeps every configuration's BN statistics.

    Widths that are the same network (:func:`distinct_widths`) are calibrated and evaluated once; their rows
    and statistics are copies. With ``halving``, every network is first validated on that fraction of the
    validation images (a random sample), then only those that can still reach the frontier
    (:func:`can_reach_frontier`) on twice as many, and so on up to all images; a row's ``val_images`` says
    how many images its accuracy is from, and every row on the final frontier has seen them all.

    Args:
        model: the trained slimmable model.
        val_data, calib_data: validation and calibration (training images, evaluation transform) datasets
            at the highest resolution, or callables ``resolution -> Dataset`` (needed for ``resize_then_crop``).
        resolutions: input sides to evaluate (any order; reported highest first).
        widths: explicit widths; default: ``width_grid(*model.width_range, width_step)``.
        calib_images, val_images: images for calibration (per configuration) and validation (None: all).
        calib_tol: stop a network's calibration before ``calib_images`` once its statistics have converged
            (:func:`mutualnet.calibrate.calibrate_batches`); None: always ``calib_images``. Measured on the demo's
            model, 0.03 (600-800 images) lowered top-1 by 0.2-2.2 points and changed the frontier.
        halving: first fraction of the validation images (in (0, 1]) for successive halving; None: all images
            for every configuration.
        z: with ``halving``, a network stops when a cheaper one beats it by ``z`` standard deviations
            (:func:`can_reach_frontier`).
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
        shard: ``(index, count)``: compute only the distinct networks ``index::count`` (and the widths that
            copy them), for one of ``count`` processes; their ``state_dir`` states together hold the whole
            table (see :func:`mutualnet.search.run.search_checkpoint`). Not with ``halving``, whose
            frontier decisions need every network's hits.
        depths: depths to evaluate for a model with elastic depth (default: every depth of its trained
            ``depth_range``; rows then have a ``depth`` column); a model trained without it has no depth column.
    """
    if not resolutions:
        raise MutualNetError("no resolutions to search")
    resolutions = sorted({check_resolution(model, r) for r in resolutions}, reverse=True)
    rng = width_range_of(model)
    widths = [rng.check(w) for w in (widths if widths is not None else rng.grid(width_step))]
    d_rng = depth_range_of(model)
    if depths is None:
        depths = d_rng.grid() if d_rng is not None and d_rng.elastic else []
    depths = sorted({d_rng.check(d) if d_rng is not None else check_depth(model, d) for d in depths}, reverse=True)
    levels: list[int | None] = list(depths) or [None]  # None: a table without a depth column

    def bn_key(w: float, r: int, d: int | None) -> str:  # the key BN layers store the statistics under
        return config_key(w, r, check_depth(model, d))
    if resize_then_crop and not (callable(val_data) and callable(calib_data)
                                 and not isinstance(val_data, Dataset) and not isinstance(calib_data, Dataset)):
        raise MutualNetError("resize_then_crop needs val_data and calib_data as callables resolution -> Dataset")
    if calib_images <= 0:
        raise MutualNetError(f"number of calibration images must be positive, got {calib_images}")
    if halving is not None and not 0 < halving <= 1:
        raise MutualNetError(f"halving must be a fraction in (0, 1], got {halving:g}")
    if not (isinstance(z, (int, float)) and 0 < z < math.inf):
        raise MutualNetError(f"z must be a positive number of standard deviations, got {z}")
    if calib_tol is not None and not (isinstance(calib_tol, (int, float)) and 0 < calib_tol < math.inf):
        raise MutualNetError(f"calibration tolerance must be a positive number, got {calib_tol}")
    if shard is not None and halving is not None:
        raise MutualNetError("successive halving cannot be sharded across processes; run it in one process")
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    calib_bs = calib_batch_size or batch_size
    resize = model_preprocessing(model).resize  # how calibration and evaluation make lower resolutions
    model.to(dev).eval()
    meta = dict(meta or {})
    signature = {"model": model_fingerprint(model), "widths": widths, "resolutions": resolutions,
                 "calib_images": calib_images, "calib_batch_size": calib_bs, "val_images": val_images,
                 "resize_then_crop": resize_then_crop, "resize": resize, "latency": latency, "seed": seed,
                 "latency_batch_size": latency_batch_size if latency else None,
                 "device": str(dev), "dataset": meta.get("dataset")}
    if halving is not None:
        signature["halving"] = halving
        if z != 3.0:
            signature["z"] = z
    if calib_tol is not None:
        signature["calib_tol"] = calib_tol
    if depths:
        signature["depths"] = depths
    state = _State(Path(state_dir) if state_dir is not None else None, signature)
    state.timing.setdefault("val_images_evaluated", 0)
    table = QueryTable(meta=meta)
    seen: dict[tuple[float, int, int | None], tuple[Tensor, Tensor]] = {}  # per-image hits of each configuration
    for row in state.rows:
        path = state.stats_path(_file_key(row)) if state.dir is not None else None
        saved = _read_stats(path) if path is not None and path.is_file() else {}
        if _restore_bn_stats(model, bn_key(*config_of(row)), saved):
            table.add(row)
            if "_hits1" in saved:
                seen[config_of(row)] = (saved["_hits1"] > 0.5, saved["_hits5"] > 0.5)
    state.rows = list(table.rows)

    same = distinct_widths(model, widths)
    distinct = [(w, r, d) for r in resolutions for d in levels for w in widths if same[w] == w]
    mine = set(distinct if shard is None else distinct[shard[0]::shard[1]])  # round-robin: balanced per resolution
    num_distinct = len(distinct)
    distinct = [c for c in distinct if c in mine]
    total = sum(1 for r in resolutions for d in levels for w in widths if (same[w], r, d) in mine)
    start = time.perf_counter()
    bar = tqdm(total=total, initial=len(table), desc="search", unit="cfg", disable=not progress, dynamic_ncols=True)
    data: dict = {"for": None}

    def load(r: int):
        src_res = r if resize_then_crop else resolutions[0]
        if data["for"] != src_res:  # decode once per source resolution (once in all, by default)
            data.clear()
            data["calib"], _ = load_images(_resolve(calib_data, src_res), calib_images, seed=seed,
                                           batch_size=calib_bs, num_workers=num_workers)
            data["val"] = val_source(_resolve(val_data, src_res), val_images, seed, batch_size, num_workers,
                                      cache_bytes, shuffle=halving is not None)
            state.timing["calib_images_per_config"] = min(calib_images, len(data["calib"]))  # what existed
            if isinstance(data["calib"], Tensor) and dev.type == "cuda":
                data["calib"] = data["calib"].to(dev)
            data["for"] = src_res
        return data["calib"], data["val"]

    def run(w: float, r: int, d: int | None, upto: int | None) -> None:
        """Make sure (w, r, d) is calibrated and validated on the first ``upto`` images (None: all)."""
        calib, val = load(r)
        n_all = _num_images(val)
        upto = n_all if upto is None else min(upto, n_all)
        row, key = table.find(w, r, d), bn_key(w, r, d)
        if row is not None and row.get("val_images", n_all) >= upto:
            return
        bar.set_postfix_str(f"w={w:g} r={r}" + ("" if d is None else f" d={d}"))
        if row is None:
            res = calibrate(model, calib, w, r, num_images=calib_images, batch_size=calib_bs, device=dev,
                            depth=d, tol=calib_tol)
            state.timing["calib_s"] += res.seconds
            state.timing["calib_images"] += res.num_images
            t1 = time.perf_counter()
            prof = profile(model, w, r, depth=d)
            t2 = time.perf_counter()
            lat = None  # timed once per distinct network: widths rounding to the same channels copy this row
            if latency:
                lat = measure_latency(model, w, r, device=str(dev), batch_size=latency_batch_size,
                                      threads=threads, depth=d).median_ms
            state.timing["profile_s"] += t2 - t1
            state.timing["latency_s"] += time.perf_counter() - t2
            row = {"width": w, "resolution": r, "macs": prof.macs, "params": prof.params, "latency_ms": lat}
            if d is not None:
                row["depth"] = d
        have = seen.get((w, r, d), (torch.zeros(0, dtype=torch.bool),) * 2)
        t0 = time.perf_counter()
        more = hits(model, _batches(val, batch_size, len(have[0]), upto), w, r, device=dev, depth=d)
        state.timing["eval_s"] += time.perf_counter() - t0
        state.timing["val_images_evaluated"] += len(more[0])
        h1, h5 = torch.cat([have[0], more[0]]), torch.cat([have[1], more[1]])
        if len(h1) == 0:
            raise MutualNetError("the validation set is empty")
        seen[(w, r, d)] = (h1, h5)
        row = {k: row[k] for k in ("width", "resolution", "depth", "macs", "params", "latency_ms") if k in row} | {
            "top1": 100.0 * float(h1.float().mean()), "top5": 100.0 * float(h5.float().mean())}
        if halving is not None:
            row["val_images"] = len(h1)
        new = table.find(w, r, d) is None
        table.add(row)
        # hits are stored as floats: the guarded reader accepts floating-point tensors only
        stats = _bn_stats(model, key) | ({"_hits1": h1.float(), "_hits5": h5.float()} if halving is not None else {})
        state.rows = [x for x in state.rows if config_of(x) != (w, r, d)]
        state.commit(row, stats)
        bar.update(int(new))

    try:
        if halving is None:
            for w, r, d in distinct:
                run(w, r, d, None)
        else:
            n_all = _num_images(load(resolutions[0])[1])
            n, alive = max(1, math.ceil(halving * n_all)), list(distinct)
            while True:
                for w, r, d in alive:
                    run(w, r, d, n)
                top1_hits = {c: seen[c][0] for c in distinct}
                macs = {c: table.find(*c)["macs"] for c in distinct}
                keep = can_reach_frontier(top1_hits, macs, z)
                alive = [c for c in alive if c in keep]
                if n >= n_all:
                    break
                n = min(2 * n, n_all)
            # a row measured on part of the images never stands on the final frontier
            while short := [config_of(r) for r in table.rows if r["pareto"] and r.get("val_images", n_all) < n_all]:
                for w, r, d in short:
                    run(w, r, d, None)
        for w, r, d in ((w, r, d) for r in resolutions for d in levels for w in widths
                        if same[w] != w and (same[w], r, d) in mine and table.find(w, r, d) is None):
            src = table.find(same[w], r, d)
            key, src_key = bn_key(w, r, d), bn_key(same[w], r, d)
            for m in model.modules():
                if isinstance(m, SlimmableBatchNorm2d) and src_key in m.calibrated:
                    m.calibrated[key] = m.calibrated[src_key]
            row = {k: src.get(k) for k in (*_ROW_FIELDS, "depth", "val_images") if k in src} | {"width": w}
            table.add(row)
            state.commit(row, _bn_stats(model, key))
            bar.update(1)
    finally:
        bar.close()
    t = state.timing
    search_s = t["calib_s"] + t["eval_s"] + t["profile_s"] + t["latency_s"]
    table.meta.update({
        "widths": widths, "resolutions": resolutions, "val_images": val_images,
        **({"depths": depths} if depths else {}),
        "resize_then_crop": resize_then_crop, "resize": resize, "device": str(dev),
        "distinct_networks": num_distinct,
        "calibration": {"images": int(t.get("calib_images_per_config", calib_images)), "batch_size": calib_bs,
                        **({"tol": calib_tol, "images_used": t["calib_images"]} if calib_tol is not None else {}),
                        "seconds": round(t["calib_s"], 3),
                        "images_per_s": round(t["calib_images"] / t["calib_s"], 1) if t["calib_s"] else None,
                        "share_of_search_time": round(t["calib_s"] / search_s, 3) if search_s else None},
        "validation": {"images_evaluated": t["val_images_evaluated"], "halving": halving},
        "timing_s": {k: round(v, 3) for k, v in t.items() if k.endswith("_s")} | {
            "this_run_wall": round(time.perf_counter() - start, 3)},
        "latency": ({"device": str(dev), "batch_size": latency_batch_size, "threads": torch.get_num_threads()}
                    if latency else None),
    })
    return table


_ROW_FIELDS = ("width", "resolution", "top1", "top5", "macs", "params", "latency_ms")
