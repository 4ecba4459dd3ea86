"""Deployment: export one configuration, a runtime-adaptive model, cascades, latency tables, released weights."""

from .adaptive import AdaptiveNet, Prediction, describe_predictions, measure_switch_us, predict_files
from .cascade import (
    BUNDLE_FORMAT,
    BUNDLE_FORMATS,
    CASCADE_FORMAT,
    RULE,
    Cascade,
    CascadeOutput,
    Scores,
    Step,
    describe_cascade_evaluation,
    describe_test_report,
    evaluate_cascade,
    evaluate_checkpoint_cascade,
    export_cascade,
    export_checkpoint_cascade,
    fit_cascade,
    fit_checkpoint_cascade,
    model_runner,
    run_cascade,
    score_configs,
)
from .export import (
    EXPORT_FORMAT,
    FORMATS,
    Exported,
    choose_config,
    export_checkpoint,
    export_subnet,
    fold_batchnorm,
    format_of,
    load_exported,
    save_exported,
)
from .interop import convert_checkpoint, load_released, load_torchvision_weights, released_checkpoint
from .latency import fill_latency, measure_checkpoint_latency, write_latency_copies

__all__ = ["AdaptiveNet", "Prediction", "measure_switch_us", "Cascade", "Step", "CascadeOutput", "Scores",
           "score_configs", "fit_cascade", "run_cascade", "model_runner", "RULE", "CASCADE_FORMAT",
           "export_cascade", "BUNDLE_FORMAT", "BUNDLE_FORMATS", "EXPORT_FORMAT", "FORMATS",
           "export_subnet", "fold_batchnorm", "load_exported", "save_exported", "load_released",
           "load_torchvision_weights", "released_checkpoint", "fill_latency",
           "measure_checkpoint_latency", "write_latency_copies", "predict_files", "describe_predictions",
           "evaluate_cascade", "fit_checkpoint_cascade", "evaluate_checkpoint_cascade", "describe_cascade_evaluation",
           "describe_test_report", "export_checkpoint_cascade", "export_checkpoint", "Exported", "choose_config",
           "format_of", "convert_checkpoint"]
