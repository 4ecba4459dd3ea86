"""``mutualnet export``: one configuration as a plain network (state dict, TorchScript or ONNX).

Pick the configuration by ``--width``/``--resolution``, or by a budget (``--max-mflops`` /
``--max-latency-ms``) looked up in a query table (``--table``, else the one ``mutualnet search`` embeds
in its ``calibrated.pt``). The configuration must hold calibrated BatchNorm statistics, except the top
width (whose shared running statistics are its own); ``--allow-uncalibrated`` overrides this with a
warning. The file is checked against the slimmable model and written atomically.

``--cascade cascade.json`` (from ``mutualnet cascade``) exports a cascade instead: ``--out`` is a folder with one
TorchScript (or ONNX) file per step and ``cascade.json`` (thresholds, preprocessing, class names), runnable
without mutualnet (docs/cascade.md has the snippet).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..calibrate import is_calibrated
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..deploy.adaptive import load_query_table
from ..deploy.export import FORMATS, export_subnet, save_exported
from ..errors import MutualNetError
from ..extras import require
from ..layers import check_depth, config_key
from ..profiling import profile
from ..search.run import artefact_fields
from . import _args as A

_SUFFIX = {".onnx": "onnx", ".ts": "torchscript", ".torchscript": "torchscript", ".jit": "torchscript"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export one width x resolution as a plain PyTorch / TorchScript / ONNX model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="mutualnet checkpoint (calibrated.pt from `mutualnet search`)")
    p.add_argument("--width", type=A.width, help="width multiplier (default: the top of the trained range)")
    p.add_argument("--resolution", type=A.resolution,
                   help="input side in pixels (default: the highest trained resolution)")
    p.add_argument("--depth", type=A.positive_int, help="blocks each elastic stage keeps (a model trained with "
                   "model.depth_range; default: full depth); the skipped blocks are absent from the export")
    p.add_argument("--max-mflops", type=A.positive_float, help="pick the best configuration within this many MFLOPs")
    p.add_argument("--max-latency-ms", type=A.positive_float, help="pick the best configuration within this latency")
    p.add_argument("--table", help="query table JSON for budgets (default: the checkpoint's embedded table)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from --out's suffix, else pt)")
    p.add_argument("--out", required=True, help="output file (written atomically)")
    p.add_argument("--no-fold-bn", action="store_true", help="keep BatchNorm layers instead of folding them")
    p.add_argument("--cascade", help="export this cascade (from `mutualnet cascade`) as a bundle folder at --out "
                   "(format torchscript or onnx)")
    p.add_argument("--allow-uncalibrated", action="store_true",
                   help="export a configuration without calibrated BN statistics (shared running statistics)")
    p.set_defaults(func=run)


def choose_config(args: argparse.Namespace, ckpt: dict, model) -> tuple[float, int, dict | None]:
    """(width, resolution, table row or None) from explicit flags or a budget."""
    budget = args.max_mflops is not None or args.max_latency_ms is not None
    if budget and (args.width is not None or args.resolution is not None or args.depth is not None):
        raise MutualNetError("give either --width/--resolution/--depth or a budget (--max-mflops/--max-latency-ms), "
                             "not both")
    if budget:
        row = load_query_table(ckpt, args.table).select(max_mflops=args.max_mflops, max_latency_ms=args.max_latency_ms)
        return float(row["width"]), int(row["resolution"]), row
    if args.table is not None:
        raise MutualNetError("--table is used with a budget (--max-mflops / --max-latency-ms)")
    meta = ckpt.get("meta") or {}
    width = model.width_range[1] if args.width is None else args.width
    res = args.resolution
    if res is None:
        res = int(max(meta["resolutions"])) if meta.get("resolutions") else None
    if res is None:
        raise MutualNetError("the checkpoint records no resolutions; pass --resolution")
    if res < 1:
        raise MutualNetError(f"resolution must be positive, got {res}")
    return float(width), int(res), None


def _export_cascade(args: argparse.Namespace) -> int:
    from ..deploy.cascade import BUNDLE_FORMATS, Cascade, export_cascade

    if any(v is not None for v in (args.width, args.resolution, args.max_mflops, args.max_latency_ms, args.table)):
        raise MutualNetError("--cascade exports the cascade's own configurations; drop --width/--resolution/"
                             "--max-mflops/--max-latency-ms/--table")
    fmt = args.format or "torchscript"
    if fmt not in BUNDLE_FORMATS:
        raise MutualNetError(f"a cascade bundle is {' or '.join(BUNDLE_FORMATS)}, not {fmt}")
    cascade = Cascade.load(args.cascade)
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    out = export_cascade(model, cascade, args.out, class_names=ckpt["meta"].get("class_names"), fmt=fmt)
    print(f"exported a cascade of {len(cascade.steps)} steps to {out}/ [{fmt}]: " + ", ".join(
        f"width {s.width:g} at {s.resolution} px" for s in cascade.steps) + "; run it with docs/cascade.md's snippet")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.cascade is not None:
        return _export_cascade(args)
    fmt = args.format or _SUFFIX.get("." + args.out.rsplit(".", 1)[-1].lower() if "." in args.out else "", "pt")
    if fmt == "onnx":
        require("onnx", "ONNX export")  # before any work
    ckpt = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    width, res, row = choose_config(args, ckpt, model)
    depth = row.get("depth") if row is not None else args.depth
    model.width_range.check(width)
    depth = check_depth(model, depth)  # None: full depth
    if not is_calibrated(model, width, res, depth) and args.allow_uncalibrated:
        print(f"warning: {config_key(width, res, depth)} has no calibrated BN statistics; using the shared running "
              "statistics", file=sys.stderr)
    # below the top width, a configuration without statistics is refused (the library's one policy)
    net, check = export_subnet(model, width, res, fold_bn=not args.no_fold_bn,
                               allow_uncalibrated=args.allow_uncalibrated, depth=depth)
    meta = ckpt.get("meta") or {}
    # an exported file travels to other machines: it names the data and the checkpoint, not where they lay here
    info = {k: meta[k] for k in ("class_names", "mode") if k in meta}
    if isinstance(meta.get("dataset"), dict):
        info["dataset"] = {k: v for k, v in meta["dataset"].items() if k != "root"}
    info |= artefact_fields(model, meta)  # preprocessing: crop at its input_size, then resize to `resolution`
    info |= {"checkpoint": Path(args.checkpoint).name, "table_row": row}
    checks = save_exported(net, args.out, fmt, meta=info)
    prof = profile(model, width, res, depth=depth)
    at = "" if depth is None else f", depth {depth}"
    print(f"exported width {width:g} at {res} px{at} ({prof.mflops:.2f} MFLOPs, {prof.params / 1e6:.3f}M params, "
          f"{check['folded']} BN folded) to {args.out} [{fmt}]")
    line = f"max |logits - slimmable| = {check['max_abs_diff']:.3g}"
    for k, v in checks.items():
        line += f"; {k.replace('_max_abs_diff', '')} vs PyTorch = {v:.3g}"
    print(line)
    return 0
