"""``mutualnet latency``: measure every configuration of a query table on this device.

Fills the table's ``latency_ms`` column (median of ``--repeats`` runs after ``--warmup``) and records
device, batch size and threads in its metadata; the table (JSON and CSV) is rewritten atomically, so
``mutualnet select --max-latency-ms`` and ``mutualnet export --max-latency-ms`` use this device's numbers.
"""

from __future__ import annotations

import argparse

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..deploy.latency import fill_latency
from ..errors import MutualNetError
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="measure the latency of every configuration of a query table",
                       description=__doc__)
    p.add_argument("--table", required=True, help="query table JSON to fill (rewritten in place, atomically)")
    p.add_argument("--checkpoint", required=True, help="the checkpoint the table was built from")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=A.threads, help="CPU threads (default: torch's)")
    p.add_argument("--batch-size", type=A.positive_int, default=1)
    p.add_argument("--warmup", type=A.nonneg_int, default=5)
    p.add_argument("--repeats", type=A.positive_int, default=20)
    p.add_argument("--out", help="write the filled table here instead of rewriting --table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..search.table import QueryTable

    table = QueryTable.load(args.table)
    if not table.rows:
        raise MutualNetError(f"query table {args.table} is empty")
    if args.threads is not None and args.threads < 1:
        raise MutualNetError(f"--threads must be positive, got {args.threads}")
    model = model_from_checkpoint(load_checkpoint(args.checkpoint)).eval()
    rng = model.width_range
    if bad := [r for r in table.rows if not rng.contains(r["width"])]:
        raise MutualNetError(f"table width {bad[0]['width']:g} is outside the checkpoint's range "
                             f"[{rng.lo:g}, {rng.hi:g}]; is it the table of another model?")
    info = fill_latency(table, model, device=args.device, batch_size=args.batch_size, threads=args.threads,
                        warmup=args.warmup, repeats=args.repeats)
    out = table.save(args.out or args.table)
    fast = min(table.rows, key=lambda r: r["latency_ms"])
    slow = max(table.rows, key=lambda r: r["latency_ms"])
    print(f"measured {len(table.rows)} configurations on {info['device']} (batch {info['batch_size']}, "
          f"{info['threads']} threads, median of {info['repeats']}): {fast['latency_ms']:.3f} ms "
          f"(w{fast['width']:g} r{fast['resolution']}) to {slow['latency_ms']:.3f} ms "
          f"(w{slow['width']:g} r{slow['resolution']}); wrote {out}")
    return 0
