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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..calibrate import calibrate
from ..checkpoint import atomic_save
from ..data.datasets import cached_subset, image_count, load_images
from ..data.preprocess import model_preprocessing
from ..errors import MutualNetError
from ..evaluate import evaluate, hits
from ..io import atomic_write_text, read_json, read_torch_file
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
from .table import QueryTable, config_of

__all__ = ["SearchPlan", "build_query_table", "measure_config", "report_test_accuracy", "distinct_widths",
           "can_reach_frontier", "model_fingerprint", "clear_search_state", "merge_search_states", "STATE_FILE"]

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


@dataclass(frozen=True)
class SearchPlan:
    """What a search evaluates: the grid, the images each configuration sees, and how it is measured.

    Build one with :meth:`of`, which checks it against the model before any image is read. The plan is also the
    signature of a resumable search (with the model's fingerprint and where it runs): a partial search is only
    continued by the same plan.
    """

    resolutions: tuple[int, ...]  # input sides, highest first
    widths: tuple[float, ...]  # the width grid, in the model's trained range
    depths: tuple[int, ...] = ()  # deepest first (a model with elastic depth); (): a table without a depth column
    calib_images: int = 2000  # training images per calibration (at most)
    calib_batch_size: int = 200
    calib_tol: float | None = None  # stop a calibration once its statistics converge (calibrate_batches); None: never
    val_images: int | None = None  # validation images (a seeded subset; None: all)
    batch_size: int = 200  # evaluation batch size
    halving: float | None = None  # successive halving: the first fraction of the validation images; None: all
    z: float = 3.0  # with halving: a network stops when a cheaper one beats it by z standard deviations
    latency: bool = False  # also time each distinct network's forward pass
    latency_batch_size: int = 1
    resize_then_crop: bool = False  # each resolution's own Resize + CenterCrop instead of resizing the top crop
    seed: int = 0  # seed of the calibration / validation subsets
    shard: tuple[int, int] | None = None  # (index, count): this process's share of the distinct networks

    @classmethod
    def of(cls, model: nn.Module, *, resolutions: Sequence[int], widths: Sequence[float] | None = None,
           width_step: float = 0.05, depths: Sequence[int] | None = None, calib_images: int = 2000,
           calib_batch_size: int | None = None, calib_tol: float | None = None, val_images: int | None = None,
           batch_size: int = 200, halving: float | None = None, z: float = 3.0, latency: bool = False,
           latency_batch_size: int = 1,
           resize_then_crop: bool = False, seed: int = 0, shard: tuple[int, int] | None = None) -> SearchPlan:
        """The plan for ``model``, checked: ``widths`` default to ``model.width_range.grid(width_step)``,
        ``depths`` to every depth of its trained ``depth_range``; ``calib_batch_size`` to ``batch_size``."""
        if not resolutions:
            raise MutualNetError("no resolutions to search")
        resolutions = sorted({check_resolution(model, r) for r in resolutions}, reverse=True)
        rng = width_range_of(model)
        widths = [rng.check(w) for w in (widths if widths is not None else rng.grid(width_step))]
        d_rng = depth_range_of(model)
        if depths is None:
            depths = d_rng.grid() if d_rng is not None and d_rng.elastic else []
        depths = sorted({d_rng.check(d) if d_rng is not None else check_depth(model, d) for d in depths},
                        reverse=True)
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
        return cls(tuple(resolutions), tuple(widths), tuple(depths), calib_images, calib_batch_size or batch_size,
                   calib_tol, val_images, batch_size, halving, z, latency, latency_batch_size, resize_then_crop, seed,
                   None if shard is None else tuple(shard))

    @property
    def levels(self) -> list[int | None]:
        """The depths of the table's rows; ``[None]``: no depth column."""
        return list(self.depths) or [None]

    def signature(self, model: nn.Module, device: torch.device, dataset: object, resize: str) -> dict:
        """What a partial search must share with this one to be continued (as the state file records it)."""
        sig = {"model": model_fingerprint(model), "widths": list(self.widths), "resolutions": list(self.resolutions),
               "calib_images": self.calib_images, "calib_batch_size": self.calib_batch_size,
               "val_images": self.val_images, "resize_then_crop": self.resize_then_crop, "resize": resize,
               "latency": self.latency, "seed": self.seed,
               "latency_batch_size": self.latency_batch_size if self.latency else None,
               "device": str(device), "dataset": dataset}
        if self.halving is not None:
            sig["halving"] = self.halving
            if self.z != 3.0:
                sig["z"] = self.z
        if self.calib_tol is not None:
            sig["calib_tol"] = self.calib_tol
        if self.depths:
            sig["depths"] = list(self.depths)
        return sig


class _State:
    """Finished rows and timings of a search, persisted after every configuration, and what it has measured:
    the table so far and each configuration's per-image hits (successive halving extends them)."""

    def __init__(self, state_dir: Path | None, signature: dict, meta: dict) -> None:
        self.dir, self.signature = state_dir, signature
        self.rows: list[dict] = []
        self.timing = {"calib_s": 0.0, "calib_images": 0, "eval_s": 0.0, "profile_s": 0.0, "latency_s": 0.0}
        self.table = QueryTable(meta=meta)
        self.hits: dict[tuple[float, int, int | None], tuple[Tensor, Tensor]] = {}
        saved = None if state_dir is None else _read_state(state_dir, "delete it to start the search over")
        if saved is not None:
            if saved["signature"] != signature:
                diff = sorted(k for k in set(signature) | set(saved["signature"])
                              if signature.get(k) != saved["signature"].get(k))
                raise MutualNetError(f"{state_dir} holds an unfinished search with other settings "
                                     f"({', '.join(diff)}); use another output folder or delete "
                                     f"{state_dir / STATE_FILE}")
            self.rows, self.timing = saved["rows"], saved["timing"]
        self.timing.setdefault("val_images_evaluated", 0)

    def restore(self, model: nn.Module) -> None:
        """Put the saved rows whose statistics load back into the table and the model (the others are redone)."""
        for row in self.rows:
            path = self.stats_path(_file_key(row)) if self.dir is not None else None
            saved = _read_stats(path) if path is not None and path.is_file() else {}
            if _restore_bn_stats(model, _bn_key(model, *config_of(row)), saved):
                self.table.add(row)
                if "_hits1" in saved:
                    self.hits[config_of(row)] = (saved["_hits1"] > 0.5, saved["_hits5"] > 0.5)
        self.rows = list(self.table.rows)

    def stats_path(self, key: str) -> Path:
        return self.dir / STATS_DIR / f"{key}.pt"

    def commit(self, row: dict, stats: dict[str, Tensor]) -> None:
        self.table.add(row)
        self.rows = [x for x in self.rows if config_of(x) != config_of(row)]
        self.rows.append(row)
        if self.dir is None:
            return
        path = self.stats_path(_file_key(row))
        atomic_save(stats, path)  # statistics first: a persisted row always has its statistics
        atomic_write_text(self.dir / STATE_FILE, json.dumps(
            {"signature": self.signature, "rows": self.rows, "timing": self.timing}, indent=1))


def _bn_key(model: nn.Module, w: float, r: int, d: int | None) -> str:
    """The key BN layers store a configuration's statistics under."""
    return config_key(w, r, check_depth(model, d))


def _resolve(spec: DataSpec, resolution: int) -> Dataset:
    return spec(resolution) if callable(spec) and not isinstance(spec, Dataset) else spec


class _Images:
    """Calibration and validation images, decoded once per source resolution (once in all, by default)."""

    def __init__(self, plan: SearchPlan, val_data: DataSpec, calib_data: DataSpec, state: _State,
                 device: torch.device, num_workers: int, cache_bytes: int) -> None:
        self.plan, self.val_data, self.calib_data, self.state = plan, val_data, calib_data, state
        self.device, self.num_workers, self.cache_bytes = device, num_workers, cache_bytes
        self.source: int | None = None
        self.calib: Tensor | None = None
        self.val: tuple[Tensor, Tensor] | DataLoader | None = None

    def at(self, resolution: int) -> tuple[Tensor, tuple[Tensor, Tensor] | DataLoader]:
        p = self.plan
        src_res = resolution if p.resize_then_crop else p.resolutions[0]
        if self.source != src_res:
            self.calib = self.val = None
            self.calib, _ = load_images(_resolve(self.calib_data, src_res), p.calib_images, seed=p.seed,
                                        batch_size=p.calib_batch_size, num_workers=self.num_workers)
            self.val = cached_subset(_resolve(self.val_data, src_res), p.val_images, p.seed, p.batch_size,
                                  self.num_workers, self.cache_bytes, shuffle=p.halving is not None)
            self.state.timing["calib_images_per_config"] = min(p.calib_images, len(self.calib))  # what existed
            if isinstance(self.calib, Tensor) and self.device.type == "cuda":
                self.calib = self.calib.to(self.device)
            self.source = src_res
        return self.calib, self.val


def measure_config(model: nn.Module, plan: SearchPlan, config: tuple[float, int, int | None], images: _Images,
                   state: _State, *, device: torch.device, threads: int | None = None, upto: int | None = None) -> bool:
    """One configuration of the search: make sure ``config`` (width, resolution, depth) is calibrated and
    validated on the first ``upto`` validation images (None: all), and commit its row and statistics.

    A configuration seen for the first time is calibrated, profiled (and timed, with ``plan.latency``); one seen
    on fewer images (successive halving) is only validated on the images it has not seen. Returns whether the
    row is new.
    """
    w, r, d = config
    calib, val = images.at(r)
    n_all = image_count(val)
    upto = n_all if upto is None else min(upto, n_all)
    row, key, timing = state.table.find(w, r, d), _bn_key(model, w, r, d), state.timing
    if row is not None and row.get("val_images", n_all) >= upto:
        return False
    new = row is None
    if new:
        res = calibrate(model, calib, w, r, num_images=plan.calib_images, batch_size=plan.calib_batch_size,
                        device=device, depth=d, tol=plan.calib_tol)
        timing["calib_s"] += res.seconds
        timing["calib_images"] += res.num_images
        t1 = time.perf_counter()
        prof = profile(model, w, r, depth=d)
        t2 = time.perf_counter()
        lat = None  # timed once per distinct network: widths rounding to the same channels copy this row
        if plan.latency:
            lat = measure_latency(model, w, r, device=str(device), batch_size=plan.latency_batch_size,
                                  threads=threads, depth=d).median_ms
        timing["profile_s"] += t2 - t1
        timing["latency_s"] += time.perf_counter() - t2
        row = {"width": w, "resolution": r, "macs": prof.macs, "params": prof.params, "latency_ms": lat}
        if d is not None:
            row["depth"] = d
    have = state.hits.get(config, (torch.zeros(0, dtype=torch.bool),) * 2)
    t0 = time.perf_counter()
    more = hits(model, val, w, r, batch_size=plan.batch_size, start=len(have[0]), stop=upto, device=device, depth=d)
    timing["eval_s"] += time.perf_counter() - t0
    timing["val_images_evaluated"] += len(more[0])
    h1, h5 = torch.cat([have[0], more[0]]), torch.cat([have[1], more[1]])
    if len(h1) == 0:
        raise MutualNetError("the validation set is empty")
    state.hits[config] = (h1, h5)
    row = {k: row[k] for k in ("width", "resolution", "depth", "macs", "params", "latency_ms") if k in row} | {
        "top1": 100.0 * float(h1.float().mean()), "top5": 100.0 * float(h5.float().mean())}
    if plan.halving is not None:
        row["val_images"] = len(h1)
    # hits are stored as floats: the guarded reader accepts floating-point tensors only
    stats = _bn_stats(model, key) | ({"_hits1": h1.float(), "_hits5": h5.float()} if plan.halving is not None else {})
    state.commit(row, stats)
    return new


def _halve(plan: SearchPlan, configs: list[tuple], state: _State, n_all: int,
           measure: Callable[[tuple, int | None], bool]) -> None:
    """Successive halving: every configuration on the first ``plan.halving`` of the images, then those that can
    still reach the frontier (:func:`can_reach_frontier`) on twice as many, up to all; then any frontier row
    measured on part of the images is measured on all of them."""
    n, alive = max(1, math.ceil(plan.halving * n_all)), list(configs)
    while True:
        for c in alive:
            measure(c, n)
        keep = can_reach_frontier({c: state.hits[c][0] for c in configs},
                                  {c: state.table.find(*c)["macs"] for c in configs}, plan.z)
        alive = [c for c in alive if c in keep]
        if n >= n_all:
            break
        n = min(2 * n, n_all)
    # a row measured on part of the images never stands on the final frontier
    while short := [config_of(r) for r in state.table.rows if r["pareto"] and r.get("val_images", n_all) < n_all]:
        for c in short:
            measure(c, None)


def build_query_table(model: nn.Module, val_data: DataSpec, calib_data: DataSpec, plan: SearchPlan | None = None, *,
                      device: str = "cpu", threads: int | None = None, state_dir: str | Path | None = None,
                      meta: dict | None = None, num_workers: int = 0, cache_bytes: int = 2 * 2**30,
                      progress: bool = True, **what: Any) -> QueryTable:
    """Calibrate and evaluate every (width, resolution[, depth]) of ``plan``; the model keeps every configuration's
    BN statistics.

    Widths that are the same network (:func:`distinct_widths`) are calibrated and evaluated once
    (:func:`measure_config`); their rows and statistics are copies. With ``plan.halving``, every network is first
    validated on that fraction of the validation images (a random sample), then only those that can still reach
    the frontier (:func:`can_reach_frontier`) on twice as many, and so on up to all images; a row's
    ``val_images`` says how many images its accuracy is from, and every row on the final frontier has seen them
    all. With ``plan.shard = (index, count)``, only the distinct networks ``index::count`` (and the widths that
    copy them) are computed; the ``state_dir`` states of the ``count`` processes together hold the whole table
    (:func:`mutualnet.search.run.search_checkpoint`).

    Args:
        model: the trained slimmable model.
        val_data, calib_data: validation and calibration (training images, evaluation transform) datasets
            at the highest resolution, or callables ``resolution -> Dataset`` (needed for ``resize_then_crop``).
        plan: what to evaluate (:class:`SearchPlan`); or its fields as keywords (``what``: ``resolutions=``,
            ``widths=`` or ``width_step=``, ``calib_images=``, ``halving=``, ..., see :meth:`SearchPlan.of`).
        device, threads: where calibration, evaluation and (with ``plan.latency``) timing run; CPU threads.
        state_dir: folder for the resumable partial state (see module docstring).
        meta: table metadata to record (model, checkpoint, dataset, ...).
        num_workers: loader workers.
        cache_bytes: keep decoded validation images in memory up to this size (float16).
        progress: show a tqdm bar over configurations.

    Lower resolutions are made as the model's preprocessing record says (its resize mode), in calibration and
    evaluation alike; the mode is recorded in the table's meta.
    """
    if plan is None:
        plan = SearchPlan.of(model, **what)
    elif what:
        raise MutualNetError(f"give a plan or its fields, not both ({', '.join(sorted(what))})")
    p = plan
    if p.resize_then_crop and not (callable(val_data) and callable(calib_data)
                                   and not isinstance(val_data, Dataset) and not isinstance(calib_data, Dataset)):
        raise MutualNetError("resize_then_crop needs val_data and calib_data as callables resolution -> Dataset")
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    resize = model_preprocessing(model).resize  # how calibration and evaluation make lower resolutions
    model.to(dev).eval()
    meta = dict(meta or {})
    state = _State(Path(state_dir) if state_dir is not None else None,
                   p.signature(model, dev, meta.get("dataset"), resize), meta)
    state.restore(model)
    table = state.table

    same = distinct_widths(model, p.widths)
    distinct = [(w, r, d) for r in p.resolutions for d in p.levels for w in p.widths if same[w] == w]
    mine = set(distinct if p.shard is None else distinct[p.shard[0]::p.shard[1]])  # round-robin: balanced
    num_distinct = len(distinct)
    distinct = [c for c in distinct if c in mine]
    total = sum(1 for r in p.resolutions for d in p.levels for w in p.widths if (same[w], r, d) in mine)
    start = time.perf_counter()
    bar = tqdm(total=total, initial=len(table), desc="search", unit="cfg", disable=not progress, dynamic_ncols=True)
    images = _Images(p, val_data, calib_data, state, dev, num_workers, cache_bytes)

    def measure(c: tuple[float, int, int | None], upto: int | None) -> bool:
        bar.set_postfix_str(f"w={c[0]:g} r={c[1]}" + ("" if c[2] is None else f" d={c[2]}"))
        new = measure_config(model, p, c, images, state, device=dev, threads=threads, upto=upto)
        bar.update(int(new))
        return new

    try:
        if p.halving is None:
            for c in distinct:
                measure(c, None)
        else:
            _halve(p, distinct, state, image_count(images.at(p.resolutions[0])[1]), measure)
        for w, r, d in ((w, r, d) for r in p.resolutions for d in p.levels for w in p.widths
                        if same[w] != w and (same[w], r, d) in mine and table.find(w, r, d) is None):
            src = table.find(same[w], r, d)
            key, src_key = _bn_key(model, w, r, d), _bn_key(model, same[w], r, d)
            for m in model.modules():
                if isinstance(m, SlimmableBatchNorm2d) and src_key in m.calibrated:
                    m.calibrated[key] = m.calibrated[src_key]
            state.commit({k: src.get(k) for k in (*_ROW_FIELDS, "depth", "val_images") if k in src} | {"width": w},
                         _bn_stats(model, key))
            bar.update(1)
    finally:
        bar.close()
    t = state.timing
    search_s = t["calib_s"] + t["eval_s"] + t["profile_s"] + t["latency_s"]
    table.meta.update({
        "widths": list(p.widths), "resolutions": list(p.resolutions), "val_images": p.val_images,
        **({"depths": list(p.depths)} if p.depths else {}),
        "resize_then_crop": p.resize_then_crop, "resize": resize, "device": str(dev),
        "distinct_networks": num_distinct,
        "calibration": {"images": int(t.get("calib_images_per_config", p.calib_images)),
                        "batch_size": p.calib_batch_size,
                        **({"tol": p.calib_tol, "images_used": t["calib_images"]} if p.calib_tol is not None else {}),
                        "seconds": round(t["calib_s"], 3),
                        "images_per_s": round(t["calib_images"] / t["calib_s"], 1) if t["calib_s"] else None,
                        "share_of_search_time": round(t["calib_s"] / search_s, 3) if search_s else None},
        "validation": {"images_evaluated": t["val_images_evaluated"], "halving": p.halving},
        "timing_s": {k: round(v, 3) for k, v in t.items() if k.endswith("_s")} | {
            "this_run_wall": round(time.perf_counter() - start, 3)},
        "latency": ({"device": str(dev), "batch_size": p.latency_batch_size, "threads": torch.get_num_threads()}
                    if p.latency else None),
    })
    return table


def report_test_accuracy(model, table: QueryTable, test, *, batch_size: int = 200, device: str = "cpu",
                         num_workers: int = 0, progress: bool = True) -> None:
    """Add ``test_top1`` / ``test_top5`` to every row: the test-set accuracy of a table measured on held-out images.

    The model must hold each row's calibrated BN statistics (as :func:`build_query_table` leaves it). Widths that
    are the same network are evaluated once. ``test``: the test set at the evaluation crop, or a dict
    resolution -> dataset (``resize_then_crop``).
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    same = distinct_widths(model, sorted({r["width"] for r in table.rows}))
    loaded: tuple = (None, None)  # (dataset, its decoded images): one resolution's test set at a time
    done: dict[tuple, tuple[float, float]] = {}
    for row in tqdm(table.rows, desc="test set", unit="cfg", disable=not progress, dynamic_ncols=True):
        key = (same.get(row["width"], row["width"]), row["resolution"], row.get("depth"))  # depth: its own network
        if key not in done:
            ds = test[row["resolution"]] if isinstance(test, dict) else test
            if loaded[0] is not ds:
                loaded = (ds, cached_subset(ds, None, 0, batch_size, num_workers))
            res = evaluate(model, loaded[1], row["width"], row["resolution"], dev, batch_size=batch_size,
                           depth=row.get("depth"))
            done[key] = (res["top1"], res["top5"])
        row["test_top1"], row["test_top5"] = done[key]


_ROW_FIELDS = ("width", "resolution", "top1", "top5", "macs", "params", "latency_ms")
