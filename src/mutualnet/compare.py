"""The paper's comparison at small scale: MutualNet vs US-Net vs US-Net+ vs independent networks.

Every arm uses the demo's recipe (same data, epochs, optimizer and seed) and differs only in what the
paper varies:

* **MutualNet** — widths [0.25, 1.0] x resolutions {28, 24, 20, 16}, mutual learning.
* **US-Net** — widths only, every sub-network at the highest resolution (sandwich rule + inplace
  distillation), with the width lower bound that reaches MutualNet's minimum FLOPs (or, where channel
  rounding cannot go that low, the narrowest width it can), evaluated at the highest resolution.
* **US-Net+** — the same US-Net network evaluated at every resolution (the paper's Fig. 1).
* **Independent** — one network per configuration, each trained alone at its width and resolution.
* **Boost** — the single-network booster: widths [0.9, 1.0] trained mutually, evaluated at full width,
  vs the full network trained alone.

``mutualnet compare`` writes one folder per arm (train + search), ``compare.json``, ``compare.png`` (every
curve on one plot) and ``results.md`` (accuracy at matched budgets). Interrupted arms resume.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from .demo import make_recipe, run_pipeline
from .models import create_model
from .profiling import profile
from .search import QueryTable, width_grid
from .search.plot import plot_tables

__all__ = ["CompareResult", "run_compare", "usnet_lower_width", "matched_budgets"]


@dataclass
class CompareResult:
    out: Path
    tables: dict[str, QueryTable]
    boost: dict[str, float] = field(default_factory=dict)
    usnet_width_lo: float = 0.0
    seconds: float = 0.0


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
    costs = {w: profile(model, w, max(res)).macs for w in width_grid(step, lo, step)}
    fitting = [w for w, c in costs.items() if c <= target]
    if fitting:
        return max(fitting)
    cheapest = min(costs.values())
    return max(w for w, c in costs.items() if c == cheapest)


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


def _single(recipe: dict, width: float, resolution: int) -> dict:
    r = copy.deepcopy(recipe)
    r["train"].update({"mode": "single", "width": width, "resolution": resolution})
    return r


def run_compare(out: str | Path = "runs/compare", *, recipe: dict | None = None, epochs: int | None = None,
                data_root: str | None = None, singles: list[tuple[float, int]] | None = None, boost: bool = True,
                width_step: float = 0.05, calib_images: int = 2000, val_images: int | None = None,
                budgets: list[float] | None = None, threads: int | None = None,
                progress: bool = True) -> CompareResult:
    """Train and search every arm (see the module docstring); write the JSON, the plot and ``results.md``."""
    t0 = time.perf_counter()
    out = Path(out)
    base = make_recipe(recipe, epochs=epochs, data_root=data_root)
    res = sorted(base["train"]["resolutions"], reverse=True)
    lo, hi = base["model"]["width_range"]
    singles = singles or [(hi, res[0]), (round((lo + hi) / 2, 2), res[len(res) // 2]), (lo, res[-1])]
    kw = {"width_step": width_step, "calib_images": calib_images, "val_images": val_images, "threads": threads,
          "progress": progress}

    def arm(name: str, rec: dict, **extra) -> QueryTable:
        print(f"== {name}")
        return run_pipeline(rec, out / name, **kw, **extra)[2]

    tables: dict[str, QueryTable] = {"MutualNet": arm("mutualnet", base)}
    w_us = usnet_lower_width(base, width_step)
    us = copy.deepcopy(base)
    us["model"]["width_range"] = [w_us, hi]
    us["train"]["mode"] = "usnet"
    tables["US-Net"] = arm("usnet", us, search_resolutions=[res[0]])
    tables["US-Net+"] = run_pipeline(us, out / "usnet", search_name="search_all_resolutions", **kw)[2]
    independent = QueryTable(meta={"mode": "single", "configs": singles})
    for w, r in singles:
        t = arm(f"single_w{w:g}_r{r}", _single(base, w, r))
        for row in t.rows:
            independent.add({k: row[k] for k in ("width", "resolution", "top1", "top5", "macs", "params",
                                                 "latency_ms")})
    independent.mark_pareto()
    tables["Independent"] = independent
    boost_result: dict[str, float] = {}
    if boost:
        b = copy.deepcopy(base)
        b["model"]["width_range"] = [0.9, hi]
        tb = run_pipeline(b, out / "boost", **{**kw, "width_step": round(hi - 0.9, 6) or 0.1},
                          search_resolutions=[res[0]])[2]
        boosted = tb.find(hi, res[0])
        plain = independent.find(hi, res[0])
        if boosted and plain:
            boost_result = {"boosted_top1": boosted["top1"], "plain_top1": plain["top1"],
                            "mflops": boosted["mflops"]}

    all_costs = sorted(r["mflops"] for r in tables["MutualNet"].frontier())
    budgets = budgets or _default_budgets(all_costs)
    result = CompareResult(out, tables, boost_result, w_us, time.perf_counter() - t0)
    _write(result, base, budgets, singles)
    return result


def _default_budgets(costs: list[float]) -> list[float]:
    if not costs:
        return []
    lo, hi = costs[0], costs[-1]
    n = 8  # log-spaced, rounded *up* to 0.01 so the cheapest and the full configuration fit their budgets
    return [math.ceil(lo * (hi / lo) ** (i / (n - 1)) * 100 - 1e-6) / 100 for i in range(n)]


def _write(res: CompareResult, recipe: dict, budgets: list[float], singles: list[tuple[float, int]]) -> None:
    out = res.out
    names = list(res.tables)
    plot_tables([res.tables[n] for n in names], names, out / "compare.png",
                title=f"{recipe['model']['name']} on {recipe['data']['name']}, {recipe['train']['epochs']} "
                      f"epoch{'s' if recipe['train']['epochs'] != 1 else ''}")
    matched = matched_budgets(res.tables, budgets)
    summary = {
        "recipe": recipe, "usnet_width_range": [res.usnet_width_lo, recipe["model"]["width_range"][1]],
        "singles": [list(s) for s in singles], "boost": res.boost, "seconds": round(res.seconds, 1),
        "matched": [{"mflops": m["mflops"], **{n: (None if m[n] is None else {
            "top1": m[n]["top1"], "width": m[n]["width"], "resolution": m[n]["resolution"],
            "mflops": m[n]["mflops"]}) for n in names}} for m in matched],
        "ranges_mflops": {n: [min(r["mflops"] for r in t.rows), max(r["mflops"] for r in t.rows)]
                          for n, t in res.tables.items()},
    }
    (out / "compare.json").write_text(json.dumps(summary, indent=2))
    lines = [f"| budget (MFLOPs) | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
    for m in matched:
        cells = ["—" if m[n] is None else f"{m[n]['top1']:.2f} ({m[n]['width']:g}, {m[n]['resolution']})"
                 for n in names]
        lines.append(f"| {m['mflops']:g} | {' | '.join(cells)} |")
    text = ["Best top-1 (%) within each budget; in brackets the (width, resolution) that achieves it.", "",
            *lines, ""]
    if res.boost:
        text.append(f"Single-network boost at full width and {recipe['train']['resolutions'][0]} px: "
                    f"{res.boost['boosted_top1']:.2f}% trained with widths [0.9, 1.0] vs "
                    f"{res.boost['plain_top1']:.2f}% trained alone.")
    (out / "results.md").write_text("\n".join(text) + "\n")
