"""Slimmable building blocks and the channel-rounding rule."""

from .blocks import ConvBNAct, init_weights
from .helpers import make_divisible, slim_channels, width_key
from .slimmable import (
    SlimmableBatchNorm2d,
    SlimmableConv2d,
    SlimmableLinear,
    SlimState,
    active_num_params,
    allow_uncalibrated,
    bind_state,
    channel_config,
    config_key,
    get_width,
    is_slimmable,
    materialize,
    set_width,
    use_width,
)

__all__ = [
    "ConvBNAct",
    "init_weights",
    "make_divisible",
    "slim_channels",
    "width_key",
    "SlimState",
    "SlimmableConv2d",
    "SlimmableLinear",
    "SlimmableBatchNorm2d",
    "active_num_params",
    "allow_uncalibrated",
    "bind_state",
    "channel_config",
    "config_key",
    "get_width",
    "is_slimmable",
    "materialize",
    "set_width",
    "use_width",
]
