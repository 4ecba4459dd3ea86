"""Exact resume: a run killed with SIGKILL and resumed follows the uninterrupted run's loss trajectory."""

import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import read_metrics, tiny_recipe
from mutualnet.checkpoint import load_checkpoint
from mutualnet.train import config_from_dict, train


def recipe(out):
    return tiny_recipe(out, train={"epochs": 4}, run={"save_every": 3})  # 5 iterations per epoch


def train_rows(run_dir):
    return read_metrics(run_dir, "train"), read_metrics(run_dir, "val")


def cli(*args):
    return [sys.executable, "-c", "import sys; from mutualnet.cli import main; sys.exit(main())", "train", *args]


@pytest.mark.slow
def test_sigkill_and_resume_follow_the_uninterrupted_trajectory(tmp_path):
    reference = train(config_from_dict(recipe(tmp_path / "reference")))
    ref_train, ref_val = train_rows(reference)
    assert len(ref_train) == 20

    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(recipe(tmp_path / "killed")))
    metrics = tmp_path / "killed" / "metrics.jsonl"
    proc = subprocess.Popen(cli("--config", str(path)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and sum('"train"' in ln for ln in metrics.read_text().splitlines()) >= 7:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = len(train_rows(tmp_path / "killed")[0])
    ckpt = load_checkpoint(tmp_path / "killed" / "last.pt")
    resumed_from = ckpt["train_state"]["step"]
    assert 3 <= resumed_from <= killed_at < 20
    assert ckpt["train_state"]["epoch_step"] > 0  # checkpoints at 6 and 9 are mid-epoch: resume mid-epoch
    print(f"killed after iteration {killed_at}, resumed from iteration {resumed_from}")

    done = subprocess.run(cli("--resume", str(tmp_path / "killed" / "last.pt")), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got_train, got_val = train_rows(tmp_path / "killed")
    assert [r["step"] for r in got_train] == list(range(1, 21))  # rows after the checkpoint were replaced
    for got, ref in zip(got_train, ref_train):
        assert got["losses"] == pytest.approx(ref["losses"], rel=1e-6, abs=1e-7), got["step"]
        assert got["lr"] == pytest.approx(ref["lr"], rel=1e-12)  # the schedule continued, it did not restart
    for got, ref in zip(got_val, ref_val, strict=True):
        assert got["top1_widest"] == ref["top1_widest"] and got["loss_narrowest"] == pytest.approx(
            ref["loss_narrowest"], rel=1e-5)
    final, ref_final = load_checkpoint(tmp_path / "killed" / "last.pt"), load_checkpoint(reference / "last.pt")
    for k, v in ref_final["model"].items():
        torch.testing.assert_close(final["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
