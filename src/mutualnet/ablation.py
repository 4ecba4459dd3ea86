"""Ablation of training options: MutualNet trained once per recipe variant and seed, one table.

The lineage of the paper (BigNAS, AttentiveNAS, AlphaNet) reports shared networks that match networks trained
alone with training changes the paper does not use; each is a recipe option here (off by default). An ablation
trains the MutualNet arm of :func:`mutualnet.compare.run_compare` once per option and seed, with everything else
equal (same epochs, so the same iterations), and reports per option the test top-1 of the full and the
narrowest configuration and of the *frontier* (the mean, over the comparison's budgets, of the configuration
picked on held-out images within each budget), each as mean ± sample sd over seeds with its gain over the
baseline. An option is marked for adoption when its frontier gain exceeds twice the seed spread (the larger
sample sd of the option and the baseline) and neither the full nor the narrowest configuration loses more
than twice its own spread.

Each option's runs live in ``out/<option>`` laid out as ``mutualnet compare``'s (``seed<S>/mutualnet``), so an
option's folder is a comparison one can open with ``mutualnet compare --report-only`` and an interrupted
ablation resumes where it stopped.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .compare import _default_budgets, _spread, run_compare, seed_budgets
from .demo import make_recipe
from .errors import MutualNetError
from .io import atomic_write_text
from .search import QueryTable
from .train.config import apply_overrides, config_from_dict

__all__ = ["OPTIONS", "AblationResult", "run_ablation", "parse_option"]

BASE = "base"  # the recipe as it is: every gain is measured against it
# the lineage's changes available as recipe options (train/config.py says what each does)
OPTIONS: dict[str, list[str]] = {
    "zero_init": ["model.zero_init_residual=true"],  # BigNAS: last BN scale of every residual block at 0
    "alpha": ["train.distill=alpha"],  # AlphaNet: adaptive alpha-divergence instead of KL
    "clip": ["optim.clip_grad_value=1.0"],  # AlphaNet: gradients clipped to [-1, 1]
    "subnets3": ["train.num_subnets=3"],  # widest, narrowest and one random width per step instead of two
}


@dataclass
class AblationResult:
    """Per option: the full, narrowest and frontier test top-1 over seeds, gains and the adoption verdict."""

    out: Path
    rows: list[dict]  # one per option, the baseline first
    budgets: list[float]


def parse_option(text: str) -> tuple[str, list[str]]:
    """``"name=key=value,key=value"`` -> ``("name", ["key=value", ...])`` (``mutualnet ablate --option``)."""
    name, sep, sets = text.partition("=")
    overrides = [s.strip() for s in sets.split(",") if s.strip()]
    if not sep or not name.strip() or not name.strip().isidentifier() or name.strip() == BASE \
            or not overrides or any("=" not in s for s in overrides):
        raise MutualNetError(f"--option expects NAME=KEY=VALUE[,KEY=VALUE...] with a name other than {BASE!r}, "
                             f"got {text!r}")
    return name.strip(), overrides


def _metrics(table: QueryTable, full: tuple[float, int], narrow: tuple[float, int], budgets: list[float]) -> dict:
    """Test top-1 of the full and narrowest configurations and of the held-out picks, for one trained network."""
    def test(row: dict) -> float:
        return row.get("test_top1", row["top1"])

    picks = [m["net"] for m in seed_budgets([{"net": table}], budgets) if m["net"] is not None]
    return {"full": test(table.find(*full)), "narrow": test(table.find(*narrow)),
            "frontier": statistics.fmean(p["mean"] for p in picks)}


def run_ablation(out: str | Path = "runs/ablation", options: dict[str, list[str]] | None = None, *,
                 epochs: int = 3, seeds: Sequence[int] = (0, 1), report_only: bool = False,
                 **compare_kw) -> AblationResult:
    """Train MutualNet once per option (and the baseline) and seed; write ``ablation.md`` and ``ablation.json``.

    Args:
        out: Output folder, one sub-folder per option (rerun with the same folder to resume).
        options: Option name -> ``key=value`` overrides (default: :data:`OPTIONS`); the baseline runs first.
        epochs, seeds: Every run's training length and seeds (equal iterations for every option).
        report_only: Train nothing; tabulate what has finished (every number says over how many seeds).
            An option's run that fails (a diverging loss, say) is recorded in ``<option>/seed<S>/mutualnet/
            failed.txt``, listed under the table and in the row's ``failed``; the other runs go on, and a rerun
            tries it again. The baseline's failure stops the ablation.
        **compare_kw: Passed to :func:`mutualnet.compare.run_compare` (``overrides`` apply to every option,
            ``train_images``, ``val_images``, ``calib_images``, ``width_step``, ``threads``, ``progress``...).
    """
    options = dict(OPTIONS if options is None else options)
    if BASE in options:
        raise MutualNetError(f"{BASE!r} is the unchanged recipe; name the options otherwise")
    shared = list(compare_kw.pop("overrides", None) or [])
    for sets in options.values():  # a bad option fails now, not after hours of the runs before it
        config_from_dict(apply_overrides(make_recipe(compare_kw.get("recipe"), epochs=epochs), shared + sets))
    out = Path(out)
    runs = {BASE: [], **options}
    if not report_only:
        for name, sets in runs.items():
            print(f"==== ablation: {name} {' '.join(sets)}", flush=True)
            for seed in seeds:
                _train_one(out / name, seed, name == BASE, epochs=epochs, overrides=shared + sets, **compare_kw)
    compare_kw.pop("progress", None)
    results = {name: run_compare(out / name, epochs=epochs, seeds=seeds, arms=["mutualnet"], overrides=shared + sets,
                                 report_only=True, progress=False, **compare_kw) for name, sets in runs.items()}
    base_tables = [t["MutualNet"] for t in results[BASE].tables.values() if t.get("MutualNet")]
    if not base_tables:
        raise MutualNetError(f"no baseline run has finished in {out / BASE}; nothing to compare with")
    rows_by_cost = sorted(base_tables[0].rows, key=lambda r: r["mflops"])
    lo, hi = min(r["width"] for r in rows_by_cost), max(r["width"] for r in rows_by_cost)
    res = sorted({r["resolution"] for r in rows_by_cost})
    full, narrow = (hi, res[-1]), (lo, res[0])
    budgets = _default_budgets([r["mflops"] for r in rows_by_cost])
    rows = []
    for name, r in results.items():
        per_seed = {s: _metrics(t["MutualNet"], full, narrow, budgets)
                    for s, t in r.tables.items() if t.get("MutualNet")}
        row = {"option": name, "overrides": [] if name == BASE else options[name], "seeds": sorted(per_seed)}
        failed = {s: _failure(out / name, s) for s in seeds if s not in per_seed}
        if any(failed.values()):
            row["failed"] = {s: msg for s, msg in failed.items() if msg}
        if per_seed:
            row |= {k: _spread([m[k] for m in per_seed.values()]) for k in ("full", "narrow", "frontier")}
        rows.append(row)
    base = rows[0]
    for row in rows[1:]:
        if "frontier" not in row:
            continue
        for k in ("full", "narrow", "frontier"):
            row[k]["gain"] = row[k]["mean"] - base[k]["mean"]
            row[k]["spread"] = max(row[k]["std"], base[k]["std"])
        enough = len(row["seeds"]) > 1 and len(base["seeds"]) > 1
        row["adopt"] = enough and row["frontier"]["gain"] > 2 * row["frontier"]["spread"] and all(
            row[k]["gain"] >= -2 * row[k]["spread"] for k in ("full", "narrow"))
    result = AblationResult(out, rows, budgets)
    _write(result, full, narrow, epochs, seeds)
    return result


def _cell(s: dict | None, gain: bool = False) -> str:
    if s is None:
        return "—"
    text = f"{s['mean']:.2f} ± {s['std']:.2f}" if len(s["values"]) > 1 else f"{s['mean']:.2f}"
    return text + (f" ({s['gain']:+.2f})" if gain and "gain" in s else "")


def _failure_file(option_dir: Path, seed: int) -> Path:
    return option_dir / f"seed{seed}" / "mutualnet" / "failed.txt"


def _failure(option_dir: Path, seed: int) -> str | None:
    """Why ``seed``'s run of this option stopped, as its last attempt recorded it (``None``: it did not fail)."""
    f = _failure_file(option_dir, seed)
    return f.read_text().strip() if f.is_file() else None


def _train_one(option_dir: Path, seed: int, is_base: bool, **compare_kw) -> None:
    """One option's run for one seed. An option whose training fails (a diverging loss, say) is recorded as failed
    and the queue goes on with the next run: hours of other options are not lost to one. The baseline's failure
    stops everything, as nothing could be compared with it. A rerun tries a failed run again."""
    try:
        run_compare(option_dir, seeds=[seed], arms=["mutualnet"], **compare_kw)
    except MutualNetError as e:
        if is_base:
            raise
        atomic_write_text(_failure_file(option_dir, seed), f"{e}\n")
        print(f"option {option_dir.name}, seed {seed} failed: {e} -- the other runs go on", flush=True)
    else:
        _failure_file(option_dir, seed).unlink(missing_ok=True)


def _write(res: AblationResult, full: tuple[float, int], narrow: tuple[float, int], epochs: int,
           seeds: Sequence[int]) -> None:
    text = [f"Test top-1 (%) of MutualNet trained with each option, {epochs} epochs, mean ± sample sd over the seeds "
            "each row lists (gain over the baseline in brackets). Frontier: mean test top-1 of the configurations "
            f"picked on held-out images within each of the budgets {', '.join(f'{b:g}' for b in res.budgets)} "
            "MFLOPs. Adopt: frontier gain above twice the seed spread, and neither the full nor the narrowest "
            "configuration worse by more than twice its own.", "",
            f"| option | overrides | seeds | full ({full[0]:g}, {full[1]}) | narrowest ({narrow[0]:g}, {narrow[1]}) "
            "| frontier | adopt |", "|---|---|---|---|---|---|---|"]
    for row in res.rows:
        verdict = "—" if row["option"] == BASE else ("yes" if row.get("adopt") else "no")
        text.append(f"| {row['option']} | {' '.join(row['overrides']) or '—'} | "
                    f"{', '.join(map(str, row['seeds'])) or 'none yet'} | {_cell(row.get('full'), True)} | "
                    f"{_cell(row.get('narrow'), True)} | {_cell(row.get('frontier'), True)} | {verdict} |")
    failed = [f"{r['option']} seed {s}: {msg}" for r in res.rows for s, msg in r.get("failed", {}).items()]
    if failed:
        text += ["", "Failed runs (rerun the same command to try them again): " + "; ".join(failed)]
    missing = [r["option"] for r in res.rows if len(r["seeds"]) < len(seeds)]
    if missing:
        text += ["", f"Not finished for every seed ({', '.join(map(str, seeds))}): {', '.join(missing)}; "
                     "an option is adopted only with at least two seeds of its own and of the baseline."]
    atomic_write_text(res.out / "ablation.md", "\n".join(text) + "\n")
    atomic_write_text(res.out / "ablation.json", json.dumps(
        {"budgets": res.budgets, "full": list(full), "narrow": list(narrow), "epochs": epochs, "seeds": list(seeds),
         "rows": res.rows}, indent=2))

