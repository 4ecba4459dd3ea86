"""The parity table (docs/parity.yaml -> docs/parity.md) against the recipes in configs/ and the optimizer."""

import importlib.util
from pathlib import Path

import pytest
import torch

import mutualnet as mn
from mutualnet.train import load_config
from mutualnet.train.config import config_to_dict, resolve
from mutualnet.train.optim import param_groups

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("parity_doc", ROOT / "scripts" / "parity_doc.py")
parity_doc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity_doc)
DATA = parity_doc.load()
RECIPES = {r["recipe"]: r for r in DATA["recipes"]}


def test_the_doc_is_what_the_table_renders():
    assert parity_doc.main(["--check"]) == 0, "run: python scripts/parity_doc.py"


def test_the_table_covers_the_paper_recipes_and_every_setting_the_issue_lists():
    assert set(RECIPES) == {f"configs/{n}.yaml" for n in ("mobilenet_v1_imagenet", "mobilenet_v2_imagenet",
                                                           "resnet50_imagenet", "wide_resnet28_10_cifar10",
                                                           "wide_resnet28_10_cifar100")}
    for rec in DATA["recipes"]:
        names = {r["setting"] for r in DATA["common"] + rec["settings"]}
        for needed in ("epochs", "batch size / LR", "LR schedule", "warm-up", "weight decay", "momentum / Nesterov",
                       "augmentation", "resize (lower resolutions)", "label smoothing", "sub-networks per step",
                       "resolutions", "BN post-statistics", "width range"):
            assert needed in names, (rec["name"], needed)
        for row in DATA["common"] + rec["settings"]:
            assert row["paper"] and row["original"] and row["ours"], row["setting"]
            assert row["check"] or row.get("where"), f"{row['setting']}: say what is checked or where it lives"


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted} is not set"
        node = node[part]
    return node


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_has_the_tables_values(recipe):
    cfg = config_to_dict(resolve(load_config(ROOT / recipe)))
    for row in DATA["common"] + RECIPES[recipe]["settings"]:
        for key, want in row["check"].items():
            got = _get(cfg, key)
            if isinstance(want, float) or isinstance(got, float):
                assert got == pytest.approx(want), (recipe, row["setting"], key)
            else:
                assert got == want, (recipe, row["setting"], key)


def _original_decays(model, imagenet: bool) -> set[int]:
    """Which parameters the original get_optimizer decays: on ImageNet 4-D with in/groups != 1, and 2-D; else all."""
    if not imagenet:
        return {id(p) for p in model.parameters()}
    return {id(p) for p in model.parameters() if (p.dim() == 4 and p.shape[1] != 1) or p.dim() == 2}


@pytest.mark.parametrize("recipe", ["configs/mobilenet_v1_imagenet.yaml", "configs/mobilenet_v2_imagenet.yaml",
                                    "configs/wide_resnet28_10_cifar10.yaml"])
def test_recipe_decays_the_parameters_the_original_decays(recipe):
    cfg = resolve(load_config(ROOT / recipe))
    m, o = cfg.model, cfg.optim
    args = dict(m.args)
    if "wide_resnet" in m.name:  # the decay rule does not depend on the width: a small WRN has the same layers
        name, args = "wide_resnet16_4", args
    else:
        name = m.name
    model = mn.create_model(name, num_classes=m.num_classes or 10, width_range=tuple(m.width_range), **args)
    groups = param_groups(model, o.weight_decay, o.decay_all)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == _original_decays(model, imagenet=cfg.data.name == "imagefolder")
    assert all(g["weight_decay"] in (0.0, o.weight_decay) for g in groups)


def test_lighting_is_pca_noise_along_the_imagenet_eigenvectors():
    from mutualnet.data.transforms import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, Lighting

    img = torch.rand(3, 8, 8)
    torch.manual_seed(0)
    out = Lighting(0.1)(img)
    torch.manual_seed(0)
    alpha = torch.randn(3) * 0.1
    shift = torch.as_tensor(IMAGENET_PCA_EIGVEC) @ (alpha * torch.as_tensor(IMAGENET_PCA_EIGVAL))
    torch.testing.assert_close(out, img + shift.view(3, 1, 1))
    assert Lighting(0.0)(img) is img


def test_photo_pipeline_lights_after_scaling_and_before_normalising():
    from torchvision.transforms import v2

    from mutualnet.data.transforms import Lighting, train_transform

    ops = train_transform(32, color_jitter=0.4, lighting=0.1).transforms
    kinds = [type(t) for t in ops]
    assert kinds.index(Lighting) == kinds.index(v2.Normalize) - 1 and kinds.index(v2.ToDtype) < kinds.index(Lighting)
    assert Lighting not in [type(t) for t in train_transform(32).transforms]


def test_small_image_recipe_reflection_padding_and_lighting():
    from mutualnet.data.transforms import TensorImages

    torch.manual_seed(0)
    images = torch.randint(0, 256, (1, 3, 6, 6), dtype=torch.uint8)
    kw = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255), train=True)  # samples in pixel units
    ds = TensorImages(images, torch.zeros(1), padding=2, padding_mode="reflect", hflip=False, **kw)
    padded = torch.nn.functional.pad(images.float(), [2] * 4, mode="reflect")[0]
    x, _ = ds[0]
    windows = [padded[:, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
    assert any(torch.equal(x, w) for w in windows)  # a crop of the reflected image, never of zeros
    with pytest.raises(mn.MutualNetError, match="padding mode"):
        TensorImages(images, torch.zeros(1), padding_mode="edge", **kw)
    lit = TensorImages(images, torch.zeros(1), padding=0, hflip=False, lighting=0.1, **kw)
    shift = lit[0][0] - images[0].float()
    assert shift.abs().max() > 0 and torch.allclose(shift, shift[:, :1, :1].expand_as(shift))  # one offset per channel
