"""Optional extras (ONNX, COCO, TensorBoard): a clear one-line error, or a note, when one is missing."""

import sys

import pytest

from mutualnet.checkpoint import save_checkpoint
from mutualnet.cli import main
from mutualnet.extras import EXTRAS, missing, require
from mutualnet.models import create_model
from mutualnet.train import load_config, train


@pytest.fixture
def without(monkeypatch):
    """Make modules unimportable, as on an install without the extra (None in sys.modules blocks the import)."""
    def hide(*modules):
        for m in modules:
            monkeypatch.setitem(sys.modules, m, None)
    return hide


def test_every_extra_is_installed_here():  # CI (scripts/setup.sh) installs .[dev], which holds them all
    assert all(not missing(extra) for extra in EXTRAS)


def test_missing_extras_are_one_line_errors(without, tmp_path, capsys):
    without("onnx", "pycocotools")
    with pytest.raises(Exception, match=r"ONNX export needs onnx, which is not installed: pip install "
                                        r"\"mutualnet\[onnx\]\""):
        require("onnx", "ONNX export")
    path = save_checkpoint(tmp_path / "m.pt", create_model("resnet20_cifar"), {"resolutions": [32]})
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")]) == 2
    assert main(["detect", "eval", "--checkpoint", str(path), "--annotations", "a.json", "--images", "i",
                 "--out", str(tmp_path / "e")]) == 2
    errs = capsys.readouterr().err.strip().splitlines()
    assert errs == ['error: ONNX export needs onnx, which is not installed: pip install "mutualnet[onnx]" (or '
                    '"mutualnet[all]")', 'error: detection needs pycocotools, which is not installed: pip install '
                    '"mutualnet[coco]" (or "mutualnet[all]")']
    assert not (tmp_path / "m.onnx").exists()


def test_training_without_tensorboard_says_so_and_runs(without, tmp_path, capsys):
    without("tensorboard")
    run = train(load_config(None, ["model.name=resnet20_cifar", "data.name=synthetic", "data.synthetic_length=8",
                                   "data.batch_size=8", "data.workers=0", "train.resolutions=[16, 8]",
                                   "run.max_steps=1", "run.val_every=0", "run.device=cpu", "run.progress=false",
                                   f"run.out={tmp_path / 'run'}"]))
    assert "note: tensorboard is not installed" in capsys.readouterr().err
    assert (run / "last.pt").exists() and not (run / "tb").exists()


def test_onnxruntime_runtime_without_the_extra_names_it(without, tmp_path, capsys):
    from deploy_helpers import table_rows
    from mutualnet.search import QueryTable

    without("onnxruntime")
    model = create_model("resnet20_cifar", width_range=(0.5, 1.0))
    path = save_checkpoint(tmp_path / "m.pt", model, {"resolutions": [16]})
    QueryTable(rows=table_rows(model, [(1.0, 16)])).save(tmp_path / "t.json")
    assert main(["latency", "--table", str(tmp_path / "t.json"), "--checkpoint", str(path), "--runtime",
                 "onnxruntime", "--warmup", "0", "--repeats", "1"]) == 2
    err = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
    assert err == ['error: the onnxruntime runtime needs onnxruntime, which is not installed: pip install '
                   '"mutualnet[onnx]" (or "mutualnet[all]")']
