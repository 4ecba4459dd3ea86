"""``mutualnet plot``: accuracy vs MFLOPs of one or more query tables.

One table: every configuration in grey and the Pareto frontier coloured by the resolution it picks
(the paper's Fig. 6). Several tables: one frontier curve each (e.g. MutualNet vs US-Net vs independently
trained networks), labelled from ``--labels`` or the training mode recorded in each table.
"""

from __future__ import annotations

import argparse

from ..errors import MutualNetError
from ..search import QueryTable
from ..search.plot import plot_tables, table_label


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="accuracy vs MFLOPs of query tables (PNG/PDF/SVG)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+", metavar="TABLE", help="query_table.json files (or search output folders)")
    p.add_argument("--labels", nargs="+", help="one legend label per table (default: mode or file name)")
    p.add_argument("--out", required=True, help="image file to write (.png, .pdf, .svg)")
    p.add_argument("--cost", choices=["macs", "latency_ms"], default="macs", help="x axis (default MFLOPs)")
    p.add_argument("--title", help="figure title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.labels is not None and len(args.labels) != len(args.tables):
        raise MutualNetError(f"{len(args.labels)} labels for {len(args.tables)} tables; give one label per table")
    tables = [QueryTable.load(p) for p in args.tables]
    for t, p in zip(tables, args.tables):
        if not t.rows:
            raise MutualNetError(f"query table {p} is empty")
    labels = args.labels or [table_label(t, p) for t, p in zip(tables, args.tables)]
    out = plot_tables(tables, labels, args.out, cost=args.cost, title=args.title)
    print(f"wrote {out}")
    return 0
