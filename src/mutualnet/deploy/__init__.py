"""Deployment: export one configuration, a runtime-adaptive model, cascades, latency tables, released weights."""

from .adaptive import AdaptiveNet, Prediction, measure_switch_us
from .cascade import (
    BUNDLE_FORMAT,
    BUNDLE_FORMATS,
    CASCADE_FORMAT,
    RULE,
    Cascade,
    CascadeOutput,
    Scores,
    Step,
    export_cascade,
    fit_cascade,
    model_runner,
    run_cascade,
    score_configs,
)
from .export import (
    EXPORT_FORMAT,
    FORMATS,
    export_subnet,
    fold_batchnorm,
    load_exported,
    save_exported,
)
from .interop import load_released, load_torchvision_weights, released_checkpoint
from .latency import fill_latency, measure_checkpoint_latency, write_latency_copies

__all__ = ["AdaptiveNet", "Prediction", "measure_switch_us", "Cascade", "Step", "CascadeOutput", "Scores",
           "score_configs", "fit_cascade", "run_cascade", "model_runner", "RULE", "CASCADE_FORMAT",
           "export_cascade", "BUNDLE_FORMAT", "BUNDLE_FORMATS", "EXPORT_FORMAT", "FORMATS",
           "export_subnet", "fold_batchnorm", "load_exported", "save_exported", "load_released",
           "load_torchvision_weights", "released_checkpoint", "fill_latency",
           "measure_checkpoint_latency", "write_latency_copies"]
