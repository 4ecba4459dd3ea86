"""Threads that survive a busy machine: OpenMP's passive wait is set before torch loads, unless the user chose."""

import json
import os
import subprocess
import sys

import pytest
import torch

from mutualnet import threads
from mutualnet.train import config_from_dict, train

# Records OMP_WAIT_POLICY at the moment `import torch` starts: what libgomp will read when torch loads it.
PROBE = """
import importlib.abc, json, os, sys
seen = {}
class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "at_torch_import" not in seen:
            seen["at_torch_import"] = os.environ.get("OMP_WAIT_POLICY")
        return None
sys.meta_path.insert(0, Probe())
%s
import mutualnet.threads as t
print(json.dumps(seen | {"passive": t.passive_wait(), "after": os.environ.get("OMP_WAIT_POLICY")}))
"""


def _probe(env: dict[str, str], before: str = "") -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", PROBE % before], env=clean | env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_passive_wait_is_set_before_torch_loads():
    seen = _probe({})
    assert seen == {"at_torch_import": "PASSIVE", "passive": True, "after": "PASSIVE"}


@pytest.mark.parametrize("env", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}])
def test_the_users_own_setting_is_respected(env):
    seen = _probe(env)
    assert seen["at_torch_import"] == env.get("OMP_WAIT_POLICY") and seen["passive"] is False


def test_torch_imported_first_leaves_the_policy_alone():
    seen = _probe({}, before="import torch")
    assert seen["at_torch_import"] is None and seen["after"] is None and seen["passive"] is False


def test_training_threads(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setitem(threads._state, "passive", False)
    monkeypatch.setattr(threads, "free_cores", lambda interval=0.2: 1.1)  # one core busy elsewhere
    assert threads.training_threads(None, 2) == 1  # spinning threads on a busy machine: only the free core
    assert threads.training_threads(3, 2) == 3  # run.threads overrides
    monkeypatch.setattr(threads, "free_cores", lambda interval=0.2: 1.9)
    assert threads.training_threads(None, 2) == 2  # a quiet machine keeps every core
    monkeypatch.setattr(threads, "free_cores", lambda interval=0.2: 0.0)
    assert threads.training_threads(None, 2) == 1  # at least one
    monkeypatch.setattr(threads, "free_cores", lambda interval=0.2: None)
    assert threads.training_threads(None, 2) == 2  # unknown (no /proc/stat): torch's default
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setitem(threads._state, "passive", True)  # set by us: passive threads still share one core badly
    monkeypatch.setattr(threads, "free_cores", lambda interval=0.2: 1.0)
    assert threads.training_threads(None, 2) == 1
    assert threads.training_threads(None, 1) == 1
    monkeypatch.setitem(threads._state, "passive", False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert threads.training_threads(None, 2) == 2  # the user's explicit choice


def test_free_cores_reads_the_machine():
    free = threads.free_cores(0.05)
    if free is None:
        pytest.skip("no /proc/stat")
    assert 0.0 <= free <= (os.cpu_count() or 1)


def test_train_takes_the_free_cores(tmp_path, monkeypatch):
    # train() must not keep 2 threads on a machine with one free core (unless run.threads says so)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setitem(threads._state, "passive", False)
    monkeypatch.setattr(threads, "free_cores", lambda interval=0.2: 1.0)
    recipe = {"model": {"name": "resnet20_cifar", "width_range": [0.25, 1.0]},
              "data": {"name": "synthetic", "synthetic_length": 8, "batch_size": 4, "workers": 0},
              "train": {"mode": "mutual", "resolutions": [8], "epochs": 1},
              "run": {"out": str(tmp_path / "a"), "device": "cpu", "progress": False, "tensorboard": False,
                      "val_every": 0, "max_steps": 1}}
    torch.set_num_threads(2)
    try:
        train(config_from_dict(recipe))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)


def test_onnxruntime_threads_sleep_when_openmp_does(monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from mutualnet.deploy.runtime import session_options

    monkeypatch.setitem(threads._state, "passive", True)
    opts = session_options(2)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    monkeypatch.setitem(threads._state, "passive", False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for opts in (session_options(2), session_options(1)):  # ORT's default (spinning) where OpenMP spins too
        with pytest.raises(RuntimeError, match="does not have"):
            opts.get_session_config_entry("session.intra_op.allow_spinning")
    assert session_options(1, "basic").graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
