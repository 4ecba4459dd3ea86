"""mutualnet: one ConvNet, any width x resolution (Yang et al., MutualNet, ECCV 2020).

Where to look:
    layers/config.py      the active configuration (width, resolution, depth) and its one writer, set_config
    layers/slimmable.py   slimmable Conv2d / Linear / BatchNorm2d
    layers/elastic.py     elastic depth: a stage runs its first d blocks
    models/               the slimmable model zoo behind one registry
    train/step.py         the sandwich step: width-resolution mutual learning
    train/loop.py         the training loop (AMP, DDP)
    train/runkit.py       checkpoints, metrics, exact resume: the run kit detection shares
    calibrate.py          BN post-statistics for any (width, resolution)
    search/               the query table: accuracy x cost of every configuration, budget selection
    deploy/               export one configuration, a runtime-adaptive model, released weights
    detection/            Mask R-CNN + FPN on a slimmable backbone
    slimming/             any CNN -> slimmable network by graph analysis (mutualnet.slim)
    profiling/            MACs (torch.utils.flop_counter) and latency of a configuration
    demo.py, compare.py   the Fashion-MNIST demo and the paper's comparison at small scale
"""

# ruff: noqa: E402 - the wait policy must be set before the imports below load torch
from .threads import prefer_passive_wait

prefer_passive_wait()  # first, before anything imports torch: OpenMP reads its wait policy when torch loads it

from .errors import MutualNetError
from .layers import (
    DepthRange,
    WidthRange,
    allow_uncalibrated,
    get_config,
    get_depth,
    get_width,
    make_divisible,
    materialize,
    set_config,
    set_width,
    slim_channels,
    use_config,
    use_width,
)
from .models import create_model, list_models, model_info
from .profiling import measure_latency, profile
from .slimming import slim

__version__ = "0.1.0"

__all__ = [
    "MutualNetError",
    "create_model",
    "list_models",
    "model_info",
    "set_width",
    "get_width",
    "use_width",
    "set_config",
    "get_config",
    "get_depth",
    "use_config",
    "WidthRange",
    "DepthRange",
    "materialize",
    "allow_uncalibrated",
    "make_divisible",
    "slim_channels",
    "profile",
    "measure_latency",
    "slim",
]
