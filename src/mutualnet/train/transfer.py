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

from torch import nn

from ..checkpoint import load_weights
from ..errors import MutualNetError

__all__ = ["load_pretrained", "final_classifier_prefix"]


def final_classifier_prefix(model: nn.Module) -> str:
    """State-dict prefix of the layer that maps features to classes: the model's ``head_name``."""
    name = getattr(model, "head_name", None)
    if name is None:
        raise MutualNetError(f"{type(model).__name__} names no classifier (head_name); build it with "
                             "mutualnet.create_model")
    return name + "."


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load every weight of ``model`` except its final classifier from ``path``.

    Returns:
        ``{"loaded": n, "skipped": [classifier keys], "source": model name or None}``.

    Raises:
        MutualNetError: another architecture, another width range (shape mismatch), or missing weights.
    """
    path = os.fspath(path)
    state, source = load_weights(path)
    name = getattr(model, "model_name", None)
    if source is not None and name is not None and source != name:
        raise MutualNetError(f"{path} holds a {source}, but this run trains a {name}")
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
    return {"loaded": len(wanted), "skipped": skipped, "source": source}
