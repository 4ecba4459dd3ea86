"""The main job end to end, on a tiny synthetic stand-in for Fashion-MNIST (the real run is the README's)."""

import copy

import pytest

from conftest import read_metrics
from mutualnet.checkpoint import load_checkpoint
from mutualnet.cli import main
from mutualnet.demo import DEMO_RECIPE, format_table, run_demo, training_finished


def _tiny_recipe():
    r = copy.deepcopy(DEMO_RECIPE)
    r["data"] = {"name": "synthetic", "batch_size": 32, "workers": 0, "synthetic_length": 128}
    r["model"]["num_classes"] = 4
    r["model"]["width_range"] = [0.25, 1.0]
    r["run"].update({"tensorboard": False, "save_every": 2})
    r["optim"]["lr"] = 0.1
    return r


@pytest.mark.slow
def test_demo_trains_searches_plots_and_reuses_finished_work(tmp_path, capsys):
    res = run_demo(tmp_path / "demo", recipe=_tiny_recipe(), epochs=2, width_step=0.25, calib_images=64,
                   val_images=64, threads=1, progress=False)
    assert training_finished(res.run_dir / "last.pt")
    t = res.table
    assert len(t) == 4 * 4  # widths 0.25, 0.5, 0.75, 1.0 x 4 resolutions
    assert {r["resolution"] for r in t.rows} == {28, 24, 20, 16}
    assert all(0 <= r["top1"] <= 100 for r in t.rows) and any(r["pareto"] for r in t.rows)
    assert res.plot.stat().st_size > 10_000
    full = res.full
    assert (full["width"], full["resolution"]) == (1.0, 28)
    assert full["top1"] > 40  # 4 learnable classes: well above chance (25%) after two tiny epochs
    assert (res.search_dir / "calibrated.pt").exists()
    text = format_table(t)
    assert "28 px" in text and "*" in text
    mtime = (res.run_dir / "last.pt").stat().st_mtime
    again = run_demo(tmp_path / "demo", recipe=_tiny_recipe(), epochs=2, width_step=0.25, calib_images=64,
                     val_images=64, threads=1, progress=False)
    assert (res.run_dir / "last.pt").stat().st_mtime == mtime  # nothing retrained
    assert [r["top1"] for r in again.table.rows] == [r["top1"] for r in t.rows]
    assert "reusing" in capsys.readouterr().out


def test_demo_resumes_an_interrupted_training_run(tmp_path):
    from mutualnet.train import train
    from mutualnet.train.config import apply_overrides, config_from_dict

    recipe = _tiny_recipe()
    out = tmp_path / "demo"
    cfg = config_from_dict(apply_overrides(copy.deepcopy(recipe), [f"run.out={out / 'train'}", "run.max_steps=3",
                                                                    "run.progress=false", "train.epochs=1"]))
    train(cfg)  # stops after 3 of 4 iterations, as if killed
    assert not training_finished(out / "train" / "last.pt")
    first_s = load_checkpoint(out / "train" / "last.pt")["train_state"]["elapsed_s"]
    res = run_demo(out, recipe=recipe, epochs=1, width_step=0.75, calib_images=32, val_images=32, threads=1,
                   progress=False)
    steps = [r["step"] for r in read_metrics(res.run_dir, "train")]
    assert steps == sorted(set(steps)) and steps[-1] == 4  # continued, not restarted
    assert training_finished(res.run_dir / "last.pt")
    train_s, search_s = res.whole_run_seconds()  # the demo's reported time covers the interrupted part too
    assert train_s > first_s > 0 and search_s > 0


def test_demo_missing_data_is_one_line_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--data-root", str(tmp_path / "nope"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["demo", "--out", str(tmp_path / "d"), "--epochs", "0"]) == 2
