"""The resize mode: one function, two exact F.interpolate calls, one record (the model's preprocessing) read by
calibration, evaluation, search and export, stored once in checkpoints; checkpoints of older layouts still load."""

import pytest
import torch
import torch.nn.functional as F

import mutualnet as mn
from mutualnet.calibrate import calibrate
from mutualnet.checkpoint import VERSION, checkpoint_dict, load_checkpoint, model_from_checkpoint, save_checkpoint
from mutualnet.data import IMAGENET_MEAN, IMAGENET_STD, RESIZE_MODES, resize_batch
from mutualnet.data.preprocess import DATASET_STATS, Preprocessing
from mutualnet.deploy import export_subnet, load_exported, save_exported
from mutualnet.evaluate import evaluate
from mutualnet.search import build_query_table
from mutualnet.train import load_config, train
from mutualnet.train.config import resolve

EXACT = {
    "antialias": dict(mode="bilinear", align_corners=False, antialias=True),
    "official": dict(mode="bilinear", align_corners=True, antialias=False),  # the original code's InputList/test
}


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_each_mode_is_one_exact_interpolate_call(mode):
    x = torch.randn(2, 3, 32, 32)
    for r in (24, 17, 40):
        assert torch.equal(resize_batch(x, r, mode), F.interpolate(x, size=(r, r), **EXACT[mode]))
    assert resize_batch(x, 32, mode) is x  # the top resolution is the batch itself
    other = "official" if mode == "antialias" else "antialias"
    assert not torch.allclose(resize_batch(x, 16, mode), resize_batch(x, 16, other))


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(mn.MutualNetError, match="unknown resize mode 'nearest'.*antialias, official"):
        resize_batch(torch.zeros(1, 1, 8, 8), 4, "nearest")
    with pytest.raises(mn.MutualNetError, match="data.resize must be one of antialias, official"):
        resolve(load_config(None, ["model.name=resnet20_cifar", "data.resize=bicubic"]))


def test_checkpoints_record_the_preprocessing_once_and_hand_it_to_the_model(tmp_path):
    model = mn.create_model("resnet20_cifar", width_range=(0.25, 1.0))
    ckpt = checkpoint_dict(model, {"mode": "mutual", "resolutions": [32, 24]})  # a model built by hand
    assert ckpt["version"] == VERSION == 2 and "resize" not in ckpt["meta"]
    assert ckpt["meta"]["preprocessing"] == Preprocessing(input_size=32).to_dict()  # implied: ImageNet's, antialias
    model.preprocessing = Preprocessing((0.5,) * 3, (0.25,) * 3, 32, resize="official")
    save_checkpoint(tmp_path / "o.pt", model, {"resolutions": [32, 24]})  # the model's record wins over implied
    back = model_from_checkpoint(load_checkpoint(tmp_path / "o.pt"))
    assert back.preprocessing == model.preprocessing
    assert checkpoint_dict(back)["meta"]["preprocessing"] == model.preprocessing.to_dict()  # re-saved: kept
    with pytest.raises(mn.MutualNetError, match="unknown resize mode 'nearest'"):
        Preprocessing(resize="nearest")
    with pytest.raises(mn.MutualNetError, match="preprocessing std must be > 0"):
        Preprocessing.from_dict({"mean": [0.5], "std": [0.0]})


CIFAR_MEAN, CIFAR_STD = DATASET_STATS["cifar10"]
# checkpoints as older mutualnet versions wrote them (meta only) and the record each one means
OLD_LAYOUTS = {
    "format 1": ({"resolutions": [32, 24], "resize": "official",  # the mode beside a record that lacked it
                  "dataset": {"name": "cifar10", "in_chans": 3, "input_size": 32},
                  "preprocessing": {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD), "input_size": 32,
                                    "resize_ratio": 0.875}},
                 Preprocessing(CIFAR_MEAN, CIFAR_STD, 32, resize="official")),
    "format 1, record with its mode": ({"resolutions": [32], "resize": "antialias",
                                        "preprocessing": {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 28,
                                                          "resize_ratio": 0.9, "resize": "official"}},
                                       Preprocessing((0.5,) * 3, (0.25,) * 3, 28, 0.9, "official")),
    "before the resize record": ({"resolutions": [32, 24], "width_range": [0.25, 1.0],
                                  "dataset": {"name": "synthetic", "input_size": 30, "mean": [0.1] * 3,
                                              "std": [0.2] * 3}},
                                 Preprocessing((0.1,) * 3, (0.2,) * 3, 30)),
    "before any preprocessing record": ({"resolutions": [32, 24], "dataset": {"name": "cifar10"}},
                                        Preprocessing(CIFAR_MEAN, CIFAR_STD, 32)),
    "nothing recorded": ({}, Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 224)),
}


@pytest.mark.parametrize("layout", OLD_LAYOUTS)
def test_checkpoints_of_older_layouts_load_with_their_preprocessing(tmp_path, layout):
    meta, want = OLD_LAYOUTS[layout]
    model = mn.create_model("resnet20_cifar", width_range=(0.25, 1.0))
    old = {"format": "mutualnet", "model_name": model.model_name, "model_args": dict(model.model_args),
           "model": model.state_dict(), "meta": meta} | ({} if layout.startswith("before") else {"version": 1})
    torch.save(old, tmp_path / "old.pt")
    ckpt = load_checkpoint(tmp_path / "old.pt")  # read in today's layout
    assert ckpt["version"] == VERSION and ckpt["meta"]["preprocessing"] == want.to_dict()
    assert not {"resize", "width_range"} & set(ckpt["meta"])
    assert not {"mean", "std", "input_size"} & set(ckpt["meta"].get("dataset", {}))  # held once, in the record
    assert ckpt["meta"].get("resolutions") == meta.get("resolutions")
    back = model_from_checkpoint(tmp_path / "old.pt")
    assert back.preprocessing == want and model_from_checkpoint(old).preprocessing == want  # in memory too
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())
    save_checkpoint(tmp_path / "new.pt", back)  # re-saved: today's layout, the same record
    assert load_checkpoint(tmp_path / "new.pt")["meta"]["preprocessing"] == want.to_dict()


def _stats(model, key):
    return torch.cat([m.calibrated[key][0] for m in model.modules() if isinstance(m, mn.layers.SlimmableBatchNorm2d)])


def test_calibration_evaluation_search_and_export_follow_the_recorded_mode(tmp_path):
    torch.manual_seed(0)
    images, labels = torch.randn(24, 3, 16, 16), torch.randint(10, (24,))
    model = mn.create_model("resnet20_cifar", width_range=(0.25, 0.5)).eval()
    for mode in RESIZE_MODES:  # the reference: inputs resized by hand, under the other mode's record
        other = next(m for m in RESIZE_MODES if m != mode)
        small = F.interpolate(images, size=(10, 10), **EXACT[mode])  # already at 10 px: nothing left to resize
        model.preprocessing = Preprocessing(resize=other)
        ref = _stats(model, calibrate(model, small, 0.25, 10).key).clone(), evaluate(model, (small, labels), 0.25, 10)
        model.preprocessing = Preprocessing(resize=mode)
        assert torch.equal(_stats(model, calibrate(model, images, 0.25, 10).key), ref[0])
        assert evaluate(model, (images, labels), 0.25, 10) == ref[1]
    model.preprocessing = Preprocessing(resize="antialias")
    antialiased = _stats(model, calibrate(model, images, 0.25, 10).key).clone()
    model.preprocessing = Preprocessing(resize="official")
    assert not torch.allclose(_stats(model, calibrate(model, images, 0.25, 10).key), antialiased)

    table = build_query_table(model, _Pairs(images, labels), _Pairs(images, labels), resolutions=[16, 10],
                              widths=[0.25, 0.5], calib_images=24, progress=False)
    assert table.meta["resize"] == "official"
    net, _ = export_subnet(model, 0.25, 10)
    assert net.export_info["resize"] == "official"
    save_exported(net, tmp_path / "sub.pt")
    assert load_exported(tmp_path / "sub.pt").export_info["resize"] == "official"


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_training_resizes_with_the_configured_mode_and_records_it(tmp_path, monkeypatch):
    calls = []
    real = F.interpolate

    def spy(x, *a, **kw):
        if x.shape[-1] == 16:  # a batch of the run's 16 px images (not the synthetic templates)
            calls.append((kw.get("align_corners"), kw.get("antialias")))
        return real(x, *a, **kw)

    monkeypatch.setattr(F, "interpolate", spy)
    cfg = load_config(None, [
        "model.name=resnet20_cifar", "model.width_range=[0.25, 1.0]", "data.name=synthetic", "data.resize=official",
        "data.synthetic_length=16", "data.batch_size=8", "data.workers=0", "train.resolutions=[16, 12, 8]",
        "train.epochs=1", "run.device=cpu", "run.progress=false", "run.tensorboard=false", "run.calib_batches=1",
        "run.val_batches=1", f"run.out={tmp_path / 'run'}"])
    run_dir = train(cfg)
    assert calls and set(calls) == {(True, False)}  # training, calibration and validation: the original's
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["meta"]["preprocessing"]["resize"] == "official" and ckpt["config"]["data"]["resize"] == "official"
    assert model_from_checkpoint(ckpt).preprocessing.resize == "official" and "resize" not in ckpt["meta"]
