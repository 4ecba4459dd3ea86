"""One generic test over every registered model, plus torchvision compatibility."""

import math

import pytest
import torch
import torchvision

import mutualnet as mn
from mutualnet.layers import is_slimmable
from mutualnet.profiling import count_macs

# the zoo, and a few torchvision models converted by mutualnet.slim (all of them: scripts/slim_coverage.py)
MODELS = mn.list_models() + ["tv/resnet18", "tv/mobilenet_v3_small", "tv/squeezenet1_1"]


def _res(name):
    info = mn.model_info(name)
    return (64, 40) if info.input_size >= 224 else (32, 20)


def _build(name):
    return mn.create_model(name, num_classes=7)


def _widths(model):
    lo, hi = model.width_range
    return [lo, round((lo + hi) / 2, 3), hi]


@pytest.mark.parametrize("name", MODELS)
def test_model_forward_slices_and_macs(name):
    model = _build(name).eval()
    mn.allow_uncalibrated(model)  # shapes, slices and MACs, not accuracy: fresh statistics will do
    for res in _res(name):
        x = torch.randn(2, model.in_chans, res, res)
        for w in _widths(model):
            model.set_width(w)
            with torch.no_grad():
                y = model(x)
            assert y.shape == (2, 7) and torch.isfinite(y).all()
            dense = mn.materialize(model)
            assert not any(is_slimmable(m) for m in dense.modules())
            with torch.no_grad():
                torch.testing.assert_close(dense(x), y, rtol=1e-4, atol=1e-4)
            # MACs of the slimmable net equal those of the equivalent dense network
            assert mn.profile(model, w, res).macs == count_macs(dense, x[:1])
            assert mn.profile(model, w, res).params == sum(p.numel() for p in dense.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_model_gradients_and_leading_slice(name):
    model = _build(name).train()
    res = _res(name)[1]
    x = torch.randn(2, model.in_chans, res, res)
    model(x).logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} received no gradient at full width"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient at full width"
    # at the narrowest width only the leading slice receives gradient
    model.zero_grad(set_to_none=True)
    lo = model.width_range[0]
    model.set_width(lo)
    model(x).logsumexp(1).sum().backward()
    conv = next(m for m in model.modules() if isinstance(m, mn.layers.SlimmableConv2d) and m.slim_out
                and m.active_channels()[1] < m.out_channels)
    cout = conv.active_channels()[1]
    assert conv.weight.grad[cout:].abs().sum() == 0 and conv.weight.grad[:cout].abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_channels_non_decreasing_and_feature_info(name):
    model = _build(name).eval()
    mn.allow_uncalibrated(model)  # shapes, slices and MACs, not accuracy: fresh statistics will do
    lo, hi = model.width_range
    widths = [lo + (hi - lo) * i / 10 for i in range(11)]
    layers = [m for m in model.modules() if is_slimmable(m)]
    prev = None
    for w in widths:
        model.set_width(w)
        cur = [m.active_channels() for m in layers]
        if prev is not None:
            assert all(torch.tensor(c) .ge(torch.tensor(p)).all() for c, p in zip(cur, prev))
        prev = cur
    res = _res(name)[0]
    for w in (lo, hi):
        model.set_width(w)
        with torch.no_grad():
            stages = model.forward_stages(torch.randn(1, model.in_chans, res, res))
        assert len(stages) == len(model.feature_info)
        for f, info in zip(stages, model.feature_info):
            assert f.shape[1] == info["num_chs"]
            if name.startswith("tv/"):  # unpadded convolutions and ceil-mode pools: the nominal stride
                assert abs(math.log2(res / f.shape[-1]) - math.log2(info["reduction"])) < 1
            else:
                assert res // f.shape[-1] == info["reduction"]


@pytest.mark.parametrize("width", [0.35, 0.5, 0.7, 0.75, 1.0])
def test_mobilenet_v2_macs_and_params_equal_torchvision_width_mult(width):
    model = mn.create_model("mobilenet_v2", width_range=(0.35, 1.0))
    tv = torchvision.models.mobilenet_v2(width_mult=width)
    for res in (224, 128):
        assert mn.profile(model, width, res).macs == count_macs(tv, torch.zeros(1, 3, res, res))
    assert mn.profile(model, width, 224).params == sum(p.numel() for p in tv.parameters())


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50", "resnet18", "vgg16_bn"])
def test_torchvision_layout_and_weights(name):
    torch.manual_seed(1)
    tv = getattr(torchvision.models, name)().eval()
    model = mn.create_model(name, width_range=(0.5, 1.0)).eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in tv.parameters())
    model.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,w,r,mflops", [
    ("mobilenet_v1", 1.0, 224, 569), ("mobilenet_v1", 0.7, 160, 147), ("mobilenet_v1", 0.25, 128, 13.6),
    ("mobilenet_v2", 1.0, 224, 301), ("mobilenet_v2", 0.7, 128, 57.6),
])
def test_paper_flops_table(name, w, r, mflops):
    model = mn.create_model(name, width_range=(0.25, 1.0))
    assert abs(mn.profile(model, w, r).mflops - mflops) / mflops < 0.01


def test_scale_up_range_above_one():
    model = mn.create_model("mobilenet_v1_cifar", width_range=(1.0, 2.0), in_chans=1)
    assert model.classifier.in_features == 2048
    p1, p2 = mn.profile(model, 1.0, 28), mn.profile(model, 2.0, 28)
    assert p2.macs > 3 * p1.macs
    model.set_width(1.5)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_bad_input_errors():
    with pytest.raises(mn.MutualNetError, match="unknown model 'mobilenet_v9'"):
        mn.create_model("mobilenet_v9")
    model = mn.create_model("mobilenet_v1_cifar", in_chans=1)
    with pytest.raises(mn.MutualNetError, match=r"outside this model's trained range \[0.25, 1\]"):
        model.set_width(0.2)
    with pytest.raises(mn.MutualNetError, match="too small"):
        model(torch.randn(1, 1, 4, 4))
    with pytest.raises(mn.MutualNetError, match="expects 1 input channels, got 3"):
        model(torch.randn(1, 3, 28, 28))
    with pytest.raises(mn.MutualNetError, match="width_range"):
        mn.create_model("resnet18", width_range=(1.0, 0.5))


def test_reset_classifier_keeps_width_switching():
    for name in ["mobilenet_v2_cifar", "resnet20_cifar", "mobilenet_v1_cifar"]:
        model = mn.create_model(name)
        model.reset_classifier(3)
        model.set_width(model.width_range[0])
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
        assert model.model_args["num_classes"] == 3


@pytest.mark.parametrize("name", [m for m in MODELS if not m.startswith("tv/")])  # converted: their own head
def test_head_name_is_the_one_classifier_rule(name):
    """``head_name`` names the final Linear: reset_classifier, transfer learning and detection all use it."""
    from mutualnet.train.transfer import final_classifier_prefix

    model = _build(name)
    head = model.get_classifier()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert head is linears[-1] and head.out_features == 7
    assert final_classifier_prefix(model) == model.head_name + "."
    model.reset_classifier(3)
    assert model.get_classifier() is not head and model.get_classifier().out_features == 3
    assert model.get_classifier().slim_state is model.slim_state


def test_tv_listing_holds_exactly_the_models_the_coverage_table_converted(capsys):
    """`mutualnet models 'tv/*'` lists what converts (docs/slimming.md's measured table); a refused name can still be
    asked for and says why."""
    from pathlib import Path

    from mutualnet.cli import main

    doc = (Path(__file__).parents[1] / "docs" / "slimming.md").read_text()
    table = doc.split("<!-- coverage:begin -->")[1].split("<!-- coverage:end -->")[0]
    result = {cells[1].strip(): cells[2].strip() for cells in (ln.split("|") for ln in table.splitlines())
              if len(cells) > 3 and cells[2].strip().startswith(("converted", "refused"))}
    converted = {n for n, r in result.items() if r == "converted"}
    assert len(converted) >= 50 and len(result) - len(converted) >= 10
    assert {n[len("tv/"):] for n in mn.list_models("tv/*")} == converted
    assert main(["models", "tv/shufflenet*"]) == 1  # nothing to list
    assert "no model matches" in capsys.readouterr().out
    with pytest.raises(mn.MutualNetError, match="channel shuffle"):
        mn.create_model("tv/shufflenet_v2_x0_5", num_classes=10)
