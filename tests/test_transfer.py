"""Transfer learning: a pretrained network, a new classifier, mutual learning on an ImageFolder dataset."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mutualnet import MutualNetError
from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mutualnet.models import create_model
from mutualnet.train import load_config, train
from mutualnet.train.transfer import describe_init, load_pretrained

RECIPE = Path(__file__).parents[1] / "configs" / "transfer_mobilenet_v1_imagefolder.yaml"


def make_imagefolder(root, classes=3, per_class=8, size=20, seed=0):
    """root/{train,val}/<class>/*.png: each class a distinct colour plus noise."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(per_class):
                base = np.zeros((size, size, 3)) + np.eye(3)[c % 3] * 180
                img = np.clip(base + rng.integers(0, 60, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture
def source(tmp_path):
    """A 'pretrained' resnet20 (10 classes) saved as a mutualnet checkpoint."""
    model = create_model("resnet20_cifar", width_range=(0.25, 1.0), num_classes=10)
    return model, save_checkpoint(tmp_path / "src.pt", model, {"mode": "mutual", "resolutions": [16, 12]})


def test_load_pretrained_keeps_all_but_the_classifier(source, tmp_path):
    src, path = source
    src.bn1.calibrated["w0.250_r16"] = (torch.zeros(8), torch.ones(8))
    save_checkpoint(path, src, {})
    dst = create_model("resnet20_cifar", width_range=(0.25, 1.0), num_classes=3)
    report = load_pretrained(dst, path)
    assert report["skipped"] == ["fc.weight", "fc.bias"] and report["source"] == "resnet20_cifar"
    torch.testing.assert_close(dst.layer3[2].conv2.weight, src.layer3[2].conv2.weight)
    assert dst.fc.weight.shape[0] == 3 and not dst.bn1.calibrated  # other dataset's statistics dropped
    torch.save(src.state_dict(), tmp_path / "plain.pth")  # torchvision-style state dict
    assert load_pretrained(create_model("resnet20_cifar", num_classes=3), tmp_path / "plain.pth")["loaded"] > 50

    with pytest.raises(MutualNetError, match="holds a resnet20_cifar"):
        load_pretrained(create_model("mobilenet_v1_cifar", num_classes=3), path)
    with pytest.raises(MutualNetError, match=r"trained at widths \[0.25, 1\], but this run's model.width_range is "
                                             r"\[0.25, 0.5\].*same width range"):
        load_pretrained(create_model("resnet20_cifar", width_range=(0.25, 0.5), num_classes=3), path)
    with pytest.raises(MutualNetError, match="plain state dict .a width-1.0 network."):
        load_pretrained(create_model("resnet20_cifar", width_range=(0.5, 2.0), num_classes=3), tmp_path / "plain.pth")
    narrower = load_pretrained(create_model("resnet20_cifar", width_range=(0.125, 1.0), num_classes=3), path)
    assert describe_init(narrower) == (f"model.init: loaded {report['loaded']} tensors from {path} (resnet20_cifar "
                                       "trained at widths [0.25, 1]); new classifier: fc.weight, fc.bias; widths "
                                       "below 0.25 were never trained in the source")
    torch.save({"weights": [1, 2]}, tmp_path / "junk.pt")
    with pytest.raises(MutualNetError, match="neither a mutualnet checkpoint"):
        load_pretrained(dst, tmp_path / "junk.pt")


def frozen_args(tiny, tmp_path):
    """The tiny transfer run with LR ~0 for one iteration: its weights stay the pretrained ones."""
    return [*tiny, "optim.lr=1.0e-12", "optim.weight_decay=0.0", "run.max_steps=1", f"run.out={tmp_path / 'lr0'}"]


def test_transfer_recipe_end_to_end(source, tmp_path, capsys, monkeypatch):
    """The paper's recipe, shrunk: init from a checkpoint, new 3-class head, mutual learning, a run folder."""
    src, path = source
    root = make_imagefolder(tmp_path / "data")
    tiny = ["model.name=resnet20_cifar", f"model.init={path}", f"data.root={root}", "data.batch_size=8",
            "data.workers=0", "train.resolutions=[16, 12]", "train.epochs=2", "run.device=cpu", "run.amp=none",
            "run.channels_last=false", "run.progress=false", "run.tensorboard=false", "run.calib_batches=1",
            "run.threads=1", f"run.out={tmp_path / 'run'}"]
    cfg = load_config(RECIPE, tiny)
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.train.epochs, cfg.train.mode) == (8, 0.1, 2, "mutual")
    monkeypatch.chdir(tmp_path)  # a relative data.root is recorded absolute
    run0 = train(load_config(RECIPE, [*frozen_args(tiny, tmp_path), "data.root=data"]))
    assert f"model.init: loaded {len(src.state_dict()) - 2} tensors from {path} (resnet20_cifar trained at widths " \
           "[0.25, 1]); new classifier: fc.weight, fc.bias" in capsys.readouterr().out
    m0 = model_from_checkpoint(run0 / "last.pt")
    torch.testing.assert_close(m0.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
    assert m0.num_classes == 3

    run = train(cfg)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["meta"]["dataset"]["num_classes"] == 3 and ckpt["meta"]["mode"] == "mutual"
    assert ckpt["meta"]["class_names"] == ["c0", "c1", "c2"]  # the artefact speaks the user's labels
    assert ckpt["meta"]["preprocessing"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                             "input_size": 16, "resize_ratio": 0.875, "resize": "antialias"}
    assert load_checkpoint(run0 / "last.pt")["meta"]["dataset"]["root"] == str(root.absolute())
    model = model_from_checkpoint(ckpt)
    assert model.num_classes == 3 and not torch.equal(model.layer2[0].conv1.weight, src.layer2[0].conv1.weight)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)


def _sets(tmp_path, init, **extra):
    base = {"model.name": "resnet20_cifar", "model.width_range": "[0.25, 1.0]", "model.init": str(init),
            "data.name": "synthetic", "data.synthetic_length": 8, "data.batch_size": 8, "data.workers": 0,
            "train.resolutions": "[16, 12]", "run.max_steps": 1, "run.val_every": 0, "run.device": "cpu",
            "run.progress": "false", "run.tensorboard": "false", "run.out": str(tmp_path / "run")} | extra
    return [f"{k}={v}" for k, v in base.items()]


def test_init_of_another_top_width_is_adopted_and_another_model_refused_before_any_data(tmp_path, monkeypatch,
                                                                                         capsys):
    """model.init decides what it can: its width range is adopted (with a note), another model is refused with
    the --set that fits, before a dataset or loader worker exists."""
    import mutualnet.train.loop as loop

    wide = create_model("resnet20_cifar", width_range=(0.5, 1.5), num_classes=10)
    path = save_checkpoint(tmp_path / "wide.pt", wide, {"mode": "mutual", "resolutions": [16, 12]})
    run = train(load_config(None, _sets(tmp_path, path)))
    assert "training at the width range [0.5, 1.5] of" in capsys.readouterr().out
    got = model_from_checkpoint(load_checkpoint(run / "last.pt"))
    assert tuple(got.width_range) == (0.5, 1.5)
    torch.testing.assert_close(got.layer3[2].conv2.weight, wide.layer3[2].conv2.weight, atol=0.1, rtol=0)

    other = save_checkpoint(tmp_path / "v1.pt", create_model("mobilenet_v1_cifar", num_classes=10), {})
    monkeypatch.setattr(loop, "build_data", lambda *a, **kw: pytest.fail("data was built before model.init was "
                                                                           "checked"))
    with pytest.raises(MutualNetError, match=r"holds a mobilenet_v1_cifar, but this run trains a resnet20_cifar; "
                                             r".*--set model.name=mobilenet_v1_cifar"):
        train(load_config(None, _sets(tmp_path, other, **{"run.out": str(tmp_path / "run2")})))
