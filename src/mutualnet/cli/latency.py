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
import collections

from ..deploy.latency import measure_checkpoint_latency
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
    p.add_argument("--runtime", type=_runtimes, default="eager",
                   help="runtimes to measure, comma-separated: eager (the slimmable model, as AdaptiveNet runs it), "
                        "torchscript, onnxruntime (the exported sub-network, CPU); each fills its column "
                        "latency_<runtime>_ms, and the first is the table's latency_ms (default: eager)")
    p.add_argument("--out", help="write the filled table here instead of updating the table's copies")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _runtimes(text: str) -> list[str]:
    from ..search.table import RUNTIMES

    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(n not in RUNTIMES for n in names):
        raise argparse.ArgumentTypeError(f"expected runtimes from {', '.join(RUNTIMES)}, got {text!r}")
    return names


def run(args: argparse.Namespace) -> int:
    table, info, written = measure_checkpoint_latency(
        args.checkpoint, args.table, out=args.out, runtimes=args.runtime, device=args.device,
        batch_size=args.batch_size, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        progress=not args.no_progress)
    fast = min(table.rows, key=lambda r: r["latency_ms"])
    slow = max(table.rows, key=lambda r: r["latency_ms"])
    print(f"measured {info['networks_measured']} distinct networks for {len(table.rows)} configurations on "
          f"{info['device']} (batch {info['batch_size']}, {info['threads']} threads, median of {info['repeats']} "
          f"after {info['warmup']} warm-up, {info['remeasured']} re-measured): {fast['latency_ms']:.3f} ms "
          f"(w{fast['width']:g} r{fast['resolution']}) to {slow['latency_ms']:.3f} ms "
          f"(w{slow['width']:g} r{slow['resolution']}) on {info['runtime']}")
    if len(info["runtimes"]) > 1:
        sums = {rt: sum(r[f"latency_{rt}_ms"] for r in table.rows) for rt in info["runtimes"]}
        first = sums[info["runtimes"][0]]
        print("sum over configurations: " + ", ".join(f"{rt} {v:.2f} ms ({v / first:.3f}x)" for rt, v in sums.items()))
        picks = collections.Counter(r["runtime"] for r in table.fastest_runtimes())
        print("fastest per configuration (`mutualnet select --runtime fastest` deploys each on it): "
              + ", ".join(f"{rt} for {n}" for rt, n in picks.most_common()))
    print("updated " + ", ".join(str(p) for p in written))
    return 0
