"""Distributed training: one gradient all-reduce per step, sync slimmable BN, 2 processes == 1 process."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader

from conftest import read_metrics
from mutualnet import create_model
from mutualnet.checkpoint import load_checkpoint
from mutualnet.data import TensorImages
from mutualnet.layers import SlimmableBatchNorm2d, SyncSlimmableBatchNorm2d, convert_sync_batchnorm
from mutualnet.train import SubNet, config_from_dict, train, train_step
from mutualnet.train.distributed import (
    EpochSampler,
    SeededSamples,
    all_reduce_gradients,
)


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_gradients_are_all_reduced_once_per_step(one_process_group, monkeypatch):
    model = create_model("resnet20_cifar", width_range=(0.25, 1.0))
    x, y = torch.randn(4, 3, 16, 16), torch.randint(10, (4,))
    plan = [SubNet(1.0, 16, "labels"), SubNet(0.25, 8, "teacher"), SubNet(0.5, 12, "teacher"),
            SubNet(0.75, 16, "teacher")]
    train_step(model, x, y, plan)  # four backward passes accumulate locally
    before = [p.grad.clone() for p in model.parameters()]
    calls = []
    real = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: (calls.append(t.numel()), real(t, *a, **k))[1])
    all_reduce_gradients(list(model.parameters()), world_size=1)
    assert len(calls) == 1 and calls[0] == sum(p.numel() for p in model.parameters())  # one flat bucket
    for g, p in zip(before, model.parameters()):
        torch.testing.assert_close(p.grad, g)


def test_sync_bn_matches_plain_bn_and_keeps_slimming(one_process_group):
    torch.manual_seed(0)
    plain = SlimmableBatchNorm2d(16, max_width=1.0)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    synced = SlimmableBatchNorm2d(16, max_width=1.0)
    synced.load_state_dict(plain.state_dict())
    convert_sync_batchnorm(synced)
    assert isinstance(synced, SyncSlimmableBatchNorm2d) and set(synced.state_dict()) == set(plain.state_dict())
    for width in (1.0, 0.5):
        plain.slim_state.width = synced.slim_state.width = width
        c = int(16 * width)
        x = torch.randn(4, c, 5, 5, requires_grad=True)
        x2 = x.detach().clone().requires_grad_()
        out, out2 = plain(x), synced(x2)
        torch.testing.assert_close(out2, out, rtol=1e-5, atol=1e-5)
        (out * torch.arange(c).view(1, -1, 1, 1)).square().sum().backward()
        (out2 * torch.arange(c).view(1, -1, 1, 1)).square().sum().backward()
        torch.testing.assert_close(x2.grad, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(synced.running_mean, plain.running_mean)
    torch.testing.assert_close(synced.running_var, plain.running_var)


def test_data_order_does_not_depend_on_the_number_of_processes():
    one = [i for i, _ in EpochSampler(40, seed=3)]
    s0, s1 = EpochSampler(40, num_replicas=2, rank=0, seed=3), EpochSampler(40, num_replicas=2, rank=1, seed=3)
    a, b = [i for i, _ in s0], [i for i, _ in s1]
    for k in range(5):  # global batch 8 = local batches of 4 on each process
        assert sorted(a[4 * k:4 * k + 4] + b[4 * k:4 * k + 4]) == sorted(one[8 * k:8 * k + 8])
    s0.set_epoch(0, start=8)
    assert [i for i, _ in s0] == a[8:]
    s0.set_epoch(1)
    assert [i for i, _ in s0] != a


def test_seeded_batches_do_not_depend_on_workers_resume_or_the_global_rng():
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ds = SeededSamples(TensorImages(images, torch.arange(40) % 10, mean=(0.5,), std=(0.25,), train=True))
    sampler = EpochSampler(40, seed=5)

    def batches(workers=0, start=0):
        sampler.set_epoch(1, start)
        loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=workers, generator=torch.Generator())
        return [x for x, _ in loader]

    torch.manual_seed(0)
    state = torch.get_rng_state()
    full = batches()
    assert torch.equal(torch.get_rng_state(), state)  # the training process's RNG is left alone
    assert not torch.equal(full[0], full[1])
    assert all(torch.equal(a, b) for a, b in zip(batches(workers=2), full, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(batches(start=16), full[2:], strict=True))  # resume at batch 2
    sampler.set_epoch(2)
    other = [x for x, _ in DataLoader(ds, batch_size=8, sampler=sampler)]
    assert not torch.equal(other[0], full[0])
    assert torch.equal(ds[(3, 77)][0], ds[(3, 77)][0]) and not torch.equal(ds[(3, 77)][0], ds[(3, 78)][0])


def recipe(out, sync_bn):
    return {
        "model": {"name": "resnet20_cifar", "width_range": [0.25, 1.0]},
        "data": {"name": "synthetic", "synthetic_length": 32, "batch_size": 8, "workers": 0},
        "train": {"mode": "mutual", "resolutions": [16, 12, 8], "epochs": 2},
        "optim": {"lr": 0.02},  # a stable regime: float summation-order noise is not amplified
        "run": {"out": str(out), "device": "cpu", "threads": 1, "progress": False, "tensorboard": False,
                "val_every": 0, "sync_bn": sync_bn},
    }


def losses(run_dir):
    return [r["losses"] for r in read_metrics(run_dir, "train")]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """With sync BN, 2 processes x 4 images compute exactly what 1 process x 8 images does.

    Same data order (EpochSampler), same sub-networks (same seed), BN statistics over the global batch,
    and gradients averaged once per step; only floating-point summation order differs.
    """
    one = train(config_from_dict(recipe(tmp_path / "one", sync_bn=False)))
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(recipe(tmp_path / "two", sync_bn=True)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "mutualnet", "train", "--config", str(path)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got, ref = losses(tmp_path / "two"), losses(one)
    assert len(got) == len(ref) == 8
    # float summation order differs (all_reduce of BN sums and gradients), and SGD amplifies that noise step by
    # step (measured: 1e-6 at step 1, ~3e-4 relative by step 8 on a 2-core x86 machine), so the first steps are
    # held tight and the later ones loosely; a missing sync BN or a wrong average differs by ~1e-2 from step 1
    for step, (g, r) in enumerate(zip(got, ref)):
        tight = step < 4
        assert g == pytest.approx(r, rel=1e-4 if tight else 1e-2, abs=1e-5 if tight else 2e-4), step
    a, b = load_checkpoint(tmp_path / "two" / "last.pt")["model"], load_checkpoint(one / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        # after 8 steps the same amplified noise reaches ~1e-3 absolute (conv1.weight, magnitude 0.36)
        torch.testing.assert_close(a[k], b[k], rtol=5e-3, atol=2e-3, msg=k)


def test_under_torchrun_only_rank_0_prints(monkeypatch, capsys):
    """Every process of a torchrun job runs the same command: rank 0 prints for all of them, errors stay."""
    from mutualnet.cli import main

    monkeypatch.setenv("RANK", "1")
    assert main(["models", "resnet20*"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["models", "nothing-matches*"]) == 1
    monkeypatch.setenv("RANK", "0")
    assert main(["models", "resnet20*"]) == 0
    assert "resnet20_cifar" in capsys.readouterr().out
