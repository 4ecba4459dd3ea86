"""``mutualnet profile``: MACs, parameters and (optionally) latency of configurations."""

from __future__ import annotations

import argparse
import json

from ..errors import MutualNetError
from ..models import create_model, model_info
from ..profiling import measure_latency, profile
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
    info = model_info(args.model)
    depth_range = None
    if args.depth is not None:  # any depth of the architecture: build it elastic
        full = getattr(create_model(args.model), "depth_range", None)
        depth_range = None if full is None else (1, full.hi)
    model = create_model(args.model, num_classes=args.num_classes, width_range=args.width_range,
                         in_chans=args.in_chans, depth_range=depth_range)
    lo, hi = model.width_range
    if args.grid:
        if args.width is not None or args.resolution is not None:
            raise MutualNetError("--grid profiles every configuration; drop --width/--resolution")
        grid = model.width_range.grid(args.width_step)
        configs = [(w, r) for r in (args.resolutions or info.resolutions) for w in grid]
    else:
        configs = [(hi if args.width is None else args.width,
                    info.input_size if args.resolution is None else args.resolution)]
    rows = []
    for w, r in configs:
        if r < model.min_resolution:
            raise MutualNetError(
                f"resolution {r} is too small for {args.model} (needs at least {model.min_resolution})")
        row = profile(model, w, r, depth=args.depth).to_dict()
        if args.latency:
            lat = measure_latency(model, w, r, device=args.device, batch_size=args.batch_size, threads=args.threads,
                                  depth=args.depth)
            row |= {"latency_ms": lat.median_ms, "device": lat.device, "batch_size": lat.batch_size,
                    "threads": lat.threads}
        rows.append(row)
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    print(f"{args.model}  widths [{lo:g}, {hi:g}]")
    head = f"{'width':>6} {'res':>5} {'MFLOPs':>10} {'params(M)':>10}"
    if args.latency:
        head += f" {'latency(ms)':>12}"
    print(head)
    for row in rows:
        line = f"{row['width']:>6.2f} {row['resolution']:>5d} {row['mflops']:>10.2f} {row['params'] / 1e6:>10.3f}"
        if args.latency:
            line += f" {row['latency_ms']:>12.3f}"
        print(line)
    if args.latency:
        print(f"latency: median of {20} runs after warm-up on {rows[0]['device']}, batch size {args.batch_size}, "
              f"{rows[0]['threads']} threads")
    return 0
