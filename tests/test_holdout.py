"""Held-out selection (issue 19): ``data.holdout`` images are never trained on; search and compare choose on them
and report the test set beside."""

import json

import pytest
import torch

from conftest import read_metrics
from mutualnet.checkpoint import load_checkpoint
from mutualnet.cli import main
from mutualnet.compare import seed_budgets
from mutualnet.data import build_dataset
from mutualnet.data.splits import HOLDOUT_SEED, holdout_indices, split_holdout
from mutualnet.errors import MutualNetError
from mutualnet.search import QueryTable
from mutualnet.train.config import apply_overrides, config_from_dict
from mutualnet.train.distributed import DistInfo
from mutualnet.train.loop import build_data

SYNTH = ["--set", "data.name=synthetic", "--set", "data.synthetic_length=64", "--set", "data.batch_size=16",
         "--set", "model.num_classes=4", "--set", "run.tensorboard=false", "--set", "optim.lr=0.1"]


def test_holdout_is_a_fixed_disjoint_draw_whatever_the_global_seed():
    torch.manual_seed(123)
    train, held = holdout_indices(100, 10)
    torch.manual_seed(7)
    assert (train, held) == holdout_indices(100, 10)  # the same images for every run, arm and run.seed
    assert len(held) == 10 and sorted(train + held) == list(range(100)) and not set(train) & set(held)
    assert held == sorted(torch.randperm(100, generator=torch.Generator().manual_seed(HOLDOUT_SEED))[:10].tolist())
    assert held != list(range(10))  # a random draw, not the first images (class-sorted folders are common)
    for bad in (0, 100, 150):
        with pytest.raises(MutualNetError, match="data.holdout"):
            holdout_indices(100, bad)


def test_split_holdout_gives_evaluation_view_of_the_held_out_images():
    aug = build_dataset("synthetic", "train", synthetic_length=40, input_size=16)
    plain = build_dataset("synthetic", "train", synthetic_length=40, input_size=16, augment=False)
    rest, held = split_holdout(aug, 8, plain)
    assert len(rest) == 32 and len(held) == 8 and held.dataset is plain and rest.dataset is aug
    whole, none = split_holdout(aug, None)
    assert whole is aug and len(none) == 0


def _cfg(tmp_path, *overrides):
    data = {"model": {"name": "resnet20_cifar", "width_range": [0.5, 1.0], "num_classes": 4},
            "data": {"name": "synthetic", "synthetic_length": 64, "batch_size": 16, "workers": 0},
            "train": {"mode": "mutual", "resolutions": [16, 12], "epochs": 1},
            "run": {"out": str(tmp_path / "run"), "tensorboard": False, "progress": False}}
    return config_from_dict(apply_overrides(data, list(overrides)))


def test_training_never_sees_the_held_out_images_and_validates_on_them(tmp_path):
    cfg = _cfg(tmp_path, "data.holdout=16")
    data = build_data(cfg, __import__("mutualnet.data", fromlist=["dataset_info"]).dataset_info("synthetic"),
                      DistInfo(), torch.device("cpu"))
    _, held = holdout_indices(64, 16)
    assert len(data.train_set) == 48 and data.steps_per_epoch == 3
    assert set(data.train_set.indices).isdisjoint(held)
    assert list(data.val.dataset.indices) == held  # validation: the held-out images (evaluation transform)


def test_bad_holdout_is_one_line(tmp_path, capsys):
    for value, msg in (("-1", "data.holdout"), ("64", "data.holdout 64"), ("2.5", "data.holdout"),
                       (".nan", "data.holdout")):
        code = main(["train", "--config", "configs/resnet20_fashion_mnist.yaml", *SYNTH, "--set",
                     f"data.holdout={value}", "--set", f"run.out={tmp_path / value}", "--set", "train.epochs=1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error:") and msg in err[0], (value, err)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MutualNet trained with 16 of its 64 synthetic training images held out."""
    out = tmp_path_factory.mktemp("holdout")
    argv = ["train", "--config", "configs/resnet20_fashion_mnist.yaml", *SYNTH, "--set", "data.holdout=16",
            "--set", "train.epochs=2", "--set", "train.resolutions=[16,12]", "--set", "model.width_range=[0.5,1.0]",
            "--set", f"run.out={out / 'run'}", "--set", "run.threads=1", "--set", "run.progress=false",
            "--set", "data.workers=0", "--set", "run.calib_batches=1"]
    assert main(argv) == 0
    return out


def test_checkpoint_records_the_holdout_and_validation_rows_say_so(trained):
    ckpt = load_checkpoint(trained / "run" / "last.pt")
    assert ckpt["meta"]["dataset"]["holdout"] == 16 and ckpt["config"]["data"]["holdout"] == 16
    val = read_metrics(trained / "run", "val")
    assert len(val) == 2 and all(r["split"] == "holdout" for r in val)


def test_search_ranks_on_held_out_images_and_reports_the_test_set_exactly(trained, tmp_path, capsys):
    common = ["--checkpoint", str(trained / "run" / "last.pt"), "--width-step", "0.25", "--calib-images", "16",
              "--eval-batch-size", "16", "--no-progress"]
    assert main(["search", *common, "--out", str(tmp_path / "held")]) == 0
    assert "on the holdout images (test set:" in capsys.readouterr().out
    held = QueryTable.load(tmp_path / "held")
    assert held.meta["split"] == "holdout" and held.meta["dataset"]["holdout"] == 16
    assert all("test_top1" in r and "test_top5" in r for r in held.rows)
    assert "test_top1" in (tmp_path / "held" / "query_table.csv").read_text().splitlines()[0]
    assert all(r.get("val_images", 16) == 16 for r in held.rows)
    assert held.meta["timing_s"]["test_eval_s"] > 0  # the test-set pass counts in the search's time

    assert main(["search", *common, "--out", str(tmp_path / "test"), "--split", "test"]) == 0
    test = QueryTable.load(tmp_path / "test")
    assert test.meta["split"] == "test" and not any("test_top1" in r for r in test.rows)
    for r in held.rows:  # same weights, same calibration images: the test column is the test search's top-1
        assert test.find(r["width"], r["resolution"])["top1"] == pytest.approx(r["test_top1"], abs=1e-9)
    # the two splits are different images: some configuration scores differently on them
    assert any(abs(r["top1"] - r["test_top1"]) > 1e-6 for r in held.rows)


def test_holdout_split_on_a_checkpoint_without_one_is_one_line(trained, tmp_path, capsys):
    out = tmp_path / "plain"
    argv = ["train", "--config", "configs/resnet20_fashion_mnist.yaml", *SYNTH, "--set", "run.max_steps=1",
            "--set", "train.resolutions=[16]", "--set", f"run.out={out}", "--set", "run.val_every=0",
            "--set", "data.workers=0"]
    assert main(argv) == 0
    capsys.readouterr()
    code = main(["search", "--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "s"), "--split", "holdout",
                 "--no-progress", "--calib-images", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "without held-out images" in err[0] and "--split test" in err[0]


def _t(*rows):
    return QueryTable([{"width": w, "resolution": 28, "top1": a, "top5": 99, "macs": int(m * 1e6), "params": 1,
                        "test_top1": t, "test_top5": 99} for w, a, t, m in rows])


def test_compare_picks_on_held_out_accuracy_and_reports_the_test_accuracy_of_the_pick():
    # (width, held-out top-1, test top-1, MFLOPs): on the test set 0.5 would look better; held-out picks 0.75
    s0 = _t((0.5, 80, 85, 2), (0.75, 82, 81, 3))
    s1 = _t((0.5, 79, 86, 2), (0.75, 83, 80, 3))
    row = seed_budgets([{"a": s0}, {"a": s1}], [3.5])[0]["a"]
    assert row["configs"] == [[0.75, 28], [0.75, 28]]
    assert row["mean"] == pytest.approx(80.5) and row["selected"]["mean"] == pytest.approx(82.5)


@pytest.mark.slow
def test_compare_end_to_end_selects_on_held_out_images_with_learning_curves(tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--out", str(out), "--epochs", "2", "--width-step", "0.5", "--calib-images", "16",
            "--threads", "1", "--no-progress", "--arms", "mutualnet,independent", "--singles", "1.0@28,0.5@16",
            *SYNTH, "--set", "data.holdout=16", "--set", "run.calib_batches=1"]
    assert main(argv) == 0
    summary = json.loads((out / "compare.json").read_text())
    assert summary["selected_on"] == "holdout"
    per_seed = summary["per_seed"]["0"]["MutualNet"]
    for m in summary["matched"]:
        pick = m["MutualNet"]
        if pick is None:
            continue
        (w, r), = pick["configs"]
        row = next(x for x in per_seed if (x["width"], x["resolution"]) == (w, r))
        best = max(x["top1"] for x in per_seed if x["mflops"] <= m["mflops"] + 1e-9)
        assert row["top1"] == best and pick["mean"] == pytest.approx(row["test_top1"])  # chosen held-out, test shown
    md = (out / "results.md").read_text()
    assert "picks within each budget on 16 held-out training images" in md and "Held-out top-1" in md
    curves = summary["learning_curves"]
    assert {"MutualNet", "Independent"} <= set(curves["1@28"]) and {"MutualNet", "Independent"} <= set(curves["0.5@16"])
    steps = [p[0] for p in curves["1@28"]["MutualNet"]["0"]]
    assert len(steps) == 2 and steps[0] < steps[1]  # one point per epoch
    assert (out / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a look at a comparison that is still running: nothing is trained, the numbers say over which seeds they are
    assert main([*argv, "--seeds", "0,1", "--report-only"]) == 0
    assert not (out / "seed1").exists()
    summary = json.loads((out / "compare.json").read_text())
    assert summary["seeds_per_arm"] == {"MutualNet": [0], "Independent": [0]}
    assert "these numbers are over the seeds that have: MutualNet: seed 0; Independent: seed 0" in (
        out / "results.md").read_text()

    # the former behaviour is one option away: choose on the test set
    assert main([*argv[:2], str(tmp_path / "cmp0"), *argv[3:], "--set", "data.holdout=0"]) == 0
    summary = json.loads((tmp_path / "cmp0" / "compare.json").read_text())
    assert summary["selected_on"] == "test" and "on the same test images it reports" in (
        tmp_path / "cmp0" / "results.md").read_text()
