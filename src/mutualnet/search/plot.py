"""Every figure of the package: accuracy vs cost of query tables, comparisons and detection tables (matplotlib,
Agg backend: no display needed).

One table: every configuration in grey and the Pareto frontier coloured by the resolution it picks
(the paper's Fig. 6); a table with elastic depth colours every configuration by its depth instead (the frontier's
resolution becomes the marker's shape). Several tables: one frontier curve each (e.g. MutualNet vs US-Net vs
independently trained networks), with error bars where rows carry the spread over seeds (``top1_std``, from
``mutualnet compare``). The y axis is the tables' metric: top-1, or box / mask AP for detection tables.
:func:`plot_detection_table` draws box and mask AP of a detection grid side by side, a line per width.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MutualNetError
from ..io import atomic_write
from .table import METRICS, QueryTable

__all__ = ["plot_tables", "table_label", "plot_detection_table", "plot_learning_curves", "COST_AXES"]

# a detection table's two cost axes: the whole detector (heads included, dominated by them at small widths) and
# the backbone (+ FPN), the part the width multiplier scales -- the paper's Fig. 10 axis
COST_AXES = {"mflops": ("pareto", "MFLOPs of the whole detector (MACs, fixed image)"),
             "backbone_mflops": ("pareto_backbone", "backbone + FPN MFLOPs (MACs, fixed image)")}


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path, **kw) -> Path:  # noqa: ANN001
    """Write ``fig`` beside the target, then rename: a failure never leaves half an image over an old one."""
    out = Path(out)
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format=out.suffix.lstrip(".") or None, **kw))
    except ValueError as e:  # unknown image format
        raise MutualNetError(f"cannot write {out}: {e}") from None
    finally:
        _pyplot().close(fig)
    return out


def table_label(table: QueryTable, path: str | Path) -> str:
    """A legend label for a table: its model and training mode, else the name of its file or folder."""
    m = table.meta
    if m.get("mode"):
        return f"{m.get('model', '')} {m['mode']}".strip()
    return Path(path).parent.name if Path(path).name == "query_table.json" else Path(path).stem


def plot_tables(tables: list[QueryTable], labels: list[str], out: str | Path, *, cost: str = "macs",
                title: str | None = None, shown: str | None = None) -> Path:
    """Draw accuracy vs cost and save to ``out``; several tables are one frontier curve each (error bars where
    rows carry the metric's spread over seeds, ``<metric>_std``).

    ``shown``: the column drawn (default: the metric the frontier is chosen by). ``"test_top1"`` draws the test
    accuracy of a frontier chosen on held-out images (tables measured with ``data.holdout``)."""
    plt = _pyplot()
    xkey, xlabel = ("mflops", "MFLOPs") if cost == "macs" else ("latency_ms", "latency (ms)")
    ranked = tables[0].metric  # top-1, or a detection table's box / mask AP
    if any(t.metric != ranked for t in tables):
        raise MutualNetError(f"tables rank by different metrics ({', '.join(sorted({t.metric for t in tables}))}); "
                             "plot them separately")
    metric = shown or ranked
    if any(metric not in r for t in tables for r in t.rows):
        raise MutualNetError(f"not every row of the tables has {metric!r}")
    spread = any(f"{metric}_std" in r for t in tables for r in t.rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    if len(tables) == 1 and len({r.get("depth") for r in tables[0].rows}) > 1:
        _by_depth(ax, tables[0], xkey, metric, cost, plt)
    elif len(tables) == 1:
        t = tables[0]
        front = t.frontier(cost)
        ax.scatter([r[xkey] for r in t.rows], [r[metric] for r in t.rows], s=10, c="0.8",
                   label="all configurations", zorder=1)
        ax.plot([r[xkey] for r in front], [r[metric] for r in front], c="0.3", lw=1, zorder=2)
        resolutions = sorted({r["resolution"] for r in t.rows}, reverse=True)
        cmap = plt.get_cmap("viridis", max(len(resolutions), 2))
        for i, res in enumerate(resolutions):
            pts = [r for r in front if r["resolution"] == res]
            if pts:
                ax.scatter([r[xkey] for r in pts], [r[metric] for r in pts], s=28, color=cmap(i),
                           label=f"{res} px", zorder=3, edgecolors="k", linewidths=0.4)
        ax.legend(title="frontier resolution", fontsize=8)
    else:
        styles = ["-", "--", ":", "-."]
        for i, (t, label) in enumerate(zip(tables, labels)):
            front = t.frontier(cost)
            bars = ax.errorbar([r[xkey] for r in front], [r[metric] for r in front],
                               yerr=[r.get(f"{metric}_std") or 0.0 for r in front] if spread else None,
                               marker="o", ms=3, lw=1.4, ls=styles[i % len(styles)], capsize=2, label=label, zorder=3)
            rest = [r for r in t.rows if not r.get("pareto")]  # dominated configurations, faint
            ax.scatter([r[xkey] for r in rest], [r[metric] for r in rest], s=8, color=bars.lines[0].get_color(),
                       alpha=0.3, zorder=2)
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(("top-1 accuracy (%)" if metric == "top1" else "test top-1 (%)" if metric == "test_top1"
                   else METRICS[metric]) + (", mean over seeds" if spread else "")
                  + (", frontier chosen on held-out images" if metric == "test_top1" else ""),
                  fontsize=8 if metric == "test_top1" else None)
    if title is None and len(tables) == 1:
        m = tables[0].meta
        title = " ".join(str(v) for v in (m.get("model"), (m.get("dataset") or {}).get("name")) if v)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)


def _by_depth(ax, t: QueryTable, xkey: str, metric: str, cost: str, plt) -> None:  # noqa: ANN001
    """A table with a depth column: every configuration and the frontier coloured by depth (blocks per stage), so
    where shallower networks take over the frontier is visible; the frontier's points say their resolution too
    (marker shape), as the 2-D figure's colours do."""
    front = t.frontier(cost)
    ax.plot([r[xkey] for r in front], [r[metric] for r in front], c="0.3", lw=1, zorder=2)
    depths = sorted({r["depth"] for r in t.rows})
    resolutions = sorted({r["resolution"] for r in t.rows}, reverse=True)
    cmap, markers = plt.get_cmap("plasma", len(depths) + 1), "os^Dvp*h"
    for i, d in enumerate(depths):
        rows = [r for r in t.rows if r["depth"] == d]
        ax.scatter([r[xkey] for r in rows], [r[metric] for r in rows], s=10, color=cmap(i), alpha=0.35, zorder=1,
                   label=f"depth {d}")
        for j, res in enumerate(resolutions):
            pts = [r for r in front if r["depth"] == d and r["resolution"] == res]
            if pts:
                ax.scatter([r[xkey] for r in pts], [r[metric] for r in pts], s=34, color=cmap(i),
                           marker=markers[j % len(markers)], edgecolors="k", linewidths=0.5, zorder=3)
    for j, res in enumerate(resolutions):  # the shapes' key, in black
        if any(r["resolution"] == res for r in front):
            ax.scatter([], [], s=34, color="w", marker=markers[j % len(markers)], edgecolors="k", label=f"{res} px")
    ax.legend(title="depth (colour), frontier px (shape)", fontsize=7, title_fontsize=7)


def plot_detection_table(rows: list[dict], path: str | Path, title: str = "", cost: str = "mflops") -> Path:
    """AP vs ``cost`` (box and mask), one line per width, the Pareto frontier (box AP) highlighted.

    ``cost`` is ``mflops`` (the whole detector) or ``backbone_mflops`` (backbone + FPN), see ``COST_AXES``.
    """
    if cost not in COST_AXES:
        raise MutualNetError(f"unknown cost axis {cost!r}; use one of {', '.join(COST_AXES)}")
    flag, xlabel = COST_AXES[cost]
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, key, name in ((axes[0], "box_ap", "box AP"), (axes[1], "mask_ap", "mask AP")):
        for w in sorted({r["width"] for r in rows}):
            pts = sorted((r[cost], 100 * r[key], r["resolution"]) for r in rows if r["width"] == w)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=4, label=f"{w:g}x")
            for x, y, s in pts:
                ax.annotate(str(s), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        front = sorted((r[cost], 100 * r[key]) for r in rows if r.get(flag))
        if front:  # the legend lists only what is drawn
            ax.plot([p[0] for p in front], [p[1] for p in front], "k--" if len(front) > 1 else "k*", lw=1, ms=9,
                    label="Pareto (box AP)", zorder=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{name} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(title="width", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=120)


def plot_learning_curves(curves: dict[str, dict[str, dict]], out: str | Path, title: str) -> Path | None:
    """One panel per configuration: validation top-1 against iterations, one line per arm and seed (one colour per
    arm); ``curves`` as :func:`mutualnet.compare.learning_curves` returns them. None when there is nothing to draw."""
    panels = [(cfg, arms) for cfg, arms in curves.items() if arms]
    if not panels:
        return None
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), dpi=150, squeeze=False)
    colours = {arm: f"C{i}" for i, arm in enumerate(sorted({a for _, arms in panels for a in arms}))}
    for ax, (cfg, arms) in zip(axes[0], panels):
        for arm, per_seed in sorted(arms.items()):
            kind = "trained alone" if arm == "Independent" else "one shared network"
            for j, (seed, pts) in enumerate(sorted(per_seed.items())):
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.3, color=colours[arm],
                        ls=["-", "--", ":", "-."][j % 4], label=f"{arm} ({kind}), seed {seed}")
        w, r = cfg.split("@")
        ax.set_title(f"({w}, {r} px)", fontsize=10)
        ax.set_xlabel("training iterations")
        ax.set_ylabel("validation top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)
