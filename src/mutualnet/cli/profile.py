"""``mutualnet profile``: MACs, parameters and (optionally) latency of configurations."""

from __future__ import annotations

import argparse
import json

from ..models import model_info
from ..profiling import profile_model
from . import _args as A


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="MACs / params / latency of a model configuration", description=__doc__)
    p.add_argument("--model", required=True, help="registered model name (see `mutualnet models`)")
    p.add_argument("--width", type=A.width, help="width multiplier (default: the top of the width range)")
    p.add_argument("--resolution", type=A.resolution, help="input side in pixels (default: the model's input size)")
    p.add_argument("--depth", type=A.positive_int, help="blocks each stage runs (default: full depth); profiles a "
                   "model built with elastic depth")
    p.add_argument("--width-range", type=A.widths, help="LO,HI widths the model is built for (default: model's)")
    p.add_argument("--num-classes", type=A.num_classes, help="classifier outputs (default: model's)")
    p.add_argument("--in-chans", type=A.in_chans, help="image channels (default: model's)")
    p.add_argument("--grid", action="store_true", help="every width (step --width-step) x every resolution")
    p.add_argument("--width-step", type=A.width_step, default=0.05)
    p.add_argument("--resolutions", type=A.resolutions, help="resolutions for --grid (default: model's recipe)")
    p.add_argument("--latency", action="store_true", help="also measure median forward latency")
    p.add_argument("--device", default="cpu", help="device for --latency: cpu or cuda")
    p.add_argument("--batch-size", type=A.positive_int, default=1, help="batch size for --latency")
    p.add_argument("--threads", type=A.threads, help="CPU threads for --latency (default: torch's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = profile_model(args.model, args.width, args.resolution, grid=args.grid, width_step=args.width_step,
                         resolutions=args.resolutions, latency=args.latency, device=args.device,
                         batch_size=args.batch_size, threads=args.threads, num_classes=args.num_classes,
                         width_range=args.width_range, in_chans=args.in_chans, depth=args.depth)
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    lo, hi = args.width_range or model_info(args.model).width_range
    print(f"{args.model}  widths [{lo:g}, {hi:g}]")
    lat = f" {'latency(ms)':>12}" if args.latency else ""
    print(f"{'width':>6} {'res':>5} {'MFLOPs':>10} {'params(M)':>10}{lat}")
    for row in rows:
        print(f"{row['width']:>6.2f} {row['resolution']:>5d} {row['mflops']:>10.2f} {row['params'] / 1e6:>10.3f}"
              + (f" {row['latency_ms']:>12.3f}" if args.latency else ""))
    if args.latency:
        print(f"latency: median of {20} runs after warm-up on {rows[0]['device']}, batch size {args.batch_size}, "
              f"{rows[0]['threads']} threads")
    return 0
