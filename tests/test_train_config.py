"""Training config: YAML recipes, overrides, type checks, and every recipe resolving in every mode."""

from pathlib import Path

import pytest
import torch

from mutualnet import MutualNetError, create_model
from mutualnet.train import MODES, load_config, resolve, sample_subnets
from mutualnet.train.config import config_from_dict, config_to_dict

RECIPES = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_recipes_exist():
    names = {p.stem for p in RECIPES}
    for expected in ("mobilenet_v1_imagenet", "mobilenet_v2_imagenet", "resnet50_imagenet",
                     "wide_resnet28_10_cifar10", "wide_resnet28_10_cifar100", "mobilenet_v1_scaleup_imagenet"):
        assert expected in names


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_resolves_in_every_mode(recipe, mode):
    cfg = resolve(load_config(recipe, [f"train.mode={mode}"]))
    t = cfg.train
    assert t.mode == mode
    assert t.resolutions == sorted(t.resolutions, reverse=True)
    assert cfg.data.input_size == t.resolutions[0]
    lo, hi = cfg.model.width_range
    if mode in ("single", "msaug"):
        assert lo == hi == t.width
    if mode == "single":
        assert len(t.resolutions) == 1
    with torch.device("meta"):  # building the real network checks names and widths without the memory
        model = create_model(cfg.model.name, num_classes=cfg.model.num_classes, width_range=(lo, hi), **cfg.model.args)
    assert min(t.resolutions) >= model.min_resolution
    plan = sample_subnets(mode, (lo, hi), t.resolutions, t.num_subnets, torch.Generator().manual_seed(0))
    assert plan[0].width == hi and plan[0].target == "labels"
    assert all(lo <= s.width <= hi and s.resolution in t.resolutions for s in plan)
    # the resolved config round-trips
    assert config_to_dict(config_from_dict(config_to_dict(cfg))) == config_to_dict(cfg)


def test_paper_settings():
    v1 = resolve(load_config(Path("configs/mobilenet_v1_imagenet.yaml")))
    assert (v1.model.width_range, v1.data.batch_size, v1.optim.lr, v1.train.epochs) == ([0.25, 1.0], 1024, 0.5, 250)
    v2 = resolve(load_config(Path("configs/mobilenet_v2_imagenet.yaml")))
    assert v2.model.width_range == [0.7, 1.0]
    r50 = resolve(load_config(Path("configs/resnet50_imagenet.yaml")))
    assert (r50.model.width_range, r50.train.epochs) == ([0.9, 1.0], 120)
    wrn = resolve(load_config(Path("configs/wide_resnet28_10_cifar100.yaml")))
    assert (wrn.train.resolutions, wrn.model.num_classes, wrn.train.epochs) == ([32, 28, 24, 20], 100, 200)
    up = resolve(load_config(Path("configs/mobilenet_v1_scaleup_imagenet.yaml")))
    assert (up.model.width_range, up.train.resolutions) == ([1.0, 2.0], [320, 288, 256, 224])


def test_overrides_parse_yaml_values(tmp_path):
    cfg = load_config(None, ["model.name=resnet20_cifar", "model.width_range=[0.5, 1]", "train.resolutions=[16,32]",
                             "run.val_batches=null", "optim.lr=1e-2", "run.csv=true"])
    assert cfg.model.width_range == [0.5, 1.0] and cfg.optim.lr == 0.01 and cfg.run.csv is True
    assert resolve(cfg).train.resolutions == [32, 16]


@pytest.mark.parametrize("override, message", [
    ("train.mdoe=usnet", "unknown config key train.mdoe"),
    ("optim.lr=fast", "optim.lr: expected a number"),
    ("run.csv=3", "run.csv: expected true or false"),
    ("train.epochs=2.5", "train.epochs: expected an integer"),
    ("nonsense", "section.key=value"),
    ("train=3", "train: expected a mapping"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(MutualNetError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("override, message", [
    ("train.mode=slimmable", "unknown train.mode"),
    ("model.width_range=[1.0, 0.5]", "width_range"),
    ("model.name=resnet9000", "unknown model"),
    ("train.width=0.1", "outside model.width_range"),
    ("run.amp=fp8", "run.amp"),
    ("data.input_size=100", "below the highest resolution"),
])
def test_inconsistent_configs_are_refused(override, message):
    base = ["model.name=mobilenet_v1", "train.mode=single"] if "train.width" in override else []
    with pytest.raises(MutualNetError, match=message):
        resolve(load_config(None, base + [override]))


def test_missing_or_bad_yaml(tmp_path):
    with pytest.raises(MutualNetError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(MutualNetError, match="mapping"):
        load_config(bad)


def test_dataset_classes_and_channels_are_adopted_or_a_mismatch_refused():
    folder = {"name": "imagefolder", "root": "/data/mine", "num_classes": 10, "in_chans": 3}
    cfg = resolve(load_config(Path("configs/mobilenet_v2_imagenet.yaml")), folder)  # the recipe leaves it open
    assert (cfg.model.num_classes, cfg.model.args["in_chans"]) == (10, 3)
    with pytest.raises(MutualNetError, match=r"num_classes is 1000 but imagefolder in /data/mine has 10 classes.*"
                                             r"model.num_classes=null"):
        resolve(load_config(Path("configs/mobilenet_v2_imagenet.yaml"), ["model.num_classes=1000"]), folder)
    with pytest.raises(MutualNetError, match=r"in_chans is 1 but imagefolder images have 3 channels; "
                                             r"--set model.args.in_chans=3"):
        resolve(load_config(Path("configs/resnet20_fashion_mnist.yaml"), ["data.name=imagefolder"]), folder)
    synthetic = {"name": "synthetic", "num_classes": 10, "in_chans": 3}  # follows the model
    cfg = resolve(load_config(None, ["model.num_classes=4", "model.args={in_chans: 1}"]), synthetic)
    assert (cfg.model.num_classes, cfg.model.args["in_chans"]) == (4, 1)


def test_loader_workers_never_exceed_the_cores(monkeypatch):
    """A recipe's 8 workers on a 2-core machine become 2 (more only compete for the cores); None means all."""
    import mutualnet.io as mio
    import mutualnet.train.config as config
    from mutualnet.data.checkpoint import data_from_checkpoint

    for module in (config, mio):
        monkeypatch.setattr(module, "available_cores", lambda: 2)
    recipe = Path(__file__).parent.parent / "configs" / "transfer_mobilenet_v1_imagefolder.yaml"
    assert load_config(recipe).data.workers == 8  # as written
    assert resolve(load_config(recipe, ["data.name=synthetic"])).data.workers == 2
    assert resolve(load_config(recipe, ["data.name=synthetic", "data.workers=1"])).data.workers == 1
    assert resolve(load_config(recipe, ["data.name=synthetic", "data.workers=null"])).data.workers == 2
    ckpt = {"meta": {"dataset": {"name": "imagefolder", "root": "/nowhere"}}}
    assert data_from_checkpoint(ckpt, create_model("resnet20_cifar")).workers == 2
    assert data_from_checkpoint(ckpt, create_model("resnet20_cifar"), workers=16).workers == 2
