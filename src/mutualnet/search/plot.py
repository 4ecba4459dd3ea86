"""Accuracy vs cost of one or more query tables (matplotlib, no display needed).

One table: every configuration in grey and the Pareto frontier coloured by the resolution it picks
(the paper's Fig. 6). Several tables: one frontier curve each (e.g. MutualNet vs US-Net vs independently
trained networks). The y axis is the tables' metric: top-1, or box / mask AP for detection tables.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MutualNetError
from ..io import atomic_write
from .table import METRICS, QueryTable

__all__ = ["plot_tables", "table_label"]


def table_label(table: QueryTable, path: str | Path) -> str:
    """A legend label for a table: its model and training mode, else the name of its file or folder."""
    m = table.meta
    if m.get("mode"):
        return f"{m.get('model', '')} {m['mode']}".strip()
    return Path(path).parent.name if Path(path).name == "query_table.json" else Path(path).stem


def plot_tables(tables: list[QueryTable], labels: list[str], out: str | Path, *, cost: str = "macs",
                title: str | None = None) -> Path:
    """Draw accuracy vs cost and save to ``out`` (matplotlib, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xkey, xlabel = ("mflops", "MFLOPs") if cost == "macs" else ("latency_ms", "latency (ms)")
    metric = tables[0].metric  # top-1, or a detection table's box / mask AP
    if any(t.metric != metric for t in tables):
        raise MutualNetError(f"tables rank by different metrics ({', '.join(sorted({t.metric for t in tables}))}); "
                             "plot them separately")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    if len(tables) == 1:
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
            (line,) = ax.plot([r[xkey] for r in front], [r[metric] for r in front], marker="o", ms=3, lw=1.4,
                              ls=styles[i % len(styles)], label=label, zorder=3)
            rest = [r for r in t.rows if not r.get("pareto")]  # dominated configurations, faint
            ax.scatter([r[xkey] for r in rest], [r[metric] for r in rest], s=8, color=line.get_color(), alpha=0.3,
                       zorder=2)
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 accuracy (%)" if metric == "top1" else METRICS[metric])
    if title is None and len(tables) == 1:
        m = tables[0].meta
        title = " ".join(str(v) for v in (m.get("model"), (m.get("dataset") or {}).get("name")) if v)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    try:  # written beside the target, then renamed: a failure never leaves half an image over an old one
        atomic_write(out, lambda tmp: fig.savefig(tmp, format=out.suffix.lstrip(".") or None))
    except ValueError as e:  # unknown image format
        raise MutualNetError(f"cannot write {out}: {e}") from None
    finally:
        plt.close(fig)
    return out
