"""The paper's comparison at small scale: MutualNet vs US-Net vs US-Net+ vs independent networks.

Every arm uses the demo's recipe (same data, epochs, optimizer and seed) and differs only in what the
paper varies:

* **MutualNet** — the recipe's width range (demo: [0.5, 1.0]) x resolutions {28, 24, 20, 16}, mutual learning.
* **US-Net** — widths only, every sub-network at the highest resolution (sandwich rule + inplace
  distillation), with the width lower bound that reaches MutualNet's minimum FLOPs (or, where channel
  rounding cannot go that low, the narrowest width it can), evaluated at the highest resolution: the
  paper's Fig. 1 US-Net ([0.05, 1.0] x 224 px for MobileNet v1).
* **US-Net+** — the paper's US-Net+: US-Net trained over MutualNet's width range at the highest resolution,
  then evaluated at every resolution (paper Sec. 1 and 4.3), so it differs from MutualNet only in training.
* **Independent** — one network per configuration, each trained alone at its width and resolution.
* **Boost** — the single-network booster: widths [0.9, 1.0] trained mutually, evaluated at full width, vs
  the full network trained alone for the same epochs *and* for the same training compute.

Each arm runs once per seed (``seeds``); accuracies are reported as mean and spread over seeds, and every arm's
training compute (sub-network forward passes per image, forward MACs in full-network epochs, see
:func:`training_compute`) is reported beside its accuracy so that equal epochs and equal compute are both
visible. ``mutualnet compare`` writes one folder per seed and arm (train + search), ``compare.json``,
``compare.png`` (seed-mean frontiers with spreads) and ``results.md``. Interrupted arms resume, and the wall
time of every (partial) run is accumulated in ``wall_time.json``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import math
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .demo import make_recipe, run_pipeline
from .errors import MutualNetError
from .io import atomic_write_text
from .layers import WidthRange, config_key
from .models import create_model
from .profiling import profile
from .search import QueryTable
from .search.plot import plot_learning_curves, plot_tables
from .train.config import apply_overrides, load_config

__all__ = ["ARMS", "CompareResult", "run_compare", "usnet_lower_width", "matched_budgets", "seed_budgets",
           "mean_table", "training_compute", "parse_seeds", "learning_curves"]

# arm key -> name in tables and plots; the keys select arms (``--arms``)
ARMS = {"mutualnet": "MutualNet", "usnet": "US-Net", "usnet+": "US-Net+", "independent": "Independent",
        "boost": "Boost"}


@dataclass
class CompareResult:
    """What :func:`run_compare` measured: one query table per seed and arm, their summary, and the cost."""

    out: Path
    seeds: list[int]
    tables: dict[int, dict[str, QueryTable]]  # seed -> arm name -> table
    compute: dict[str, dict] = field(default_factory=dict)  # arm name -> training_compute(...)
    boost: dict[str, dict] = field(default_factory=dict)  # seed-wise top-1s of the boosted and plain networks
    usnet_width_lo: float = 0.0
    seconds: float = 0.0  # wall time of every run in ``out`` so far, resumed parts included

    @property
    def mean_tables(self) -> dict[str, QueryTable]:
        """Per arm, every configuration's top-1 averaged over seeds (``top1_std``: its spread)."""
        names = [n for n in ARMS.values() if any(n in self.tables[s] for s in self.seeds)]
        return {n: mean_table([self.tables[s][n] for s in self.seeds if n in self.tables[s]]) for n in names}

    def seeds_of(self, name: str) -> list[int]:
        """The seeds whose ``name`` arm has finished (all of them, except in a ``report_only`` look at a run)."""
        return [s for s in self.seeds if name in self.tables[s]]


def usnet_lower_width(recipe: dict, step: float = 0.05) -> float:
    """The width at which US-Net (highest resolution only) costs what MutualNet's cheapest configuration costs.

    The largest width on the ``step`` grid whose MACs at the highest resolution do not exceed those of
    (lowest width, lowest resolution); if channel rounding (never below 8 channels) keeps every width above
    that cost, the narrowest width of the cheapest achievable cost.
    """
    m, res = recipe["model"], recipe["train"]["resolutions"]
    lo, hi = m["width_range"]
    model = create_model(m["name"], num_classes=m.get("num_classes"), width_range=(step, hi), **m.get("args", {}))
    target = profile(model, lo, min(res)).macs
    costs = {w: profile(model, w, max(res)).macs for w in WidthRange(step, lo).grid(step)}
    fitting = [w for w, c in costs.items() if c <= target]
    if fitting:
        return max(fitting)
    cheapest = min(costs.values())
    return max(w for w, c in costs.items() if c == cheapest)


def training_compute(recipe: dict, *, full: tuple[float, int] | None = None, grid: int = 16) -> dict:
    """The expected training cost of ``recipe``: what "equal compute" means when arms train different networks.

    Sub-network widths are drawn uniformly from the width range and resolutions uniformly from the list
    (:func:`mutualnet.train.step.sample_subnets`), so the expected forward MACs of one iteration are exact
    sums over those distributions (widths on a ``grid``-point midpoint rule, which channel rounding makes
    piecewise constant). The backward pass costs about twice the forward, for every arm alike.

    Args:
        recipe: A training recipe (``model``, ``train`` sections as in :data:`mutualnet.demo.DEMO_RECIPE`).
        full: The (width, resolution) whose epoch is the unit of ``full_epochs`` (default: the recipe's widest
            at its highest resolution).
        grid: Width points of the expectation over the width range.

    Returns:
        ``passes``: sub-network forward passes per training image over the run; ``macs_per_image``: expected
        forward MACs per image and iteration; ``full_epochs``: the run's forward MACs in epochs of ``full``
        (MAC-epochs), ``epochs``.
    """
    m, t = recipe["model"], recipe["train"]
    res = sorted(t["resolutions"], reverse=True)
    lo, hi = m["width_range"]
    mode, n, epochs = t.get("mode", "mutual"), int(t.get("num_subnets", 4)), int(t["epochs"])
    full = full or (hi, res[0])
    model = create_model(m["name"], num_classes=m.get("num_classes"), width_range=(min(lo, full[0]), max(hi, full[0])),
                         **m.get("args", {}))
    cache: dict[tuple[float, int], int] = {}

    def macs(w: float, r: int) -> int:
        if (w, r) not in cache:
            cache[(w, r)] = profile(model, w, r).macs
        return cache[(w, r)]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    widths = [lo + (hi - lo) * (i + 0.5) / grid for i in range(grid)] if hi > lo else [hi]
    if mode == "single":
        per, passes = macs(t.get("width") or hi, t.get("resolution") or res[0]), 1
    elif mode == "msaug":
        per, passes = mean([macs(t.get("width") or hi, r) for r in res]), 1
    else:
        def sandwich(top_res: list[int], other_res: list[int]) -> float:
            return (mean([macs(hi, r) for r in top_res]) + mean([macs(lo, r) for r in other_res])
                    + (n - 2) * mean([macs(w, r) for w in widths for r in other_res]))

        if mode in ("mutual", "mutual_gt"):
            per = sandwich([res[0]], res)
        elif mode == "usnet":
            per = sandwich([res[0]], [res[0]])
        elif mode == "usnet_msaug":  # one random resolution shared by all sub-networks
            per = mean([sandwich([r], [r]) for r in res])
        else:
            raise MutualNetError(f"unknown train.mode {mode!r}")
        passes = n
    return {"passes": passes * epochs, "macs_per_image": per, "full_epochs": per * epochs / macs(*full),
            "epochs": epochs}


def matched_budgets(tables: dict[str, QueryTable], budgets: list[float]) -> list[dict]:
    """Best top-1 of each arm within each MFLOPs budget (None where the arm has nothing that cheap)."""
    rows = []
    for b in budgets:
        row: dict = {"mflops": b}
        for name, t in tables.items():
            fits = [r for r in t.rows if r["mflops"] <= b + 1e-9]
            row[name] = max(fits, key=lambda r: r["top1"]) if fits else None
        rows.append(row)
    return rows


def _spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values), "values": list(values)}


def seed_budgets(per_seed: Sequence[dict[str, QueryTable]], budgets: list[float]) -> list[dict]:
    """Per budget and arm: the configuration each seed picks within the budget, its accuracy as mean and spread.

    Each seed picks its own best configuration by the tables' ``top1`` (a user would search each trained
    network), so the spread includes the choice; ``configs`` lists the (width, resolution) each seed picked.
    When the tables were measured on held-out images (``test_top1`` columns), the summary is the *test-set*
    accuracy of the picks and ``selected`` the held-out accuracy they were picked by, so no number reported is
    the one a choice was made on. ``None`` where no seed has anything that cheap.
    """
    matched = [matched_budgets(tables, budgets) for tables in per_seed]
    names = [n for n in dict.fromkeys(n for tables in per_seed for n in tables)]  # a seed may lack an arm
    rows = []
    for i, b in enumerate(budgets):
        row: dict = {"mflops": b}
        for name in names:
            picks = [m[i][name] for m in matched if m[i].get(name) is not None]
            if not picks:
                row[name] = None
                continue
            held_out = all("test_top1" in p for p in picks)
            row[name] = {**_spread([p["test_top1"] if held_out else p["top1"] for p in picks]),
                         "configs": [[p["width"], p["resolution"]] for p in picks]}
            if held_out:
                row[name]["selected"] = _spread([p["top1"] for p in picks])
        rows.append(row)
    return rows


def mean_table(tables: Sequence[QueryTable]) -> QueryTable:
    """Configurations present in every table, with top-1/top-5 averaged (``top1_std``: spread over tables)."""
    keys = set.intersection(*({(r["width"], r["resolution"]) for r in t.rows} for t in tables))
    rows = []
    for w, r in sorted(keys):
        found = [t.find(w, r) for t in tables]
        top1 = [f["top1"] for f in found]
        row = {**{k: found[0][k] for k in ("width", "resolution", "macs", "params")},
               "top1": statistics.fmean(top1), "top5": statistics.fmean(f["top5"] for f in found),
               "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0}
        if all("test_top1" in f for f in found):
            test = [f["test_top1"] for f in found]
            row |= {"test_top1": statistics.fmean(test), "test_top5": statistics.fmean(f["test_top5"] for f in found),
                    "test_top1_std": statistics.stdev(test) if len(test) > 1 else 0.0}
        rows.append(row)
    return QueryTable(rows, meta={"seeds": len(tables)})


def _single(recipe: dict, width: float, resolution: int, epochs: int | None = None) -> dict:
    r = copy.deepcopy(recipe)
    r["train"].update({"mode": "single", "width": width, "resolution": resolution})
    if epochs is not None:
        r["train"]["epochs"] = epochs
    return r


@contextmanager
def _clock(path: Path, key: str) -> Iterator[None]:
    """Add the seconds spent inside to ``path[key]`` (JSON), also when interrupted, so resumed work adds up."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a") as lock:  # seeds run by parallel processes share the file
            fcntl.flock(lock, fcntl.LOCK_EX)
            times = json.loads(path.read_text()) if path.exists() else {}
            times[key] = round(times.get(key, 0.0) + time.perf_counter() - t0, 3)
            atomic_write_text(path, json.dumps(times, indent=2))


def parse_seeds(text: str) -> list[int]:
    """``"0,1,5"`` -> [0, 1, 5]; ``"3"`` -> [3] (one run, seed 3)."""
    try:
        values = [int(s) for s in text.split(",")]
    except ValueError:
        raise MutualNetError(f"--seeds expects a list like 0,1,2, got {text!r}") from None
    if len(set(values)) != len(values) or min(values) < 0:
        raise MutualNetError(f"--seeds must be distinct non-negative integers, got {text!r}")
    return values


def run_compare(out: str | Path = "runs/compare", *, recipe: dict | None = None, epochs: int | None = None,
                data_root: str | None = None, seeds: Sequence[int] = (0,), arms: Sequence[str] | None = None,
                train_images: int | None = None, overrides: list[str] | None = None,
                singles: list[tuple[float, int]] | None = None, width_step: float = 0.05, calib_images: int = 2000,
                val_images: int | None = None, budgets: list[float] | None = None, threads: int | None = None,
                progress: bool = True, report_only: bool = False) -> CompareResult:
    """Train and search every arm for every seed (see the module docstring); write JSON, plot and ``results.md``.

    Args:
        out: Output folder; ``out/seed<S>/<arm>`` holds each run. Rerun with the same folder to resume.
        recipe: The base recipe (default: the demo's); ``epochs``, ``data_root``, ``train_images`` (a fixed
            random subset of the training set, the same for every arm and seed) and ``overrides``
            (``key=value`` as ``mutualnet train --set``) change it for every arm.
        seeds: ``run.seed`` of each repetition.
        arms: Keys of :data:`ARMS` to run (default: all).
        singles: The independent networks, (width, resolution) each.
        width_step, calib_images, val_images: The search of every arm (``mutualnet search``); the calibration
            and validation subsets are the same for every arm and seed.
        budgets: MFLOPs budgets of the table (default: 8 log-spaced over MutualNet's range).
        report_only: Train and search nothing: report what has finished in ``out`` (a look at a long comparison
            while it runs, e.g. from another process); an arm counts for a seed once its search has written its
            table, and every number says over how many seeds it is.
    """
    arms = list(arms or ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise MutualNetError(f"unknown arm {unknown[0]!r}; choose from {', '.join(ARMS)}")
    if not seeds:
        raise MutualNetError("give at least one seed")
    out = Path(out)
    base = make_recipe(recipe, epochs=epochs, data_root=data_root)
    if train_images is not None:
        base["data"]["train_subset"] = train_images
    base = apply_overrides(base, list(overrides or []))
    load_config(None, None, **base)  # bad --set keys or values fail now, not after the first arm
    res = sorted(base["train"]["resolutions"], reverse=True)
    lo, hi = base["model"]["width_range"]
    singles = singles or [(hi, res[0]), (round((lo + hi) / 2, 2), res[len(res) // 2]), (lo, res[-1])]
    kw = {"width_step": width_step, "calib_images": calib_images, "val_images": val_images, "threads": threads,
          "progress": progress}
    full = (hi, res[0])
    w_us = usnet_lower_width(base) if "usnet" in arms else lo

    us = copy.deepcopy(base)
    us["model"]["width_range"], us["train"]["mode"] = [w_us, hi], "usnet"
    us_plus = copy.deepcopy(base)
    us_plus["train"]["mode"] = "usnet"
    boosted = copy.deepcopy(base)
    boosted["model"]["width_range"] = [0.9, hi]
    plain = _single(base, *full)
    compute = {ARMS[key]: training_compute(rec, full=full) for key, rec in (
        ("mutualnet", base), ("usnet", us), ("usnet+", us_plus)) if key in arms}
    single_compute = {s: training_compute(_single(base, *s), full=full) for s in singles}
    if "independent" in arms:
        compute["Independent"] = {
            "passes": sum(c["passes"] for c in single_compute.values()),
            "full_epochs": sum(c["full_epochs"] for c in single_compute.values()),
            "epochs": base["train"]["epochs"], "networks": {f"{w:g}@{r}": c for (w, r), c in single_compute.items()}}
    equal_compute_epochs = None
    if "boost" in arms:
        compute["Boost"] = training_compute(boosted, full=full)  # and the plain network for about as much
        one = training_compute(_single(plain, *full, epochs=1), full=full)["full_epochs"]
        equal_compute_epochs = max(base["train"]["epochs"], round(compute["Boost"]["full_epochs"] / one))
        compute["Boost"]["plain_equal_compute"] = training_compute(_single(base, *full, equal_compute_epochs),
                                                                   full=full)

    clock = out / "wall_time.json"

    def arm(seed: int, folder: str, rec: dict, name: str, **extra) -> QueryTable | None:
        if report_only:
            table = out / f"seed{seed}" / folder / "search" / "query_table.json"
            return QueryTable.load(table) if table.is_file() and (table.parent / "calibrated.pt").is_file() else None
        rec = copy.deepcopy(rec)
        rec["run"]["seed"] = seed
        print(f"== seed {seed}: {name}", flush=True)
        with _clock(clock, f"seed{seed}/{folder}"):
            return run_pipeline(rec, out / f"seed{seed}" / folder, **{**kw, **extra})[2]

    tables: dict[int, dict[str, QueryTable]] = {}
    boost: dict[str, list[float]] = {"boosted_top1": [], "plain_top1": [], "plain_equal_compute_top1": []}
    with contextlib.nullcontext() if report_only else _LoadSampler(out / "load.log"):  # load beside wall time
        for seed in seeds:
            t: dict[str, QueryTable] = {}
            if "mutualnet" in arms:
                t["MutualNet"] = arm(seed, "mutualnet", base, "MutualNet")
            # the comparison that matters most first: the shared network against networks trained alone
            single_tables: dict[tuple[float, int], QueryTable] = {}
            if "independent" in arms:
                independent = QueryTable(meta={"mode": "single", "configs": singles})
                for w, r in singles:
                    single_tables[(w, r)] = arm(seed, f"single_w{w:g}_r{r}", _single(base, w, r),
                                                f"independent ({w:g}, {r})")
                    if single_tables[(w, r)] is None:  # report_only: not finished
                        continue
                    for row in single_tables[(w, r)].rows:
                        independent.add({k: row[k] for k in ("width", "resolution", "top1", "top5", "macs", "params",
                                                             "latency_ms", "test_top1", "test_top5") if k in row})
                t["Independent"] = independent
            if "usnet+" in arms:
                t["US-Net+"] = arm(seed, "usnet_plus", us_plus, f"US-Net+ [{lo:g}, {hi:g}] at every resolution")
            if "usnet" in arms:
                t["US-Net"] = arm(seed, "usnet", us, f"US-Net [{w_us:g}, {hi:g}] at {res[0]} px",
                                  search_resolutions=[res[0]])
            if "boost" in arms and not report_only:
                tb = arm(seed, "boost", boosted, f"boost [0.9, {hi:g}]", width_step=round(hi - 0.9, 6) or 0.1,
                         search_resolutions=[res[0]])
                tp = single_tables.get(full) or arm(seed, f"single_w{hi:g}_r{res[0]}", plain,
                                                    f"independent ({hi:g}, {res[0]})")
                if equal_compute_epochs > base["train"]["epochs"]:
                    te = arm(seed, f"single_w{hi:g}_r{res[0]}_e{equal_compute_epochs}", _single(plain, *full,
                                                                                                 equal_compute_epochs),
                             f"independent ({hi:g}, {res[0]}) for {equal_compute_epochs} epochs (the boost's compute)")
                else:
                    te = tp
                for k, tab in (("boosted_top1", tb), ("plain_top1", tp), ("plain_equal_compute_top1", te)):
                    row = tab.find(*full)
                    boost[k].append(row.get("test_top1", row["top1"]))  # no choice is made here: the test set's
            tables[seed] = {n: t[n] for n in ARMS.values() if t.get(n)}  # the tables' order, whatever the runs'

    seconds = sum(json.loads(clock.read_text()).values()) if clock.exists() else 0.0
    boost_summary: dict = {}
    if "boost" in arms and boost["boosted_top1"]:
        boost_summary = {k: _spread(v) for k, v in boost.items()}
        boost_summary |= {"equal_compute_epochs": equal_compute_epochs,
                          "mflops": profile(create_model(base["model"]["name"],
                                                         num_classes=base["model"].get("num_classes"),
                                                         width_range=(lo, hi), **base["model"].get("args", {})),
                                            *full).mflops}
    result = CompareResult(out, list(seeds), tables, compute, boost_summary, w_us, seconds)
    curves = result.mean_tables
    ref = curves.get("MutualNet") or next((c for n, c in curves.items() if n != "Boost"), None)
    budgets = budgets or _default_budgets(sorted(r["mflops"] for r in ref.rows) if ref else [])
    _write(result, base, budgets, singles)
    return result


def _default_budgets(costs: list[float]) -> list[float]:
    if not costs:
        return []
    lo, hi = costs[0], costs[-1]
    n = 8  # log-spaced, rounded *up* to 0.01 so the cheapest and the full configuration fit their budgets
    return [math.ceil(lo * (hi / lo) ** (i / (n - 1)) * 100 - 1e-6) / 100 for i in range(n)]


def _arm_of(folder: str) -> str:
    if folder.startswith("single_") and folder.count("_") == 2:
        return "Independent"
    return {"mutualnet": "MutualNet", "usnet": "US-Net", "usnet_plus": "US-Net+"}.get(folder, "Boost")


def learning_curves(out: str | Path, seeds: Sequence[int],
                    configs: Sequence[tuple[float, int]] = ((1.0, 28), (0.5, 16))) -> dict[str, dict[str, dict]]:
    """Validation top-1 against iterations of every run in ``out`` that validated one of ``configs``.

    Read from each run's ``metrics.jsonl`` (its ``val`` rows: the widest and the narrowest configuration, on the
    held-out images when the recipe holds some out). Returns ``{"W@R": {arm: {seed: [[step, top1], ...]}}}``,
    one curve per seed (a run still going has a shorter one).
    """
    out = Path(out)
    wanted = {config_key(w, r): f"{w:g}@{r}" for w, r in configs}
    curves: dict[str, dict[str, dict]] = {v: {} for v in wanted.values()}
    for seed in seeds:
        for metrics in sorted((out / f"seed{seed}").glob("*/train/metrics.jsonl")):
            arm = _arm_of(metrics.parent.parent.name)
            if arm == "Boost":
                continue
            for line in metrics.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    row = json.loads(line)
                    if row.get("kind") != "val":
                        continue
                    for tag_key, value in row.items():
                        if tag_key.startswith("config_") and value in wanted:
                            point = [int(row["step"]), float(row[f"top1_{tag_key.removeprefix('config_')}"])]
                            curves[wanted[value]].setdefault(arm, {}).setdefault(str(seed), []).append(point)
    return curves


def _load_summary(path: Path) -> dict | None:
    """The machine's 1-minute load averages sampled while the runs went (``load.log``: one sample a line)."""
    if not path.is_file():
        return None
    values = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, IndexError):
            values.append(float(line.split()[1]))
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)} if values \
        else None


class _LoadSampler:
    """Samples the 1-minute load average every ``every`` seconds into ``path`` while a comparison runs."""

    def __init__(self, path: Path, every: float = 60.0) -> None:
        import threading

        self.path, self.every, self.stop = path, every, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            with contextlib.suppress(OSError), open(self.path, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {os.getloadavg()[0]:.2f}\n")

    def __enter__(self) -> _LoadSampler:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()


def _cell(s: dict | None) -> str:
    if s is None:
        return "—"
    return f"{s['mean']:.2f} ± {s['std']:.2f}" if s["n"] > 1 else f"{s['mean']:.2f}"


def _write(res: CompareResult, recipe: dict, budgets: list[float], singles: list[tuple[float, int]]) -> None:
    out, seeds = res.out, res.seeds
    curves = res.mean_tables
    names = list(curves)
    epochs = recipe["train"]["epochs"]
    subset = recipe["data"].get("train_subset")
    data = f"{recipe['data']['name']}" + (f" ({subset} training images)" if subset else "")
    done = [s for s in seeds if res.tables[s]]  # a report_only look may have seeds with nothing finished yet
    title = (f"{recipe['model']['name']} on {data}, {epochs} epoch{'s' if epochs != 1 else ''}, "
             f"{len(done)} seed{'s' if len(done) != 1 else ''}")
    if curves:
        held = all("test_top1" in r for t in curves.values() for r in t.rows)  # chosen on held-out, test drawn
        labels = [n if len(res.seeds_of(n)) == len(done) else  # an arm behind the others says so in the legend
                  f"{n} ({len(res.seeds_of(n))} seed{'s' if len(res.seeds_of(n)) != 1 else ''})" for n in names]
        plot_tables(list(curves.values()), labels, out / "compare.png", title=title,
                    shown="test_top1" if held else None)
    lc = learning_curves(out, seeds, [(recipe["model"]["width_range"][1], max(recipe["train"]["resolutions"])),
                                      (recipe["model"]["width_range"][0], min(recipe["train"]["resolutions"]))])
    plot_learning_curves(lc, out / "learning_curves.png", title)
    per_budget = seed_budgets([res.tables[s] for s in seeds], budgets) if names else []
    held_out = bool(per_budget) and any(m[n] is not None and "selected" in m[n] for m in per_budget for n in names)
    load = _load_summary(out / "load.log")
    times = json.loads((out / "wall_time.json").read_text()) if (out / "wall_time.json").exists() else {}
    wall: dict[str, float] = {}
    for key, sec in times.items():
        seed, folder = key.split("/", 1)
        if int(seed.removeprefix("seed")) in seeds:
            wall[_arm_of(folder)] = wall.get(_arm_of(folder), 0.0) + sec
    summary = {
        "recipe": recipe, "seeds": seeds, "usnet_width_range": [res.usnet_width_lo, recipe["model"]["width_range"][1]],
        "singles": [list(s) for s in singles], "boost": res.boost, "seconds": round(res.seconds, 1),
        "compute": res.compute, "wall_seconds": {k: round(v, 1) for k, v in wall.items()},
        "matched": per_budget,
        "per_seed": {str(s): {n: t.rows for n, t in res.tables[s].items()} for s in seeds},
        "ranges_mflops": {n: [min(r["mflops"] for r in t.rows), max(r["mflops"] for r in t.rows)]
                          for n, t in curves.items() if t.rows},
        "selected_on": "holdout" if held_out else "test", "learning_curves": lc, "load": load,
        "seeds_per_arm": {n: res.seeds_of(n) for n in names},
    }
    atomic_write_text(out / "compare.json", json.dumps(summary, indent=2))
    spread = "mean ± sample standard deviation over seeds " + ", ".join(map(str, seeds)) if len(seeds) > 1 \
        else f"seed {seeds[0]}"
    if held_out:
        holdout = recipe["data"].get("holdout")
        text = [f"Test top-1 (%) of the configuration each seed picks within each budget on {holdout} held-out "
                f"training images ({spread}); the test set is never used to choose.", ""]
    else:
        text = [f"Best top-1 (%) within each budget ({spread}); each seed picks its own best configuration "
                "on the same test images it reports (no held-out images: data.holdout).", ""]
    if names:
        text += [f"| budget (MFLOPs) | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
        text += [f"| {m['mflops']:g} | {' | '.join(_cell(m[n]) for n in names)} |" for m in per_budget]
        if held_out:
            text += ["", "Held-out top-1 (%) of the same picks (what each was chosen by):", "",
                     f"| budget (MFLOPs) | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
            text += [f"| {m['mflops']:g} | "
                     + " | ".join(_cell(m[n] and m[n].get("selected")) for n in names) + " |" for m in per_budget]
        text += ["", "Configurations (width, resolution) picked at each budget, per seed:", "",
                 f"| budget (MFLOPs) | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
        text += [f"| {m['mflops']:g} | " + " | ".join(
            "—" if m[n] is None else " / ".join(f"({w:g}, {r})" for w, r in m[n]["configs"]) for n in names) + " |"
            for m in per_budget]
    text += ["", "Training compute per arm (forward passes only; the backward pass costs about twice as much for "
                 "every arm). MAC-epochs: forward MACs of the whole run in epochs of the full network "
                 f"({recipe['model']['width_range'][1]:g}, {max(recipe['train']['resolutions'])} px).", "",
             "| arm | epochs | sub-network passes per image | MAC-epochs | wall time, all seeds (min) |",
             "|---|---|---|---|---|"]
    for name, c in res.compute.items():
        text.append(f"| {name} | {c['epochs']} | {c['passes']} | {c['full_epochs']:.2f} | "
                    f"{wall.get(name, 0.0) / 60:.1f} |")
    nets = res.compute.get("Independent", {}).get("networks")
    if nets:
        text += ["", "Independent networks, one per configuration: " + ", ".join(
            f"({k.replace('@', ', ')} px) {c['full_epochs']:.2f}" for k, c in nets.items()) + " MAC-epochs."]
    if res.boost:
        b = res.boost
        text += ["", f"Single-network boost at full width and {max(recipe['train']['resolutions'])} px "
                     f"({b['mflops']:.2f} MFLOPs): {_cell(b['boosted_top1'])}% trained with widths [0.9, 1.0] "
                     f"({res.compute['Boost']['full_epochs']:.2f} MAC-epochs) vs {_cell(b['plain_top1'])}% trained "
                     f"alone for the same {epochs} epochs ({1.0 * epochs:.2f} MAC-epochs) and "
                     f"{_cell(b['plain_equal_compute_top1'])}% trained alone for {b['equal_compute_epochs']} epochs "
                     "(about the boosted run's compute)."]
    partial = {n: res.seeds_of(n) for n in names if res.seeds_of(n) != list(seeds)}
    if partial:
        text += ["", "Not every arm has finished for every seed; these numbers are over the seeds that have: "
                 + "; ".join(f"{n}: seed{'s' if len(v) != 1 else ''} {', '.join(map(str, v))}"
                             for n, v in partial.items()) + "."]
    text += ["", f"Wall time of all runs in {out}, resumed parts included: {res.seconds / 60:.1f} min."]
    if load:
        text += [f"Load average (1 min) while they ran: mean {load['mean']:.1f}, min {load['min']:.1f}, "
                 f"max {load['max']:.1f} ({load['n']} samples; {os.cpu_count()} cores)."]
    atomic_write_text(out / "results.md", "\n".join(text) + "\n")
