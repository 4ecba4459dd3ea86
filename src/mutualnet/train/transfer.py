"""Transfer learning: start a run from pretrained weights with a new classifier (paper Sec. 4.3).

The paper fine-tunes ImageNet-trained MutualNet models on CIFAR-100, Food-101 and MIT-Indoor67 with the same
width-resolution mutual learning (batch 256, LR 0.1, cosine, 100 epochs; ``configs/transfer_*.yaml``), then
calibrates and searches as usual. ``model.init`` names the weights: a mutualnet checkpoint of the same
architecture and width range, or a torchvision state dict (``torch.save(tv_model.state_dict(), path)``),
which maps onto the width-1.0 network. Everything but the final classifier is loaded; the classifier is
the fresh one the model was built with for the new classes -- the same as ``model.reset_classifier(n)`` on
the pretrained network. Calibrated BN statistics of the source are dropped: they describe another dataset.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..checkpoint import PYTHON_BUILT, read_weights
from ..errors import MutualNetError

__all__ = ["load_pretrained", "final_classifier_prefix", "describe_init", "adopt_init"]


def final_classifier_prefix(model: nn.Module) -> str:
    """State-dict prefix of the layer that maps features to classes: the model's ``head_name``."""
    name = getattr(model, "head_name", None)
    if name is None:
        raise MutualNetError(f"{type(model).__name__} names no classifier (head_name); build it with "
                             "mutualnet.create_model")
    return name + "."


def adopt_init(model_cfg: Any) -> str | None:
    """Check ``model.init`` against the run's model before anything is built or a loader worker starts.

    Weights of another model are refused naming the ``--set`` that fits them. A mutualnet checkpoint of the
    same model trained at another top width (every tensor is shaped by it) gives the run its width range,
    as a recipe written for another range would otherwise need the override; returns the note saying so.
    """
    weights = read_weights(model_cfg.init)
    src, name = weights.model_name, model_cfg.name
    if src is not None and src.startswith(PYTHON_BUILT):
        raise MutualNetError(f"{model_cfg.init} holds {src[len(PYTHON_BUILT):]}, a model built in Python: load its "
                             "weights into that model object and train it with mutualnet.train.fit")
    if src is not None and src != name:
        raise MutualNetError(f"{model_cfg.init} holds a {src}, but this run trains a {name}; train the same model "
                             f"(--set model.name={src}, or a recipe of it) or start from {name} weights")
    wr, run = weights.width_range, model_cfg.width_range
    if wr is None or (run is not None and abs(float(run[1]) - wr[1]) <= 1e-6):
        return None  # the same top width: the tensors fit (another bottom width is taught, see describe_init)
    before = "" if run is None else f" instead of the recipe's [{float(run[0]):g}, {float(run[1]):g}]"
    model_cfg.width_range = [wr[0], wr[1]]
    return (f"model.init: training at the width range [{wr[0]:g}, {wr[1]:g}] of {model_cfg.init}{before} "
            f"(its tensors are shaped by its top width; --set model.width_range=[LO,{wr[1]:g}] picks another bottom)")


def _check_width_range(model: nn.Module, source: tuple[float, float] | None, path: str) -> None:
    """Refuse weights whose top width differs from the run's: every tensor is shaped by the top width.

    A plain state dict (torchvision) is a width-1.0 network. A different *bottom* width is allowed: the
    run then teaches the shared weights widths the source never ran at (reported by :func:`describe_init`).
    """
    run_lo, run_hi = model.width_range
    src_hi = 1.0 if source is None else source[1]
    if abs(src_hi - run_hi) > 1e-6:
        held = "a plain state dict (a width-1.0 network)" if source is None else \
            f"weights trained at widths [{source[0]:g}, {source[1]:g}]"
        raise MutualNetError(f"{path} holds {held}, but this run's model.width_range is [{run_lo:g}, {run_hi:g}]; "
                             f"pretrained weights must come from the same width range: --set "
                             f"model.width_range=[{run_lo:g},{src_hi:g}]")


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load every weight of ``model`` except its final classifier from ``path``.

    Returns:
        ``{"loaded": n, "skipped": [classifier keys], "source": model name or None, "path": path,
        "source_width_range": [lo, hi] or None, "width_range": [lo, hi] of the run}``.

    Raises:
        MutualNetError: another architecture, another top width (shape mismatch), or missing weights.
    """
    path = os.fspath(path)
    weights = read_weights(path)
    state, source = weights.state, weights.model_name
    name = getattr(model, "model_name", None)
    if source is not None and name is not None and source != name:
        raise MutualNetError(f"{path} holds a {source}, but this run trains a {name}")
    if hasattr(model, "width_range"):
        _check_width_range(model, weights.width_range, path)
    head = final_classifier_prefix(model)
    own = model.state_dict()
    wanted, skipped = {}, []
    for key, target in own.items():
        if key.startswith(head):
            skipped.append(key)
            continue
        if ".calib_stats." in key:  # never in a fresh model's state dict; listed for clarity
            continue
        if key not in state:
            raise MutualNetError(f"{path} lacks {key}: it is not a {name or type(model).__name__} checkpoint")
        if state[key].shape != target.shape:
            raise MutualNetError(f"{key} is {tuple(state[key].shape)} in {path} but {tuple(target.shape)} here: "
                                 "pretrained weights must come from the same width range (torchvision weights: "
                                 "width_range with a top width of 1.0)")
        wanted[key] = state[key]
    model.load_state_dict(wanted, strict=False)  # calib_stats.* of the source are not in `wanted`
    return {"loaded": len(wanted), "skipped": skipped, "source": source, "path": path,
            "source_width_range": list(weights.width_range) if weights.width_range else None,
            "width_range": list(getattr(model, "width_range", ())) or None}


def describe_init(report: dict) -> str:
    """One line saying what :func:`load_pretrained` loaded and what it replaced (printed by the trainer)."""
    src = report["source"] or "a plain state dict"
    swr, wr = report.get("source_width_range"), report.get("width_range")
    trained = f" trained at widths [{swr[0]:g}, {swr[1]:g}]" if swr else ""
    line = (f"model.init: loaded {report['loaded']} tensors from {report['path']} ({src}{trained}); "
            f"new classifier: {', '.join(report['skipped'])}")
    if swr and wr and swr[0] > wr[0] + 1e-6:
        line += f"; widths below {swr[0]:g} were never trained in the source"
    return line
