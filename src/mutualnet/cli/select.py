"""``mutualnet select``: the most accurate configuration of a query table within a budget."""

from __future__ import annotations

import argparse
import json

from ..errors import MutualNetError
from ..search import QueryTable
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="best configuration of a query table for a FLOPs / latency budget",
                       description=__doc__)
    p.add_argument("--table", required=True, help="query_table.json (or the search output folder)")
    p.add_argument("--max-mflops", type=A.positive_float, help="budget in MFLOPs (multiply-accumulates / 1e6)")
    p.add_argument("--max-latency-ms", type=A.positive_float,
                   help="budget in measured milliseconds (table needs latency)")
    p.add_argument("--runtime", help="check --max-latency-ms against this runtime's column (eager, torchscript, "
                   "onnxruntime; filled by `mutualnet latency --runtime`; default: the table's latency_ms), or "
                   "'fastest': each configuration on the runtime it was measured fastest on")
    p.add_argument("--json", action="store_true", help="print the selected row as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_mflops is None and args.max_latency_ms is None:
        raise MutualNetError("give a budget: --max-mflops X and/or --max-latency-ms Y")
    for name in ("max_mflops", "max_latency_ms"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise MutualNetError(f"--{name.replace('_', '-')} must be positive, got {v:g}")
    table = QueryTable.load(args.table)
    row = table.select(max_mflops=args.max_mflops, max_latency_ms=args.max_latency_ms, runtime=args.runtime)
    print(json.dumps(row, indent=2) if args.json else table.describe_selection(row, args.runtime))
    return 0
