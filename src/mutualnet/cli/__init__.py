"""``mutualnet`` command line: one subcommand per module in this package.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets ``func``.
A :class:`~mutualnet.errors.MutualNetError`, a bad flag and an ``OSError`` (a read-only folder, a full disk, a
missing permission) are each printed as one line (``error: ...``) naming the flag or the path, with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading

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
    "cascade",
    "plot",
    "export",
    "predict",
    "latency",
    "convert",
    "profile",
    "models",
    "compare",
    "ablate",
    "detect",
]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: mutualnet train: argument --x: ...`` instead of usage + error."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mutualnet",
        description="Train one ConvNet that runs at any width x resolution, then pick the best configuration "
        "for a budget (MutualNet, ECCV 2020).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``kill``, torchrun stopping its workers) raised as an interrupt, so it
    unwinds like Ctrl-C: temporary files removed, folder locks released, the last saved checkpoint resumable."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    # SIGTERM would otherwise end the process without a word and without unwinding; only when nobody else
    # (an embedding program) handles it, and only where Python allows handlers: the main thread
    previous = None
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with contextlib.ExitStack() as quiet:
            if int(os.environ.get("RANK") or 0) > 0:  # under torchrun rank 0 speaks for all: each line once
                quiet.enter_context(contextlib.redirect_stdout(quiet.enter_context(open(os.devnull, "w"))))
            return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad flag (one line printed already) or --help: a status, as for every other error
        return e.code if isinstance(e.code, int) else 2
    try:
        rc = args.func(args)
    except MutualNetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # read-only or full disk, no permission: the user's environment, not a bug
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        term = isinstance(e, _Terminated)
        print(f"interrupted{' (SIGTERM)' if term else ''}", file=sys.stderr)
        return 128 + (signal.SIGTERM if term else signal.SIGINT)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
