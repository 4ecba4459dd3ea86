"""Fixtures for the deploy tests: a small trained-looking model with calibrated configurations and a table."""

from __future__ import annotations

import torch

import mutualnet as mn
from mutualnet.layers import SlimmableBatchNorm2d


def calibrate_config(model, width: float, resolution: int, images: torch.Tensor) -> None:
    """Calibrate one configuration with the layers' own hooks (exact statistics over ``images``)."""
    bns = [m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d)]
    model.eval()
    with mn.use_config(model, width, resolution), torch.no_grad():
        for bn in bns:
            bn.begin_calibration()
        x = torch.nn.functional.interpolate(images, size=(resolution, resolution), mode="bilinear",
                                            align_corners=False)
        model(x)
        for bn in bns:
            bn.end_calibration()


def trained_like(name: str, *, steps: int = 3, size: int = 32, **kw) -> torch.nn.Module:
    """A model whose BN running statistics have moved away from (0, 1), as after training."""
    torch.manual_seed(0)
    model = mn.create_model(name, **kw)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(8, model.in_chans, size, size) * 2 + 0.5)
    return model.eval()


def table_rows(model, configs: list[tuple[float, int]]) -> list[dict]:
    """Query-table rows with real MACs/params and made-up but monotone accuracies."""
    rows = []
    for w, r in configs:
        p = mn.profile(model, w, r)
        rows.append({"width": w, "resolution": r, "top1": 50 + 40 * w + r / 10, "top5": 90.0, "macs": p.macs,
                     "params": p.params, "latency_ms": None})
    return rows
