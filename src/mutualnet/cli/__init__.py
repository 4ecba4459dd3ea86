"""``mutualnet`` command line: one subcommand per module in this package.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets ``func``.
A :class:`~mutualnet.errors.MutualNetError` is printed as one line (``error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import MutualNetError

__all__ = ["main", "build_parser"]

# subcommand modules, in the order `mutualnet --help` lists them
COMMANDS = [
    "demo",
    "train",
    "calibrate",
    "search",
    "eval",
    "select",
    "plot",
    "export",
    "predict",
    "latency",
    "convert",
    "profile",
    "models",
    "compare",
    "detect",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mutualnet",
        description="Train one ConvNet that runs at any width x resolution, then pick the best configuration "
        "for a budget (MutualNet, ECCV 2020).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except MutualNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
