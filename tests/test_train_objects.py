"""mutualnet.train.fit: a model object and dataset objects through the trainer of ``mutualnet train``.

The README's notebook example runs verbatim; a ``python:<class>`` checkpoint resumes exactly with the same object,
loads into it, and is refused by the command line in one line; a zoo model trained from objects stays rebuildable.
"""

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import mutualnet as mn
from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint
from mutualnet.cli import main
from mutualnet.deploy import export_subnet, save_exported
from mutualnet.errors import MutualNetError
from mutualnet.train import fit

README = Path(__file__).resolve().parents[1] / "README.md"
QUIET = {"run.progress": False, "run.tensorboard": False, "data.workers": 0}


def test_readme_notebook_example_runs_verbatim(tmp_path, monkeypatch, capsys):
    block = README.read_text().split("## Your own model and data, from Python")[1].split("```python")[1]
    block = block.split("```")[0]
    assert len(block.strip().splitlines()) < 20
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(block, scope)  # noqa: S102 - the README's own example
    run = tmp_path / "runs" / "mine"
    assert scope["run"] == Path("runs/mine") and {"last.pt", "best.pt", "metrics.jsonl", "best.onnx"} <= {
        p.name for p in run.iterdir()}
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["model_name"] == "python:SlimmedNet" and ckpt["model_args"]["width_range"] == [0.5, 1.0]
    assert ckpt["meta"]["resolutions"] == [32, 27, 23, 18] and ckpt["meta"]["dataset"]["name"] is None
    assert ckpt["meta"]["preprocessing"]["mean"] == [0.0] * 3  # no Normalize in the dataset: tensors as given
    rows = [r for r in map(eval_json, (run / "metrics.jsonl").read_text().splitlines())]
    assert sum(r["kind"] == "val" for r in rows) == 2 and rows[-1]["top1_narrowest"] > 90  # it learnt the task
    assert min(r["top1"] for r in scope["table"].rows) > 90  # every configuration, calibrated
    best = scope["best"]
    assert best["mflops"] <= 0.5 and f"width {best['width']:g}" in capsys.readouterr().out
    # the command line cannot rebuild the model: one line saying where it can be used
    for argv in (["search", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path / "s")],
                 ["export", "--checkpoint", str(run / "best.pt"), "--width", "1.0", "--resolution", "32", "--out",
                  str(tmp_path / "e.pt")],
                 ["train", "--resume", str(run / "last.pt")]):
        assert main(argv) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and "SlimmedNet, a model built in Python" in err[0] and "model=model" in err[0], err
    # Python loads it into the same model object; a .pt export (rebuilt from the registry) is refused
    again = mn.slim(scope["Net"](), width_range=(0.5, 1.0), input_size=32)
    model_from_checkpoint(run / "last.pt", model=again)
    trained = dict(scope["model"].named_parameters())  # (the searched object also holds calibrated statistics)
    assert all(torch.equal(p, trained[k]) for k, p in again.named_parameters())
    with pytest.raises(MutualNetError, match="not this model"):
        model_from_checkpoint(run / "last.pt", model=mn.create_model("resnet20_cifar", num_classes=2))
    with pytest.raises(MutualNetError, match="torchscript or onnx"):
        save_exported(export_subnet(again, 1.0, 32)[0], tmp_path / "x.pt", "pt")


def eval_json(line: str) -> dict:
    import json

    return json.loads(line)


class Blobs(Dataset):
    """A 3-class toy set: the class shifts the mean of one channel; ``classes`` as torchvision datasets have."""

    classes = ["a", "b", "c"]

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 3, 16, 16, generator=g)
        self.x[torch.arange(n), self.y] += 1.5

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i] + 0.1 * torch.randn(3, 16, 16), int(self.y[i])  # random noise: seeded by the trainer


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return mn.slim(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)),
                   width_range=(0.5, 1.0), input_size=16)


def test_fit_resumes_exactly_with_the_same_object(tmp_path):
    settings = QUIET | {"train.epochs": 2, "data.batch_size": 16, "optim.lr": 0.1, "train.resolutions": [16, 12]}
    whole = _tiny_net()
    fit(whole, Blobs(64, 0), Blobs(32, 1), overrides=settings | {"run.out": str(tmp_path / "whole")})
    part = _tiny_net()  # stopped after 3 of 8 iterations, then continued by a fresh object of the same model
    fit(part, Blobs(64, 0), Blobs(32, 1), overrides=settings | {"run.out": str(tmp_path / "part"), "run.max_steps": 3})
    again = _tiny_net()
    with pytest.raises(MutualNetError, match="leave config out"):
        fit(again, Blobs(64, 0), Blobs(32, 1), {"train": {"epochs": 2}}, resume=tmp_path / "part" / "last.pt")
    fit(again, Blobs(64, 0), Blobs(32, 1), resume=tmp_path / "part" / "last.pt", overrides={"run.max_steps": None})
    for a, b in zip(whole.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    ckpt = load_checkpoint(tmp_path / "part" / "last.pt")
    assert ckpt["meta"]["class_names"] == ["a", "b", "c"] and ckpt["train_state"]["step"] == 8


def test_fit_a_zoo_model_from_a_loader_stays_rebuildable(tmp_path):
    model = mn.create_model("resnet20_cifar", num_classes=3, width_range=(0.5, 1.0))
    loader = DataLoader(Blobs(32, 0), batch_size=8, num_workers=0)
    recipe = README.parent / "configs" / "resnet20_fashion_mnist.yaml"  # its own model / data source are replaced
    run = fit(model, loader, Blobs(16, 1), recipe,
              overrides=QUIET | {"train.epochs": 1, "run.out": str(tmp_path / "zoo"), "train.resolutions": None})
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["model_name"] == "resnet20_cifar" and ckpt["config"]["data"]["batch_size"] == 8  # the loader's
    assert ckpt["train_state"]["step"] == 4 and ckpt["meta"]["resolutions"] == [16, 14, 11, 9]
    rebuilt = model_from_checkpoint(ckpt)  # no object needed: the registry builds it
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("case, message", [
    ("plain", "not slimmable"),
    ("pil", "must yield \\(image tensor"),
    ("width", "differs from the model object's"),
    ("classes", "has 3 classes"),
    ("too_big", "exceeds the train_data images"),
    ("holdout", "data.holdout"),
    ("init", "model.init"),
])
def test_fit_refuses_objects_that_do_not_fit(tmp_path, case, message):
    model, train_set, over = _tiny_net(), Blobs(16, 0), {"run.out": str(tmp_path / "r")}
    if case == "plain":
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    elif case == "pil":
        train_set = [(None, 0)] * 4
        train_set = _ListData(train_set)
    elif case == "width":
        over["model.width_range"] = [0.25, 1.0]
    elif case == "classes":
        model = mn.slim(nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)))
    elif case == "too_big":
        over["train.resolutions"] = [32, 16]
    elif case == "holdout":
        over["data.holdout"] = 4
    else:
        over["model.init"] = str(tmp_path / "w.pt")
    with pytest.raises(MutualNetError, match=message):
        fit(model, train_set, Blobs(8, 1), overrides=QUIET | over)
    assert not (tmp_path / "r" / "last.pt").exists()


class _ListData(Dataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]
