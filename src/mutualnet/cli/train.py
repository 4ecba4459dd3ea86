"""``mutualnet train``: train a slimmable network from a YAML recipe (MutualNet or one of its baselines).

Run it under ``torchrun --nproc_per_node N`` for data-parallel training; ``--resume`` continues a run
exactly where its last checkpoint left it.
"""

from __future__ import annotations

import argparse

from ..errors import MutualNetError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a network from a YAML recipe", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML recipe (see configs/); not needed with --resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set train.mode=usnet --set data.root=/data/imagenet "
                        "(repeatable; values are YAML)")
    p.add_argument("--resume", metavar="PATH", help="a last.pt / best.pt of an earlier run to continue exactly")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import load_config, resume_config, train

    if args.resume:
        if args.config:
            raise MutualNetError("--resume continues a run with the config stored in its checkpoint; drop --config "
                                 "(--set may change run.*, optim.lr and its schedule, train.epochs, data.root)")
        cfg = resume_config(args.resume, args.overrides)
    elif args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        raise MutualNetError("give a recipe with --config FILE (see configs/) or continue a run with --resume PATH")
    run_dir = train(cfg, resume=args.resume)
    print(f"run folder: {run_dir}")
    return 0
