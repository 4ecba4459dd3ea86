"""The query table: accuracy and cost of every (width, resolution) configuration, and budget selection.

MutualNet's deployment story (paper, Sec. 3.4): evaluate the trained network at every width x resolution,
keep the table, and at deployment pick the most accurate configuration whose cost fits the budget. The
table is a JSON file a person can read (plus a CSV beside it); rows are plain dicts::

    {"width": 0.35, "resolution": 192, "top1": 61.2, "top5": 83.0, "macs": 59_812_352, "params": 1_113_000,
     "mflops": 59.8, "latency_ms": 3.1 or None, "pareto": true}

``pareto`` marks the frontier by MACs: no cheaper-or-equal configuration is at least as accurate. A table of a
model with elastic depth has a ``depth`` column too (blocks per stage; the full depth is a number like the
others); a row without one is at full depth, so tables written before depth existed read as they were.

The accuracy a table ranks by is its ``metric``: ``top1`` for classification, ``box_ap`` or ``mask_ap`` for
detection tables (whose rows carry COCO AP in [0, 1] instead of top-1/top-5), ``miou`` for segmentation tables
(mean IoU in [0, 1], :mod:`mutualnet.segmentation`), so selection, frontiers and plots work the same on all.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MutualNetError
from ..io import MAX_JSON_DEPTH, atomic_write_text, json_depth, read_json
from ..validate import check_float, check_int, check_pixels, check_width

__all__ = ["QueryTable", "config_of", "config_text", "ROW_KEYS", "OPTIONAL_KEYS", "DETECTION_KEYS",
           "SEGMENTATION_KEYS", "METRICS", "RUNTIMES", "TABLE_FORMAT", "FASTEST", "latency_column", "pareto_frontier",
           "atomic_write_text", "fits_budget", "MFLOPS_DECIMALS", "LATENCY_DECIMALS"]

TABLE_FORMAT = "mutualnet-query-table"
ROW_KEYS = ("width", "resolution", "top1", "top5", "macs", "params", "mflops", "latency_ms", "pareto")
RUNTIMES = ("eager", "torchscript", "onnxruntime")  # see mutualnet.deploy.runtime
FASTEST = "fastest"  # select's runtime: each configuration on the runtime it was measured fastest on
# columns a table has only when it was built that way: validation images of a row (successive halving), the
# latency on each runtime it was measured on (``latency_ms`` is the one of the runtime it is deployed with)
# and, for a table measured on held-out images, the test-set accuracy of each row (reported, never ranked by)
OPTIONAL_KEYS = ("depth", "val_images", "test_top1", "test_top5") + tuple(f"latency_{rt}_ms" for rt in RUNTIMES)


def config_of(row: dict) -> tuple[float, int, int | None]:
    """A row's configuration ``(width, resolution, depth)``; depth None: full depth (a table without depth)."""
    return row["width"], row["resolution"], row.get("depth")


def config_text(row: dict) -> str:
    """A row's configuration in words, ``width 0.5 at 16 px`` (``, depth 2`` below full depth in a 3-D table): the
    one wording of ``select``, ``eval``, ``predict`` and :meth:`QueryTable.describe`."""
    depth = f", depth {row['depth']}" if row.get("depth") is not None else ""
    return f"width {row['width']:g} at {row['resolution']} px{depth}"


def latency_column(runtime: str | None = None) -> str:
    """The row key of the latency measured on ``runtime`` (None: ``latency_ms``, the table's own runtime)."""
    if runtime is None:
        return "latency_ms"
    if runtime not in RUNTIMES:
        raise MutualNetError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    return f"latency_{runtime}_ms"


_COSTS = {"macs": "macs", "mflops": "macs", "latency_ms": "latency_ms", "latency": "latency_ms",
          "backbone_macs": "backbone_macs", "backbone_mflops": "backbone_macs"} | {  # backbone: detection tables
    f"latency_{rt}_ms": f"latency_{rt}_ms" for rt in RUNTIMES}
# a detection table's rows: ROW_KEYS without top-1/top-5, with COCO AP (in [0, 1]) and how it was measured
DETECTION_KEYS = ("box_ap", "mask_ap", "box_ap50", "mask_ap50", "num_detections", "backbone_macs", "backbone_mflops",
                  "pareto_backbone", "mac_input_size", "calibrated")
# a segmentation table's rows (mutualnet.segmentation): mean IoU and pixel accuracy (in [0, 1]) in place of top-1
SEGMENTATION_KEYS = ("miou", "pixel_acc", "calibrated")
METRICS = {"top1": "top-1 (%)", "box_ap": "box AP", "mask_ap": "mask AP", "miou": "mean IoU"}  # higher is better


def _row_keys(metric: str) -> tuple[str, ...]:
    if metric == "top1":
        return ROW_KEYS
    extra = SEGMENTATION_KEYS if metric == "miou" else DETECTION_KEYS
    return tuple(k for k in ROW_KEYS if k not in ("top1", "top5")) + extra


def pareto_frontier(rows: list[dict], cost: str = "macs", metric: str = "top1") -> list[dict]:
    """Rows that no cheaper-or-equal row matches in top-1, sorted by increasing cost (and accuracy)."""
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


LATENCY_MISSING = ("this query table has no latency measurements; measure them on the target device with "
                   "`mutualnet latency --checkpoint calibrated.pt` (it updates the table inside calibrated.pt and "
                   "query_table.json beside it), or select by MFLOPs")

# costs are printed with these decimals (select, predict, errors), and budgets are compared at them
MFLOPS_DECIMALS = 2
LATENCY_DECIMALS = 3


def fits_budget(cost: float, budget: float, decimals: int) -> bool:
    """Whether ``cost`` fits ``budget`` at the precision costs are printed with.

    A user who types the printed cost of a configuration (``--max-mflops 2.54`` for 2.542) means that
    configuration; comparing the unrounded cost would refuse it.
    """
    return cost <= budget or round(cost, decimals) <= budget + 1e-9  # (rounding up must not refuse the exact cost)


def _as_int(v: object) -> object:
    """JSON and CSV may write counts as ``1.0e6``; a whole finite float is that integer, anything else stays
    as it is for the type check to refuse."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            return _as_int(float(v))
    return v


def _short(row: object) -> str:
    text = repr(row)
    return text if len(text) <= 160 else text[:157] + "..."


def _describe(row: dict, lat_key: str = "latency_ms", metric: str = "top1") -> str:
    lat = f", {row[lat_key]:.{LATENCY_DECIMALS}f} ms" if row.get(lat_key) is not None else ""
    score = f"top-1 {row['top1']:.2f}%" if metric == "top1" else f"{METRICS[metric]} {100 * row[metric]:.2f}%"
    return f"{config_text(row)} ({row['mflops']:.{MFLOPS_DECIMALS}f} MFLOPs{lat}, {score})"


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
        """A row with checked types and ranges: finite numbers only, so a NaN accuracy can never be selected."""
        if not isinstance(row, dict):
            raise MutualNetError(f"malformed query table row {row!r}: expected a mapping")
        try:
            r = dict(row)
            r["width"] = check_width(r["width"], "width")
            r["resolution"] = check_pixels(_as_int(r["resolution"]), "resolution")
            if self.metric == "top1":
                r["top1"] = check_float(r["top1"], "top1", 0.0, 100.0)
                r["top5"] = check_float(r["top5"], "top5", 0.0, 100.0)
            else:
                r[self.metric] = check_float(r[self.metric], self.metric, 0.0, 1.0)
            r["macs"] = check_int(_as_int(r["macs"]), "macs", 0)
            r["params"] = check_int(_as_int(r["params"]), "params", 0)
            for k in ("latency_ms", *(c for c in OPTIONAL_KEYS if c.startswith("latency_"))):
                lat = r.get(k)
                if k == "latency_ms" or k in r:
                    r[k] = None if lat is None or lat == "" else check_float(lat, k, 0.0)
            if r.get("depth") not in (None, ""):
                r["depth"] = check_int(_as_int(r["depth"]), "depth", 1, 1024)
            else:
                r.pop("depth", None)
            for k in ("test_top1", "test_top5"):
                if r.get(k) in (None, ""):
                    r.pop(k, None)
                else:
                    r[k] = check_float(r[k], k, 0.0, 100.0)
            if r.get("val_images") not in (None, ""):
                r["val_images"] = check_int(_as_int(r["val_images"]), "val_images", 1)
            else:
                r.pop("val_images", None)
        except KeyError as e:
            raise MutualNetError(f"malformed query table row {_short(row)}: missing {e}") from None
        except MutualNetError as e:
            raise MutualNetError(f"malformed query table row {_short(row)}: {e}") from None
        self._check_in_range(r)
        r["mflops"] = r["macs"] / 1e6
        r.setdefault("pareto", False)
        return r

    def _check_in_range(self, row: dict) -> None:
        """Refuse a row whose width is outside the width range the table's model was trained for (an edited
        table could otherwise recommend a configuration the network never learnt)."""
        args = self.meta.get("model_args")
        wr = args.get("width_range") if isinstance(args, dict) else None
        if wr is None:
            return
        try:
            lo, hi = (check_width(w, "width_range") for w in wr)
        except (TypeError, ValueError, MutualNetError):
            raise MutualNetError(f"malformed query table meta: model_args.width_range {wr!r}") from None
        if not lo - 1e-6 <= row["width"] <= hi + 1e-6:
            raise MutualNetError(f"malformed query table row {_short(row)}: width {row['width']:g} is outside the "
                                 f"model's trained range [{lo:g}, {hi:g}]")

    # -- building -----------------------------------------------------------------------------------
    def add(self, row: dict) -> dict:
        """Add (or replace) the row of one configuration and re-mark the frontier."""
        row = self._normalise(row)
        self.rows = [r for r in self.rows if config_of(r) != config_of(row)]
        self.rows.append(row)
        self.rows.sort(key=lambda r: (-r["resolution"], -r.get("depth", 0), r["width"]))
        self.mark_pareto()
        return row

    def mark_pareto(self) -> None:
        front = {id(r) for r in pareto_frontier(self.rows, "macs", self.metric)}
        for r in self.rows:
            r["pareto"] = id(r) in front

    @property
    def full_depth(self) -> int | None:
        """The deepest depth of the rows (a table with a depth column), None for a table without depth."""
        return max((r["depth"] for r in self.rows if r.get("depth") is not None), default=None)

    def find(self, width: float, resolution: int, depth: int | None = None) -> dict | None:
        """The row of (``width``, ``resolution``, ``depth``); depth None: the full depth."""
        full = self.full_depth
        want = full if depth is None else int(depth)
        for r in self.rows:
            if (abs(r["width"] - width) < 1e-6 and r["resolution"] == int(resolution)
                    and r.get("depth", full) == want):
                return r
        return None

    @property
    def has_latency(self) -> bool:
        return self.has_latency_on(None)

    def has_latency_on(self, runtime: str | None) -> bool:
        """Whether every row has a latency measured on ``runtime`` (None: the table's ``latency_ms``)."""
        col = latency_column(runtime)
        return bool(self.rows) and all(r.get(col) is not None for r in self.rows)

    @property
    def runtimes(self) -> list[str]:
        """The runtimes every row has a latency column of."""
        return [rt for rt in RUNTIMES if self.has_latency_on(rt)]

    # -- using --------------------------------------------------------------------------------------
    def frontier(self, cost: str = "macs") -> list[dict]:
        """The Pareto frontier by ``cost`` (``macs`` or ``latency_ms``), cheapest first."""
        if _COSTS.get(cost, "").startswith("latency") and not all(r.get(_COSTS[cost]) is not None
                                                                  for r in self.rows):
            raise MutualNetError(LATENCY_MISSING)
        return pareto_frontier(self.rows, cost, self.metric)

    def fastest_runtimes(self) -> list[dict]:
        """Each row with the runtime it runs fastest on, among those measured for every row (``runtime``), and
        that latency (``latency_fastest_ms``): the deployment each configuration would pick."""
        if not self.runtimes:
            raise MutualNetError("this query table has no per-runtime latency; measure them with "
                                 "`mutualnet latency --runtime eager,torchscript,onnxruntime`")
        out = []
        for r in self.rows:
            best = min(self.runtimes, key=lambda rt: r[latency_column(rt)])
            out.append(dict(r, runtime=best, latency_fastest_ms=r[latency_column(best)]))
        return out

    def select(self, max_mflops: float | None = None, max_latency_ms: float | None = None,
               runtime: str | None = None) -> dict:
        """The most accurate configuration within every given budget (ties: the cheaper one).

        ``runtime`` picks the latency column the budget is checked against (``latency_<runtime>_ms``, filled
        by ``mutualnet latency --runtime``); None uses ``latency_ms``; ``"fastest"``: each configuration on the
        runtime it is fastest on (:meth:`fastest_runtimes`), named by the returned row's ``runtime``.

        Raises:
            MutualNetError: no budget given, latency asked of a table without it, or a budget below the
                cheapest configuration (never a silent fallback).
        """
        if max_mflops is None and max_latency_ms is None:
            raise MutualNetError("give a budget: max_mflops and/or max_latency_ms")
        if not self.rows:
            raise MutualNetError("the query table is empty")
        if runtime == FASTEST:
            rows, lat_key = self.fastest_runtimes(), "latency_fastest_ms"
        else:
            rows, lat_key = self.rows, latency_column(runtime)
        if max_latency_ms is not None and runtime != FASTEST and not self.has_latency_on(runtime):
            if runtime is not None:
                raise MutualNetError(f"this query table has no {runtime} latency measurements; measure them with "
                                     f"`mutualnet latency --runtime {runtime}`")
            raise MutualNetError(LATENCY_MISSING)
        fits = rows
        if max_mflops is not None:
            fits = [r for r in fits if fits_budget(r["mflops"], max_mflops, MFLOPS_DECIMALS)]
            if not fits:
                cheapest = min(rows, key=lambda r: r["macs"])
                raise MutualNetError(f"no configuration fits {max_mflops:g} MFLOPs; the cheapest is "
                                     f"{_describe(cheapest, metric=self.metric)}")
        if max_latency_ms is not None:
            fits = [r for r in fits if fits_budget(r[lat_key], max_latency_ms, LATENCY_DECIMALS)]
            if not fits:
                pool = rows if max_mflops is None else [r for r in rows
                                                          if fits_budget(r["mflops"], max_mflops, MFLOPS_DECIMALS)]
                cheapest = min(pool, key=lambda r: r[lat_key])
                raise MutualNetError(f"no configuration fits {max_latency_ms:g} ms"
                                     f"{'' if max_mflops is None else f' within {max_mflops:g} MFLOPs'}; "
                                     f"the fastest is {_describe(cheapest, lat_key, self.metric)}")
        cost = "macs" if max_latency_ms is None else lat_key
        best = dict(max(fits, key=lambda r: (r[self.metric], -r[cost], -r["macs"])))
        best["frontier"] = "latency" if cost != "macs" else "mflops"  # the most accurate in budget is on it
        return best

    def describe(self, row: dict) -> str:
        """One line for a row: its configuration, cost and accuracy."""
        return _describe(row, metric=self.metric)

    def describe_selection(self, row: dict, runtime: str | None = None) -> str:
        """The line ``mutualnet select`` prints for a row :meth:`select` returned: configuration, accuracy, cost,
        parameters, latency on ``runtime`` when measured, and the frontier it is on."""
        key = "latency_ms" if runtime is None else f"latency_{runtime}_ms"  # "fastest": latency_fastest_ms
        where = "" if runtime is None else f" on {row.get('runtime', runtime)}"
        lat = f", {row[key]:.{LATENCY_DECIMALS}f} ms{where}" if row.get(key) is not None else ""
        acc = (f"top-1 {row['top1']:.2f}%, top-5 {row['top5']:.2f}%" if self.metric == "top1"
               else f"{METRICS[self.metric]} {100 * row[self.metric]:.2f}%")  # COCO AP in [0, 1], as a percent
        depth = f", depth {row['depth']}" if row.get("depth") is not None else ""
        frontier = {"mflops": "accuracy-MFLOPs", "latency": "accuracy-latency"}[row["frontier"]]
        return (f"width {row['width']:g} at {row['resolution']} px{depth}: {acc}, "
                f"{row['mflops']:.{MFLOPS_DECIMALS}f} MFLOPs, {row['params'] / 1e6:.3f}M params{lat} "
                f"(the most accurate within the budget, on the {frontier} frontier)")

    # -- files --------------------------------------------------------------------------------------
    def columns(self) -> list[str]:
        """The row keys written to files: :data:`ROW_KEYS` (a detection table: its AP keys its rows have), then
        the optional ones some row has."""
        keys = list(ROW_KEYS) if self.metric == "top1" else [k for k in _row_keys(self.metric)
                                                              if any(k in r for r in self.rows)]
        optional = [k for k in OPTIONAL_KEYS if any(r.get(k) is not None for r in self.rows)]
        if "depth" in optional:  # beside the other two dimensions of a configuration
            optional.remove("depth")
            keys.insert(keys.index("resolution") + 1, "depth")
        return keys + optional

    def to_dict(self) -> dict:
        cols = self.columns()
        metric = {} if self.metric == "top1" else {"metric": self.metric}  # classification tables stay as they were
        return {"format": TABLE_FORMAT, "version": 1, **metric, "meta": dict(self.meta),
                "rows": [{k: r.get(k) for k in cols} for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict, source: str = "query table") -> QueryTable:
        """A table from its dict form, checked: known fields only, finite numbers, bounded nesting."""
        if not isinstance(d, dict) or d.get("format") != TABLE_FORMAT or not isinstance(d.get("rows"), list):
            raise MutualNetError(f"{source} is not a mutualnet query table (make one with `mutualnet search`)")
        if unknown := sorted(set(d) - {"format", "version", "metric", "meta", "rows"}):
            raise MutualNetError(f"{source} has unknown field {unknown[0]!r}")
        if not isinstance(d.get("meta") or {}, dict):
            raise MutualNetError(f"{source}: 'meta' must be a mapping")
        if json_depth(d) > MAX_JSON_DEPTH:
            raise MutualNetError(f"{source} is nested more than {MAX_JSON_DEPTH} levels deep")
        metric = d.get("metric") or "top1"
        if metric not in METRICS:
            raise MutualNetError(f"{source} has unknown metric {metric!r}; known: {', '.join(METRICS)}")
        keys = _row_keys(metric) + OPTIONAL_KEYS
        for i, row in enumerate(d["rows"]):
            if isinstance(row, dict) and (unknown := sorted(set(row) - set(keys))):
                raise MutualNetError(f"{source} row {i} has unknown field {unknown[0]!r}; "
                                     f"fields: {', '.join(keys)}")
        try:
            return cls(rows=d["rows"], meta=dict(d.get("meta") or {}), metric=metric)
        except MutualNetError as e:
            raise MutualNetError(f"{source}: {e}") from None

    def to_csv(self) -> str:
        buf = io.StringIO()
        cols = self.columns()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON at ``path`` and as CSV beside it (same name, ``.csv``), each atomically.

        The JSON is the source of truth and is written first: a write that fails (a full disk) leaves no CSV
        newer than its JSON, and a CSV that could not follow the JSON is removed rather than left stale.
        """
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        csv_path = path.with_suffix(".csv")
        try:
            atomic_write_text(csv_path, self.to_csv())
        except MutualNetError:
            with contextlib.suppress(OSError):
                csv_path.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> QueryTable:
        path = Path(path)
        if path.is_dir() and (path / "query_table.json").is_file():
            path = path / "query_table.json"
        if not path.is_file():
            raise MutualNetError(f"query table not found: {path} (make one with `mutualnet search`)")
        return cls.from_dict(read_json(path, "query table"), source=str(path))

    def __len__(self) -> int:
        return len(self.rows)
