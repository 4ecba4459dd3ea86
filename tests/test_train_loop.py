"""The training loop end to end on tiny synthetic data: run folder, checkpoints, modes, errors."""

import re

import pytest
import torch
import yaml

from conftest import read_metrics
from mutualnet import MutualNetError
from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mutualnet.cli import main
from mutualnet.models import create_model
from mutualnet.train import MODES, load_config, resume_config, train


def tiny(tmp_path, *extra, name="run"):
    """A resnet20 over [0.25, 1.0] x {16, 12, 8} on 16 px synthetic images: 2 iterations per epoch."""
    return load_config(None, [
        "model.name=resnet20_cifar", "model.width_range=[0.25, 1.0]", "data.name=synthetic",
        "data.synthetic_length=16", "data.batch_size=8", "data.workers=0", "train.resolutions=[16, 12, 8]",
        "train.epochs=2", "optim.lr=0.05", "optim.warmup_epochs=1", "run.device=cpu", "run.progress=false",
        "run.save_every=3", "run.calib_batches=1", f"run.out={tmp_path / name}", *extra])


rows = read_metrics  # rows(run_dir, kind)


def test_training_run_writes_a_complete_run_folder(tmp_path):
    run_dir = train(tiny(tmp_path, "run.csv=true"))
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "train.csv", "val.csv", "tb"} <= {
        p.name for p in run_dir.iterdir()}
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())  # resolved: defaults filled in
    assert cfg["model"]["num_classes"] == 10 and cfg["data"]["input_size"] == 16
    assert cfg["train"]["resolutions"] == [16, 12, 8]

    train_rows, val_rows = rows(run_dir, "train"), rows(run_dir, "val")
    assert [r["step"] for r in train_rows] == list(range(1, 5))  # 2 epochs x 2 iterations
    assert all(len(r["losses"]) == 4 and r["loss"] == pytest.approx(sum(r["losses"])) for r in train_rows)
    lrs = [r["lr"] for r in train_rows]  # warm-up over 2 iterations, then cosine, once per iteration
    assert lrs[0] == pytest.approx(0.025) and lrs[1] == pytest.approx(0.05) and lrs[2] > lrs[3] > 0
    assert [r["epoch"] for r in val_rows] == [0, 1]
    for r in val_rows:
        assert r["config_widest"] == "w1.000_r16" and r["config_narrowest"] == "w0.250_r8"
        assert 0 <= r["top1_narrowest"] <= 100 and r["top1_widest"] <= r["top5_widest"]
    assert (run_dir / "train.csv").read_text().splitlines()[0].startswith("epoch,step,loss")

    ckpt = load_checkpoint(run_dir / "last.pt")
    meta = ckpt["meta"]
    assert meta["mode"] == "mutual" and meta["resolutions"] == [16, 12, 8]
    # the width range is stored once: in model_args, which rebuild the model
    assert ckpt["model_args"]["width_range"] == [0.25, 1.0] and "width_range" not in meta
    assert "width_range" not in ckpt["config"]["model"]
    assert meta["dataset"] == {"name": "synthetic", "root": None, "num_classes": 10, "in_chans": 3}
    # the input size, statistics and resize mode are stored once: in the preprocessing record
    assert meta["preprocessing"] == {"mean": [0.0] * 3, "std": [1.0] * 3, "input_size": 16, "resize_ratio": 0.875,
                                     "resize": "antialias"} and "resize" not in meta
    ts = ckpt["train_state"]
    assert (ts["epoch"], ts["epoch_step"], ts["step"]) == (2, 0, 4)
    assert {"optimizer", "scheduler", "scaler", "rng", "best_top1"} <= set(ts)
    assert ts["scheduler"]["last_epoch"] == 4
    assert {"sampler", "torch", "python", "numpy"} <= set(ts["rng"][0])
    assert ckpt["config"]["train"]["mode"] == "mutual"
    assert not any("calib_stats" in k for k in ckpt["model"])  # validation's statistics are not left behind
    model = model_from_checkpoint(ckpt)
    assert model.width_range == (0.25, 1.0)
    best = load_checkpoint(run_dir / "best.pt")
    assert best["meta"]["top1"]["widest"] == max(r["top1_widest"] for r in val_rows)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains(tmp_path, mode):
    run_dir = train(tiny(tmp_path, f"train.mode={mode}", "run.max_steps=1", "run.val_every=0",
                         "run.tensorboard=false"))
    train_rows = rows(run_dir, "train")
    assert len(train_rows) == 1
    n = 1 if mode in ("single", "msaug") else 4
    assert all(len(r["losses"]) == n for r in train_rows)
    ckpt = load_checkpoint(run_dir / "last.pt")
    meta = ckpt["meta"]
    assert meta["mode"] == mode
    if mode in ("single", "msaug"):
        assert ckpt["model_args"]["width_range"] == [1.0, 1.0]
    if mode == "single":
        assert meta["resolutions"] == [16]
    if mode in ("usnet", "mutual_gt"):  # the widest's CE and the others' losses have the same scale
        assert all(r["losses"][1] > 0.5 for r in train_rows) == (mode == "mutual_gt")


def test_max_steps_leaves_a_validated_best_pt_and_every_epoch_prints_one_line(tmp_path, capsys):
    """A run stopped by run.max_steps mid-epoch is validated and writes best.pt (the guide's next command reads
    it); each epoch prints one line with loss, widest/narrowest top-1, time and ETA even without bars;
    the run's wall time in the checkpoint covers the resumed part too."""
    run_dir = train(tiny(tmp_path, "run.max_steps=3", "run.tensorboard=false", "train.epochs=3"))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"epoch 1/3: loss \d+\.\d{4}, top-1 widest [\d.]+%, narrowest [\d.]+%, [\d.]+ s "
                        r"\(run [\d.]+ s\), ETA [\d.]+ s", lines[0]), lines[0]
    assert lines[1].startswith("epoch 2/3 (stopped by run.max_steps at iteration 3): loss ")
    best, last = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir / "last.pt")
    val_rows = rows(run_dir, "val")
    assert [r["step"] for r in val_rows] == [2, 3]  # the partial epoch was validated
    assert best["meta"]["top1"]["widest"] == max(r["top1_widest"] for r in val_rows)
    assert last["train_state"]["step"] == 3 and last["train_state"]["elapsed_s"] > 0
    before = last["train_state"]["elapsed_s"]
    train(resume_config(run_dir / "last.pt", ["run.max_steps=null"]), resume=run_dir / "last.pt")
    after = load_checkpoint(run_dir / "last.pt")["train_state"]
    assert after["step"] == 6 and after["elapsed_s"] > before  # the resumed part adds to the first
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert out[0].startswith("epoch 2/3: ") and out[-1].startswith("epoch 3/3: ") and len(out) == 2


def test_without_validation_the_final_weights_are_best_pt(tmp_path):
    run_dir = train(tiny(tmp_path, "run.val_every=0", "run.tensorboard=false", "run.max_steps=1"))
    assert not rows(run_dir, "val")
    torch.testing.assert_close(load_checkpoint(run_dir / "best.pt")["model"],
                               load_checkpoint(run_dir / "last.pt")["model"])


def test_amp_and_channels_last(tmp_path, capsys):
    run_dir = train(tiny(tmp_path, "run.amp=bf16", "run.channels_last=true", "run.max_steps=1", "run.val_every=0",
                         "run.tensorboard=false"))
    assert "note: run.amp=bf16 on a CPU is usually slower" in capsys.readouterr().err
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows(run_dir, "train"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import mutualnet.train.loop as loop

    calls = []

    def diverging_step(*args, **kwargs):  # the real step; its 4th loss reads as NaN (as a diverged run would)
        losses = real_step(*args, **kwargs)
        calls.append(1)
        return losses * float("nan") if len(calls) == 4 else losses

    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", diverging_step)
    cfg = tiny(tmp_path, "run.save_every=1", "run.tensorboard=false", "train.epochs=3")
    with pytest.raises(MutualNetError, match=r"loss became nan at iteration 4 .*last good checkpoint .* untouched"):
        train(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")  # intact, loadable, from the iteration before
    assert ckpt["train_state"]["step"] == 3 == rows(tmp_path / "run", "train")[-1]["step"]


def test_nonfinite_weights_are_never_saved(tmp_path, monkeypatch):
    import mutualnet.train.loop as loop

    calls = []

    def overflowing_step(model, *args, **kwargs):  # a finite loss, but the 2nd update overflows a weight
        losses = real_step(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            next(model.parameters()).grad.fill_(float("inf"))
        return losses

    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", overflowing_step)
    with pytest.raises(MutualNetError, match="non-finite by iteration 2.*without overwriting"):
        train(tiny(tmp_path, "run.save_every=1", "run.tensorboard=false", "train.epochs=3"))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["train_state"]["step"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_cli_train_and_errors(tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": "resnet20_cifar", "width_range": [0.25, 1.0]},
        "data": {"name": "synthetic", "synthetic_length": 16, "batch_size": 8, "workers": 0},
        "train": {"resolutions": [16, 8], "epochs": 1},
        "run": {"out": str(tmp_path / "cli"), "device": "cpu", "progress": False, "tensorboard": False,
                "calib_batches": 1}}))
    assert main(["train", "--config", str(recipe)]) == 0
    assert (tmp_path / "cli" / "last.pt").exists()
    before = (tmp_path / "cli" / "last.pt").read_bytes()

    def error(*argv):
        capsys.readouterr()
        assert main(["train", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    assert "already holds a run" in error("--config", str(recipe))  # never overwrites a run
    assert (tmp_path / "cli" / "last.pt").read_bytes() == before
    assert "--config FILE" in error()
    assert "unknown config key" in error("--config", str(recipe), "--set", "train.lr=1")
    assert "unknown dataset" in error("--config", str(recipe), "--set", "data.name=imagenet22k",
                                      "--set", f"run.out={tmp_path / 'x'}")
    assert "not found" in error("--config", str(tmp_path / "missing.yaml"))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    assert "not a mutualnet checkpoint" in error("--resume", str(foreign))
    weights_only = tmp_path / "weights.pt"
    save_checkpoint(weights_only, create_model("resnet20_cifar"), {"mode": "mutual"})
    assert "no training state" in error("--resume", str(weights_only))
    assert "drop --config" in error("--resume", str(tmp_path / "cli" / "last.pt"), "--config", str(recipe))
