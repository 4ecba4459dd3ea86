"""``mutualnet latency``: measure every configuration of a query table on this device.

Fills the table's ``latency_ms`` column (median of ``--repeats`` runs after ``--warmup``; identical
networks timed once; disturbed measurements timed again) and records device, batch size, threads and
each network's spread in its metadata. Every copy of the table is updated, atomically: the one inside
the checkpoint (``calibrated.pt`` embeds its table), ``--table`` if given, and ``query_table.json``
beside the checkpoint. ``mutualnet select --max-latency-ms``, ``export --max-latency-ms``,
``predict --budget-latency-ms`` and ``AdaptiveNet.set_budget(latency_ms=...)`` then all see this
device's numbers. ``--out`` writes the filled table there instead and leaves every copy untouched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import atomic_save, load_checkpoint, model_from_checkpoint
from ..deploy.latency import fill_latency
from ..errors import MutualNetError
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="measure the latency of every configuration of a query table",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the checkpoint the table was built from (calibrated.pt)")
    p.add_argument("--table", help="query table JSON (default: the checkpoint's own table)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=A.threads, help="CPU threads (default: torch's)")
    p.add_argument("--batch-size", type=A.positive_int, default=1)
    p.add_argument("--warmup", type=A.nonneg_int, default=5)
    p.add_argument("--repeats", type=A.positive_int, default=20)
    p.add_argument("--runtime", default="eager",
                   help="runtimes to measure, comma-separated: eager (the slimmable model, as AdaptiveNet runs it), "
                        "torchscript, onnxruntime (the exported sub-network, CPU); each fills its column "
                        "latency_<runtime>_ms, and the first is the table's latency_ms (default: eager)")
    p.add_argument("--out", help="write the filled table here instead of updating the table's copies")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _same_configs(a, b) -> bool:
    return {(r["width"], r["resolution"]) for r in a.rows} == {(r["width"], r["resolution"]) for r in b.rows}


def _runtimes(text: str) -> list[str]:
    from ..search.table import RUNTIMES

    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(n not in RUNTIMES for n in names):
        raise MutualNetError(f"--runtime: expected runtimes from {', '.join(RUNTIMES)}, got {text!r}")
    return names


def _copy_latency(src, dst) -> None:
    """Put ``src``'s measured latencies (and how they were measured) into ``dst``, a copy of the same table."""
    for row in dst.rows:
        measured = src.find(row["width"], row["resolution"])
        row.update({k: v for k, v in measured.items() if k.startswith("latency_")})
    dst.meta["latency"] = src.meta["latency"]
    dst.mark_pareto()


def run(args: argparse.Namespace) -> int:
    from ..search.table import QueryTable

    runtimes = _runtimes(args.runtime)
    if args.threads is not None and args.threads < 1:
        raise MutualNetError(f"--threads must be positive, got {args.threads}")
    ckpt = load_checkpoint(args.checkpoint)
    embedded = (QueryTable.from_dict(ckpt["query_table"], source=f"the table inside {args.checkpoint}")
                if isinstance(ckpt.get("query_table"), dict) else None)
    if args.table is None and embedded is None:
        raise MutualNetError(f"{args.checkpoint} holds no query table; pass --table query_table.json (or use the "
                             "calibrated.pt that `mutualnet search` writes)")
    table = QueryTable.load(args.table) if args.table is not None else embedded
    if not table.rows:
        raise MutualNetError(f"query table {args.table or args.checkpoint} is empty")
    model = model_from_checkpoint(ckpt).eval()
    rng = model.width_range
    if bad := [r for r in table.rows if not rng.contains(r["width"])]:
        raise MutualNetError(f"table width {bad[0]['width']:g} is outside the checkpoint's range "
                             f"[{rng.lo:g}, {rng.hi:g}]; is it the table of another model?")
    info = fill_latency(table, model, device=args.device, batch_size=args.batch_size, threads=args.threads,
                        warmup=args.warmup, repeats=args.repeats, progress=not args.no_progress,
                        runtimes=runtimes)
    written = _write_copies(args, ckpt, table, embedded)
    fast = min(table.rows, key=lambda r: r["latency_ms"])
    slow = max(table.rows, key=lambda r: r["latency_ms"])
    print(f"measured {info['networks_measured']} distinct networks for {len(table.rows)} configurations on "
          f"{info['device']} (batch {info['batch_size']}, {info['threads']} threads, median of {info['repeats']} "
          f"after {info['warmup']} warm-up, {info['remeasured']} re-measured): {fast['latency_ms']:.3f} ms "
          f"(w{fast['width']:g} r{fast['resolution']}) to {slow['latency_ms']:.3f} ms "
          f"(w{slow['width']:g} r{slow['resolution']}) on {info['runtime']}")
    if len(runtimes) > 1:
        sums = {rt: sum(r[f"latency_{rt}_ms"] for r in table.rows) for rt in runtimes}
        print("sum over configurations: " + ", ".join(f"{rt} {v:.2f} ms ({v / sums[runtimes[0]]:.3f}x)"
                                                      for rt, v in sums.items()))
    print("updated " + ", ".join(str(p) for p in written))
    return 0


def _write_copies(args: argparse.Namespace, ckpt: dict, table, embedded) -> list[Path]:
    """Write the measured table to ``--out``, else to every copy of it: --table, the checkpoint, the JSON beside."""
    from ..search.table import QueryTable

    if args.out:
        return [table.save(args.out)]
    written = []
    if args.table is not None:
        written.append(table.save(args.table))
    beside = Path(args.checkpoint).parent / "query_table.json"
    if beside.is_file() and (args.table is None or beside.resolve() != Path(args.table).resolve()):
        other = QueryTable.load(beside)
        if _same_configs(other, table):
            _copy_latency(table, other)
            written.append(other.save(beside))
    if embedded is not None and _same_configs(embedded, table):
        if embedded is not table:
            _copy_latency(table, embedded)
        atomic_save(ckpt | {"query_table": embedded.to_dict()}, args.checkpoint)
        written.append(Path(args.checkpoint))
    return written
