"""The query table: accuracy and cost of every (width, resolution) configuration, and budget selection.

MutualNet's deployment story (paper, Sec. 3.4): evaluate the trained network at every width x resolution,
keep the table, and at deployment pick the most accurate configuration whose cost fits the budget. The
table is a JSON file a person can read (plus a CSV beside it); rows are plain dicts::

    {"width": 0.35, "resolution": 192, "top1": 61.2, "top5": 83.0, "macs": 59_812_352, "params": 1_113_000,
     "mflops": 59.8, "latency_ms": 3.1 or None, "pareto": true}

``pareto`` marks the frontier by MACs: no cheaper-or-equal configuration is at least as accurate.

The accuracy a table ranks by is its ``metric``: ``top1`` for classification, ``box_ap`` or ``mask_ap`` for
detection tables (whose rows carry AP instead of top-1/top-5), so selection, frontiers and plots work the
same on both.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MutualNetError
from ..io import atomic_write_text

__all__ = ["QueryTable", "ROW_KEYS", "METRICS", "TABLE_FORMAT", "pareto_frontier", "atomic_write_text"]

TABLE_FORMAT = "mutualnet-query-table"
ROW_KEYS = ("width", "resolution", "top1", "top5", "macs", "params", "mflops", "latency_ms", "pareto")
METRICS = {"top1": "top-1 (%)", "box_ap": "box AP", "mask_ap": "mask AP"}  # higher is better
_COSTS = {"macs": "macs", "mflops": "macs", "latency_ms": "latency_ms", "latency": "latency_ms"}


def pareto_frontier(rows: list[dict], cost: str = "macs", metric: str = "top1") -> list[dict]:
    """Rows that no cheaper-or-equal row matches in ``metric``, sorted by increasing cost (and accuracy).

    The project's one definition of the frontier: query tables, detection tables and plots all use it.
    """
    key = _COSTS.get(cost)
    if key is None:
        raise MutualNetError(f"unknown cost {cost!r}; use 'macs' or 'latency_ms'")
    usable = [r for r in rows if r.get(key) is not None]
    usable.sort(key=lambda r: (r[key], -r[metric], r["width"], r["resolution"]))
    front, best = [], float("-inf")
    for r in usable:
        if r[metric] > best:
            front.append(r)
            best = r[metric]
    return front


def _describe(row: dict, metric: str = "top1") -> str:
    lat = f", {row['latency_ms']:.3g} ms" if row.get("latency_ms") is not None else ""
    score = f"top-1 {row['top1']:.2f}%" if metric == "top1" else f"{METRICS[metric]} {row[metric]:.4g}"
    return f"width {row['width']:g} at {row['resolution']} px ({row['mflops']:.4g} MFLOPs{lat}, {score})"


@dataclass
class QueryTable:
    """Rows of (width, resolution) -> accuracy and cost, with table-level metadata.

    ``meta`` records what the numbers mean: model, checkpoint, dataset, number of validation and
    calibration images, latency device / batch size / threads, calibration cost.
    """

    rows: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    metric: str = "top1"  # the accuracy column selection and the frontier rank by (see METRICS)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise MutualNetError(f"unknown table metric {self.metric!r}; use one of {', '.join(METRICS)}")
        self.rows = [self._normalise(r) for r in self.rows]
        self.mark_pareto()

    def _normalise(self, row: dict) -> dict:
        try:
            r = dict(row)
            r["width"], r["resolution"] = float(r["width"]), int(r["resolution"])
            r[self.metric] = float(r[self.metric])
            for k in ("top1", "top5"):
                if r.get(k) is not None:
                    r[k] = float(r[k])
            r["macs"], r["params"] = int(r["macs"]), int(r["params"])
        except (KeyError, TypeError, ValueError) as e:
            raise MutualNetError(f"malformed query table row {row!r}: {e}") from None
        r["mflops"] = r["macs"] / 1e6
        lat = r.get("latency_ms")
        r["latency_ms"] = None if lat is None or lat == "" else float(lat)
        r.setdefault("pareto", False)
        return r

    # -- building -----------------------------------------------------------------------------------
    def add(self, row: dict) -> dict:
        """Add (or replace) the row of one configuration and re-mark the frontier."""
        row = self._normalise(row)
        self.rows = [r for r in self.rows if (r["width"], r["resolution"]) != (row["width"], row["resolution"])]
        self.rows.append(row)
        self.rows.sort(key=lambda r: (-r["resolution"], r["width"]))
        self.mark_pareto()
        return row

    def mark_pareto(self) -> None:
        front = {id(r) for r in pareto_frontier(self.rows, "macs", self.metric)}
        for r in self.rows:
            r["pareto"] = id(r) in front

    def find(self, width: float, resolution: int) -> dict | None:
        for r in self.rows:
            if abs(r["width"] - width) < 1e-6 and r["resolution"] == int(resolution):
                return r
        return None

    @property
    def has_latency(self) -> bool:
        return bool(self.rows) and all(r.get("latency_ms") is not None for r in self.rows)

    # -- using --------------------------------------------------------------------------------------
    def frontier(self, cost: str = "macs") -> list[dict]:
        """The Pareto frontier by ``cost`` (``macs`` or ``latency_ms``), cheapest first."""
        if _COSTS.get(cost) == "latency_ms" and not self.has_latency:
            raise MutualNetError("this query table has no latency measurements; rebuild it with "
                                 "`mutualnet search --latency`")
        return pareto_frontier(self.rows, cost, self.metric)

    def select(self, max_mflops: float | None = None, max_latency_ms: float | None = None) -> dict:
        """The most accurate configuration within every given budget (ties: the cheaper one).

        Raises:
            MutualNetError: no budget given, latency asked of a table without it, or a budget below the
                cheapest configuration (never a silent fallback).
        """
        if max_mflops is None and max_latency_ms is None:
            raise MutualNetError("give a budget: max_mflops and/or max_latency_ms")
        if not self.rows:
            raise MutualNetError("the query table is empty")
        if max_latency_ms is not None and not self.has_latency:
            raise MutualNetError("this query table has no latency measurements; select by --max-mflops or rebuild "
                                 "it with `mutualnet search --latency`")
        fits = self.rows
        if max_mflops is not None:
            fits = [r for r in fits if r["mflops"] <= max_mflops]
            if not fits:
                cheapest = min(self.rows, key=lambda r: r["macs"])
                raise MutualNetError(f"no configuration fits {max_mflops:g} MFLOPs; the cheapest is "
                                     f"{_describe(cheapest, self.metric)}")
        if max_latency_ms is not None:
            fits = [r for r in fits if r["latency_ms"] <= max_latency_ms]
            if not fits:
                pool = self.rows if max_mflops is None else [r for r in self.rows if r["mflops"] <= max_mflops]
                cheapest = min(pool, key=lambda r: r["latency_ms"])
                raise MutualNetError(f"no configuration fits {max_latency_ms:g} ms"
                                     f"{'' if max_mflops is None else f' within {max_mflops:g} MFLOPs'}; "
                                     f"the fastest is {_describe(cheapest, self.metric)}")
        cost = "macs" if max_latency_ms is None else "latency_ms"
        return dict(max(fits, key=lambda r: (r[self.metric], -r[cost], -r["macs"])))

    def describe(self, row: dict) -> str:
        """One line for a row: its configuration, cost and accuracy."""
        return _describe(row, self.metric)

    # -- files --------------------------------------------------------------------------------------
    def _columns(self) -> list[str]:
        """ROW_KEYS (a detection table: without top-1/top-5), then any further keys of its rows."""
        keys = [k for k in ROW_KEYS if self.metric == "top1" or k not in ("top1", "top5")]
        extra = [k for r in self.rows for k in r if k not in keys]
        return keys + list(dict.fromkeys(extra))

    def to_dict(self) -> dict:
        cols = self._columns()
        return {"format": TABLE_FORMAT, "version": 1, "metric": self.metric, "meta": dict(self.meta),
                "rows": [{k: r.get(k) for k in cols} for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "query table") -> QueryTable:
        if not isinstance(d, dict) or d.get("format") != TABLE_FORMAT or not isinstance(d.get("rows"), list):
            raise MutualNetError(f"{source} is not a mutualnet query table (make one with `mutualnet search`)")
        return cls(rows=d["rows"], meta=dict(d.get("meta") or {}), metric=d.get("metric") or "top1")

    def to_csv(self) -> str:
        buf = io.StringIO()
        cols = self._columns()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON at ``path`` and as CSV beside it (same name, ``.csv``), atomically."""
        path = Path(path)
        atomic_write_text(path.with_suffix(".csv"), self.to_csv())
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> QueryTable:
        path = Path(path)
        if path.is_dir() and (path / "query_table.json").is_file():
            path = path / "query_table.json"
        if not path.is_file():
            raise MutualNetError(f"query table not found: {path} (make one with `mutualnet search`)")
        try:
            d = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MutualNetError(f"cannot read query table {path}: not valid JSON ({e})") from None
        return cls.from_dict(d, source=str(path))

    def __len__(self) -> int:
        return len(self.rows)
