"""Optional extras: the heavy dependencies only some features need, and one clear error when one is missing.

``pip install mutualnet`` brings what training, calibration, search, selection, prediction and ``.pt`` /
TorchScript export need. ONNX export (``onnx``), detection (``coco``) and TensorBoard logging
(``tensorboard``) are extras: ``pip install "mutualnet[onnx]"`` (or ``[all]``).
"""

from __future__ import annotations

import importlib

from .errors import MutualNetError

__all__ = ["EXTRAS", "missing", "require"]

EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "coco": ("pycocotools",),
    "tensorboard": ("tensorboard",),
    "timm": ("timm",),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    absent = []
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            absent.append(module)
    return absent


def require(extra: str, feature: str) -> None:
    """Raise a :class:`MutualNetError` that names the pip command when ``feature`` lacks its extra."""
    absent = missing(extra)
    if absent:
        raise MutualNetError(f"{feature} needs {', '.join(absent)}, which is not installed: "
                             f"pip install \"mutualnet[{extra}]\" (or \"mutualnet[all]\")")
