"""Shared fixtures and helpers: a seeded, one-thread test (autouse), the tiny training recipe, the metrics reader.

Test modules import the helpers by name (``from conftest import read_metrics, tiny_recipe``).
"""

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny models: one intra-op thread is faster than two fighting over small convolutions.

    (On a loaded 2-core machine two threads ran tiny convolutions 10-100x slower.) Tests that need more
    set it themselves, and so does a training run (``run.threads``); the previous count is restored after each
    test, so no test module needs a thread fixture of its own.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_recipe(out, **sections) -> dict:
    """The tiny training recipe tests share: resnet20 over widths [0.25, 1.0] x resolutions {16, 12, 8} on 40
    synthetic 16 px images in batches of 8 (5 iterations per epoch), 3 epochs, one thread, no TensorBoard.

    ``sections``: settings merged into a section, e.g. ``train={"epochs": 4}``, ``optim={"lr": 50.0}``.
    """
    recipe = {
        "model": {"name": "resnet20_cifar", "width_range": [0.25, 1.0]},
        "data": {"name": "synthetic", "synthetic_length": 40, "batch_size": 8, "workers": 0},
        "train": {"mode": "mutual", "resolutions": [16, 12, 8], "epochs": 3},
        "optim": {"lr": 0.1, "warmup_epochs": 0.5},
        "run": {"out": str(out), "device": "cpu", "threads": 1, "progress": False, "tensorboard": False,
                "save_every": 2, "calib_batches": 1},
    }
    for name, values in sections.items():
        recipe[name] = recipe.get(name, {}) | values
    return recipe


def read_metrics(run_dir, kind: str | None = None) -> list[dict]:
    """The rows of a run folder's ``metrics.jsonl`` (only those of ``kind``, ``train`` or ``val``, when given)."""
    rows = [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return rows if kind is None else [r for r in rows if r["kind"] == kind]
