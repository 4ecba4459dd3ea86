"""``data.train_subset``: training on a fixed random subset (how ``mutualnet compare --train-images`` shrinks a run)."""

import pytest
import torch

from mutualnet import MutualNetError
from mutualnet.checkpoint import load_checkpoint
from mutualnet.data import build_dataset
from mutualnet.train import load_config, train
from mutualnet.train.loop import train_subset


def test_the_subset_is_the_same_for_every_seed_and_a_proper_subset():
    ds = build_dataset("synthetic", "train", synthetic_length=40, input_size=16)
    a, b = train_subset(ds, 10), train_subset(ds, 10)
    assert a.indices == b.indices and len(set(a.indices)) == 10 and a.indices != list(range(10))
    assert torch.equal(a[0][0], ds[a.indices[0]][0])
    with pytest.raises(MutualNetError, match="exceeds the 40 images"):
        train_subset(ds, 41)


def test_training_on_a_subset_runs_fewer_iterations_per_epoch(tmp_path):
    cfg = load_config(None, [
        "model.name=resnet20_cifar", "model.width_range=[0.5, 1.0]", "data.name=synthetic",
        "data.synthetic_length=32", "data.batch_size=8", "data.workers=0", "data.train_subset=16",
        "train.resolutions=[16, 8]", "train.epochs=1", "optim.lr=0.05", "run.device=cpu", "run.progress=false",
        "run.val_every=0", "run.tensorboard=false", f"run.out={tmp_path / 'run'}"])
    ckpt = load_checkpoint(train(cfg) / "last.pt")
    assert ckpt["train_state"]["steps_per_epoch"] == 2  # 16 images / batch 8, not 32 / 8
    assert ckpt["config"]["data"]["train_subset"] == 16
    with pytest.raises(MutualNetError, match="data.train_subset"):
        train(load_config(None, ["data.name=synthetic", "data.train_subset=0", f"run.out={tmp_path / 'bad'}"]))
