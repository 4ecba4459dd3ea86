"""Deployment: export one configuration, a runtime-adaptive model, latency tables, released weights."""

from .adaptive import AdaptiveNet, Prediction, measure_switch_us
from .export import (
    EXPORT_FORMAT,
    FORMATS,
    export_subnet,
    fold_batchnorm,
    load_exported,
    save_exported,
)
from .interop import load_released, load_torchvision_weights, released_checkpoint
from .latency import fill_latency

__all__ = ["AdaptiveNet", "Prediction", "measure_switch_us", "EXPORT_FORMAT", "FORMATS",
           "export_subnet", "fold_batchnorm", "load_exported", "save_exported", "load_released",
           "load_torchvision_weights", "released_checkpoint", "fill_latency"]
