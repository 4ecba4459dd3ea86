"""The resize mode: one function, two exact F.interpolate calls, recorded in checkpoints, tables and exports."""

import pytest
import torch
import torch.nn.functional as F

import mutualnet as mn
from mutualnet.calibrate import calibrate
from mutualnet.checkpoint import checkpoint_dict, load_checkpoint, model_from_checkpoint, resize_mode, save_checkpoint
from mutualnet.data.transforms import RESIZE_MODES, resize_batch
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


def test_checkpoints_record_the_mode_and_old_ones_read_as_antialias(tmp_path):
    model = mn.create_model("resnet20_cifar", width_range=(0.25, 1.0))
    ckpt = checkpoint_dict(model, {"mode": "mutual"})
    assert ckpt["meta"]["resize"] == "antialias"  # every checkpoint records it
    del ckpt["meta"]["resize"]  # as written before the setting existed: trained with antialiasing
    assert resize_mode(ckpt) == "antialias" and model_from_checkpoint(ckpt).resize_mode == "antialias"
    model.resize_mode = "official"
    save_checkpoint(tmp_path / "o.pt", model)
    back = model_from_checkpoint(load_checkpoint(tmp_path / "o.pt"))
    assert back.resize_mode == "official"
    assert checkpoint_dict(back)["meta"]["resize"] == "official"  # a re-saved checkpoint keeps it


def _stats(model, key):
    return torch.cat([m.calibrated[key][0] for m in model.modules() if isinstance(m, mn.layers.SlimmableBatchNorm2d)])


def test_calibration_evaluation_search_and_export_follow_the_recorded_mode(tmp_path):
    torch.manual_seed(0)
    images, labels = torch.randn(24, 3, 16, 16), torch.randint(10, (24,))
    model = mn.create_model("resnet20_cifar", width_range=(0.25, 0.5)).eval()
    per_mode = {}
    for mode in RESIZE_MODES:
        key = calibrate(model, images, 0.25, 10, resize=mode).key
        per_mode[mode] = _stats(model, key).clone()
    model.resize_mode = "official"
    key = calibrate(model, images, 0.25, 10).key  # no argument: the model's recorded mode
    assert torch.equal(_stats(model, key), per_mode["official"])
    assert not torch.allclose(per_mode["official"], per_mode["antialias"])
    wrong = {mode: evaluate(model, (images, labels), 0.25, 10, resize=mode)["top1"] for mode in RESIZE_MODES}
    assert evaluate(model, (images, labels), 0.25, 10)["top1"] == wrong["official"]

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
    assert ckpt["meta"]["resize"] == "official" and ckpt["config"]["data"]["resize"] == "official"
    assert model_from_checkpoint(ckpt).resize_mode == "official"
