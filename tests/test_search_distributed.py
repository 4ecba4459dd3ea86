"""``mutualnet search`` under torchrun: shards of the distinct networks, merged into the one-process table."""

import os
import subprocess
import sys

import pytest
import torch

from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mutualnet.cli import main
from mutualnet.errors import MutualNetError
from mutualnet.layers import SlimmableBatchNorm2d
from mutualnet.search import QueryTable
from test_search import DS_META, _trained_tiny

# 9 widths on [0.25, 0.5], which channel rounding makes fewer networks, at 2 resolutions
ARGS = ["--width-step", "0.03125", "--calib-images", "32", "--val-images", "48", "--eval-batch-size", "16",
        "--no-progress"]


def _calibrated(path):
    model = model_from_checkpoint(load_checkpoint(path))
    return {f"{name}/{key}": stats for name, m in model.named_modules() if isinstance(m, SlimmableBatchNorm2d)
            for key, stats in m.calibrated.items()}


def test_two_processes_write_the_one_process_table_and_statistics(tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, _trained_tiny(), meta={"resolutions": [16, 12], "mode": "mutual",
                                                 "width_range": [0.25, 0.5], "dataset": DS_META})
    torch.set_num_threads(1)  # the torchrun processes run with one thread each: the same float arithmetic
    assert main(["search", "--checkpoint", str(ckpt), "--out", str(tmp_path / "one"), *ARGS]) == 0
    capsys.readouterr()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "mutualnet", "search", "--checkpoint", str(ckpt), "--out", str(tmp_path / "two"),
                           *ARGS], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("searched ") == 1  # rank 0 speaks for both processes

    one = QueryTable.load(tmp_path / "one" / "query_table.json")
    two = QueryTable.load(tmp_path / "two" / "query_table.json")
    assert len(two) == 18 and two.meta["distinct_networks"] < 9 * 2  # identical networks were deduplicated
    assert two.rows == one.rows  # the same rows, frontier included
    # the work of both shards is accounted once each: as many calibrations as the one process did
    assert two.meta["calibration"]["images"] == one.meta["calibration"]["images"]
    assert two.meta["validation"]["images_evaluated"] == one.meta["validation"]["images_evaluated"]
    a, b = _calibrated(tmp_path / "two" / "calibrated.pt"), _calibrated(tmp_path / "one" / "calibrated.pt")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)
    assert QueryTable.from_dict(load_checkpoint(tmp_path / "two" / "calibrated.pt")["query_table"]).rows == one.rows
    # one table, and no shard or partial state left behind
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if not p.name.startswith(".")) == \
        sorted(p.name for p in (tmp_path / "one").iterdir() if not p.name.startswith("."))

    halving = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              "-m", "mutualnet", "search", "--checkpoint", str(ckpt), "--out", str(tmp_path / "h"),
                              "--halving", "0.5", *ARGS], capture_output=True, text=True, timeout=300, env=env)
    assert halving.returncode != 0
    assert "error: --halving cannot be combined with torchrun" in halving.stderr
    assert not (tmp_path / "h" / "query_table.json").exists()


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_shards_split_the_distinct_networks_once_and_merge_resumably(tmp_path, monkeypatch):
    """In one process: shards calibrate disjoint networks that together are all of them; a rerun does nothing."""
    import mutualnet.search.build as build
    from mutualnet.data import build_dataset

    tr = build_dataset("synthetic", "train", input_size=16, synthetic_length=64, num_classes=4)
    va = build_dataset("synthetic", "val", input_size=16, synthetic_length=64, num_classes=4)
    widths = [0.25 + 0.025 * i for i in range(11)]  # 3 distinct networks per resolution: 6 in all
    calls = []
    real = build.calibrate
    monkeypatch.setattr(build, "calibrate", lambda *a, **kw: (calls.append(a[2:4]), real(*a, **kw))[1])

    def search(state_dir, shard=None, model=None):
        return build.build_query_table(model or _trained_tiny(), va, tr, resolutions=[16, 12], widths=widths,
                                       calib_images=48, batch_size=32, progress=False, state_dir=state_dir,
                                       shard=shard)

    parts = []
    for k in range(4):  # more shards than networks per resolution: round-robin over (network, resolution)
        calls.clear()
        part = search(tmp_path / f"shard-{k}", (k, 4))
        parts.append(set(calls))
        assert len(calls) == len(set(calls)) and len(part) >= len(calls)  # each network once; its copies too
    assert sum(map(len, parts)) == 6 and len(set().union(*parts)) == 6  # disjoint, and all of them
    calls.clear()
    search(tmp_path / "shard-0", (0, 4))  # a finished shard started again computes nothing
    assert calls == []
    assert build.merge_search_states([tmp_path / f"shard-{k}" for k in range(4)], tmp_path / "merged") == 22
    merged = search(tmp_path / "merged")  # restores only
    assert calls == []
    whole = search(tmp_path / "whole")
    assert merged.rows == whole.rows and len(whole) == 22
    with pytest.raises(MutualNetError, match="halving cannot be sharded"):
        build.build_query_table(_trained_tiny(), va, tr, resolutions=[16], widths=widths, halving=0.5, shard=(0, 2),
                                progress=False)
