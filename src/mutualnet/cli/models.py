"""``mutualnet models [PATTERN]``: the registered models and their default recipes."""

from __future__ import annotations

import argparse
import json

from ..models import list_models, model_info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models", description=__doc__)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mobilenet*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    infos = [model_info(n) for n in names]
    if args.json:
        print(json.dumps([{"name": i.name, "family": i.family, "resolutions": list(i.resolutions),
                           "width_range": list(i.width_range), "in_chans": i.in_chans,
                           "num_classes": i.num_classes, "description": i.description} for i in infos], indent=2))
        return 0
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 1
    print(f"{'model':<20} {'widths':<12} {'resolutions':<20} description")
    for i in infos:
        widths = f"{i.width_range[0]:g}-{i.width_range[1]:g}"
        res = ",".join(str(r) for r in i.resolutions)
        print(f"{i.name:<20} {widths:<12} {res:<20} {i.description}")
    return 0
