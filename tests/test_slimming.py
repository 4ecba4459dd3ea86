"""mutualnet.slim: any CNN -> slimmable network by graph analysis, and tv/<name> in the registry and CLI.

The generic model tests (tests/test_models.py) also run over a few converted torchvision models; here are the
guarantees specific to conversion. The full zoo is covered by scripts/slim_coverage.py (docs/slimming.md).
"""

import copy
import importlib.util
import json
import shlex
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import mutualnet as mn
from mutualnet.cli import main
from mutualnet.deploy import AdaptiveNet
from mutualnet.layers import SlimmableBatchNorm2d, SlimmableLinear, is_slimmable
from mutualnet.layers.concat import ConcatBatchNorm2d, ConcatConv2d, ConcatLinear, segment_channels
from mutualnet.profiling import count_macs


def _torchvision(name, **kw):
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, num_classes=5, **kw).eval()


def _small_densenet():  # torchvision's DenseNet code at a size that keeps the test fast
    torch.manual_seed(0)
    return torchvision.models.DenseNet(16, (2, 2, 2), 32, bn_size=2, num_classes=5).eval()


def _small_regnet_y():
    from torchvision.models.regnet import BlockParams, RegNet

    torch.manual_seed(0)
    params = BlockParams.from_init_params(depth=6, w_0=24, w_a=24.48, w_m=2.54, group_width=8, se_ratio=0.25)
    return RegNet(params, num_classes=5).eval()


# one per pattern: residual adds; SE gates, hard-swish and a hidden linear; group-width convolutions with SE;
# concatenation -> convolution; concatenation -> BatchNorm and linear
NETS = {"resnet18": lambda: _torchvision("resnet18"), "mobilenet_v3_small": lambda: _torchvision("mobilenet_v3_small"),
        "regnet_y": _small_regnet_y, "squeezenet1_1": lambda: _torchvision("squeezenet1_1"),
        "densenet": _small_densenet}


def _leading_only(m, grad):
    """Whether ``grad`` of ``m``'s weight is zero outside the channels its active sub-network uses."""
    if isinstance(m, (ConcatConv2d, ConcatLinear)):
        cout = m.active_channels()[1]
        mask = torch.zeros_like(grad, dtype=torch.bool)
        idx = m.segment_index(grad.device)
        mask[:cout, (idx if idx is not None else slice(None))] = True
    elif isinstance(m, ConcatBatchNorm2d):
        mask = torch.zeros_like(grad, dtype=torch.bool)
        idx = m.segment_index(grad.device)
        mask[idx if idx is not None else slice(None)] = True
    elif isinstance(m, SlimmableBatchNorm2d):
        mask = torch.zeros_like(grad, dtype=torch.bool)
        mask[:m.active_channels()] = True
    else:
        cin, cout = m.active_channels()
        per_group = cin // (cin // m.group_width if getattr(m, "group_width", None) else
                            getattr(m, "fixed_groups", 1))
        mask = torch.zeros_like(grad, dtype=torch.bool)
        mask[:cout, :per_group] = True
    return grad[~mask].abs().sum() == 0 and grad[mask].abs().sum() > 0


@pytest.mark.parametrize("name", NETS)
def test_converted_torchvision_model_guarantees(name):
    tv = NETS[name]()
    reference = copy.deepcopy(tv)
    model = mn.slim(tv, (0.25, 1.0))
    assert isinstance(model, type(reference)) and model.width_range == (0.25, 1.0)
    # same keys and tensors: torchvision weights load strictly, and the top width computes exactly the original
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    # MACs never decrease with width, and the narrowest is much cheaper
    macs = [mn.profile(model, w, 32).macs for w in (0.25, 0.4, 0.55, 0.7, 0.85, 1.0)]
    assert macs == sorted(macs) and macs[0] < macs[-1] / 4
    # at the narrowest width only the leading slice of every slimmable layer receives gradient
    model.train().set_width(0.25)
    model(x).logsumexp(1).sum().backward()
    cut = [m for m in model.modules() if is_slimmable(m) and m.weight.grad is not None
           and m.active_num_params() < m.weight.numel() + (0 if m.bias is None else m.bias.numel())]
    assert cut and all(_leading_only(m, m.weight.grad) for m in cut)


def test_concat_layers_pick_the_leading_channels_of_each_part():
    model = mn.slim(_small_densenet(), (0.25, 1.0))
    assert isinstance(model.features.denseblock1.denselayer2.norm1, ConcatBatchNorm2d)
    assert isinstance(model.features.denseblock1.denselayer2.conv1, ConcatConv2d)
    assert isinstance(model.classifier, ConcatLinear)
    bn = model.features.denseblock1.denselayer2.norm1  # cat(stem 32, layer1's 16)
    assert bn.segments == ((32, 1, True), (16, 1, True))
    model.set_width(0.5)
    assert segment_channels(bn.segments, 0.5) == [16, 8]
    assert bn.segment_index(torch.device("cpu")).tolist() == list(range(16)) + list(range(32, 40))


def test_tv_mobilenet_v2_and_resnet50_equal_the_hand_written_zoo_models():
    for name, widths in [("mobilenet_v2", (0.35, 0.5, 0.75, 1.0)), ("resnet50", (0.25, 0.9))]:
        tv = mn.create_model(f"tv/{name}", num_classes=5, width_range=(0.25, 1.0)).eval()
        zoo = mn.create_model(name, num_classes=5, width_range=(0.25, 1.0)).eval()
        zoo.load_state_dict(tv.state_dict(), strict=True)  # same keys and shapes
        for m in (tv, zoo):  # the same running statistics in both: outputs are compared, not accuracy
            mn.allow_uncalibrated(m)
        x = torch.randn(2, 3, 48, 48)
        for w in widths:
            tv.set_width(w)
            zoo.set_width(w)
            with torch.no_grad():
                torch.testing.assert_close(tv(x), zoo(x), rtol=0, atol=0)
            assert mn.profile(tv, w, 32) == mn.profile(zoo, w, 32)


def test_flatten_before_the_classifier_and_materialize():
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    model = mn.slim(net, (0.5, 1.0), input_size=28)
    mn.allow_uncalibrated(model)
    assert model.in_chans == 1 and model.num_classes == 10 and model.min_resolution == 28
    fc = model[9]
    assert isinstance(fc, SlimmableLinear) and fc.ratio == (49, 1) and fc.slim_out  # 49 features per channel
    assert not is_slimmable(model[0]) or not model[0].slim_in  # the stem keeps the image's channel
    model.set_width(0.5)
    x = torch.randn(3, 1, 28, 28)
    dense = mn.materialize(model)
    assert dense[9].in_features == 16 * 49 and dense[11].out_features == 10
    with torch.no_grad():
        torch.testing.assert_close(dense(x), model(x))
    assert mn.profile(model, 0.5, 28).macs == count_macs(dense, x[:1])


class _Split(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        a, _ = self.conv(x).split(8, dim=1)
        return self.head(a).mean((2, 3))


class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.gamma = nn.Parameter(torch.ones(16, 1, 1))
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(self.conv(x) * self.gamma).mean((2, 3))


class _RadixSum(nn.Module):
    """Split attention's pattern without its softmax: a convolution's output cut into 2 blocks (a new dimension 1)
    and summed over them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        return self.head(y.reshape(b, 2, c // 2, h, w).sum(dim=1)).mean((2, 3))


@pytest.mark.parametrize("net,match", [
    (lambda: torchvision.models.shufflenet_v2_x0_5(),
     r"cannot slim ShuffleNetV2: node 'view' \(\.view\(\), in stage2\.0 \(InvertedResidual\)\) splits 48 channels "
     r"into 2 groups of 24 \(a channel shuffle\): at narrower widths the groups would hold other channels$"),
    (_RadixSum, r"node 'reshape' \(\.reshape\(\)\) splits 16 channels into 2 groups of 8 \(summed over the groups, as "
                r"split attention does\): at narrower widths the groups would hold other channels$"),
    (lambda: torchvision.models.convnext_tiny(), r"cannot slim ConvNeXt: node 'permute' \(\.permute\(\), in "
                                                 r"features\.0\.1 \(LayerNorm2d\)\) moves the channel dimension"),
    (_Split, r"node 'split' \(\.split\(\)\) splits the channels at sizes fixed in the code \(8, 8\): at a "
             r"narrower width the tensor has fewer channels and would be cut elsewhere"),
    (_Scale, r"node 'mul' \(mul\) combines a tensor with a per-channel constant or parameter \(gamma\)"),
])
def test_unsupported_patterns_are_refused_in_one_line(net, match):
    with pytest.raises(mn.MutualNetError, match=match) as e:
        mn.slim(net())
    assert "\n" not in str(e.value)


def test_slim_argument_errors():
    with pytest.raises(mn.MutualNetError, match="must end at 1.0"):
        mn.slim(_torchvision("resnet18"), (0.25, 0.5))
    with pytest.raises(mn.MutualNetError, match="unknown modules of ResNet: nope"):
        mn.slim(_torchvision("resnet18"), fixed=["nope"])
    model = mn.slim(_torchvision("resnet18"))
    with pytest.raises(mn.MutualNetError, match="already has slimmable layers"):
        mn.slim(model)
    with pytest.raises(mn.MutualNetError, match="unknown model 'tv/resnet19'"):
        mn.create_model("tv/resnet19")


def test_tv_models_through_train_search_export_profile_and_adaptive(tmp_path, capsys):
    """A converted model goes through every workflow unchanged: the CLI and AdaptiveNet."""
    out = tmp_path / "run"
    recipe = Path(__file__).parent.parent / "configs" / "resnet20_fashion_mnist.yaml"
    sets = ["model.name=tv/mobilenet_v3_small", "model.args={in_chans: 1}", "data.name=synthetic",
            "data.synthetic_length=16", "data.batch_size=8", "data.workers=0", "train.resolutions=[32, 24]",
            "train.epochs=1", "run.device=cpu", "run.progress=false", "run.calib_batches=1", f"run.out={out}"]
    assert main(["train", "--config", str(recipe), *[a for s in sets for a in ("--set", s)]]) == 0
    assert "--set model.args.small_input=true" in capsys.readouterr().err  # ImageNet stem at 32 px: the hint
    search = tmp_path / "search"
    assert main(["search", "--checkpoint", str(out / "last.pt"), "--out", str(search), "--width-step", "0.75",
                 "--calib-images", "16", "--val-images", "16", "--eval-batch-size", "16", "--no-progress"]) == 0
    ckpt = search / "calibrated.pt"
    for fmt in ("torchscript", "onnx"):
        f = tmp_path / f"m.{'ts' if fmt == 'torchscript' else 'onnx'}"
        assert main(["export", "--checkpoint", str(ckpt), "--width", "0.25", "--resolution", "24",
                     "--format", fmt, "--out", str(f)]) == 0
        assert f.stat().st_size > 10_000
    capsys.readouterr()
    assert main(["profile", "--model", "tv/mobilenet_v3_small", "--width", "0.25", "--resolution", "32",
                 "--width-range", "0.25,1.0", "--num-classes", "10", "--in-chans", "1", "--json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    table = json.loads((search / "query_table.json").read_text())
    assert prof["macs"] == next(r["macs"] for r in table["rows"] if (r["width"], r["resolution"]) == (0.25, 32))
    net = AdaptiveNet.from_checkpoint(ckpt)
    budget = sorted(r["mflops"] for r in net.table.rows)[1]
    row = net.set_budget(mflops=budget)
    assert row == net.table.select(max_mflops=budget) and net.width == row["width"] and net.is_calibrated()
    assert net.logits(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_list_models_and_model_info():
    names = mn.list_models("tv/*")
    assert "tv/resnet50" in names and "tv/efficientnet_b0" in names and not any("fasterrcnn" in n for n in names)
    assert all(n.startswith("tv/") for n in names) and not any(n.startswith("tv/") for n in mn.list_models())
    info = mn.model_info("tv/inception_v3")
    assert info.input_size == 299 and info.width_range == (0.25, 1.0)


def test_readme_snippet_runs_and_small_input_stem():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    block = text.split("## Any CNN: `mutualnet.slim`")[1].split("```python")[1].split("```")[0]
    scope = {}
    exec(block, scope)  # noqa: S102 - the README's own example
    assert scope["model"].width_range == (0.25, 1.0) and scope["model"].width == 1.0
    model = mn.create_model("tv/resnet18", num_classes=10, in_chans=1, small_input=True, width_range=(0.5, 1.0))
    assert model.conv1.in_channels == 1 and model.conv1.stride == (1, 1) and model.model_args["small_input"]
    model.set_width(0.5)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_slimming_doc_commands_and_coverage_script(tmp_path, capsys):
    root = Path(__file__).parent.parent
    block = (root / "docs" / "slimming.md").read_text().split("```bash\n")[1].split("```")[0]
    for line in block.strip().splitlines():
        cmd = shlex.split(line.split(" #")[0])
        assert cmd[0] == "mutualnet" and main(cmd[1:]) == 0, line
    assert "tv/regnet_y_400mf" in capsys.readouterr().out
    # the coverage script (docs/slimming.md's table) on two models, into a copy of the table markers
    spec = importlib.util.spec_from_file_location("slim_coverage", root / "scripts" / "slim_coverage.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    doc = tmp_path / "slimming.md"
    doc.write_text(f"intro\n{script.BEGIN}\nSTALE\n{script.END}\nend\n")
    assert script.main(["--models", "squeezenet1_1,shufflenet_v2_x0_5", "--json", str(tmp_path / "c.json"),
                        "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("end\n") and "STALE" not in text
    assert "| squeezenet1_1 | converted | yes | yes |" in text and "| ok / ok |" in text
    assert "| shufflenet_v2_x0_5 | refused: node 'view' (.view(), in stage2.0 (InvertedResidual)) splits" in text


def test_coverage_script_large_lifts_the_caps(tmp_path, monkeypatch):
    """``--large`` runs the checks the parameter caps skip, on the models named only; without it they are skipped."""
    spec = importlib.util.spec_from_file_location("slim_coverage", Path(__file__).parent.parent / "scripts"
                                                  / "slim_coverage.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "MAX_EXPORT_PARAMS", 1000)  # squeezenet1_1 (1.2M parameters) counts as large
    doc, store = tmp_path / "slimming.md", str(tmp_path / "c.json")
    doc.write_text(f"{script.BEGIN}\n{script.END}\n")
    assert script.main(["--models", "squeezenet1_1", "--json", store, "--doc", str(doc)]) == 0
    assert "| squeezenet1_1 | converted | yes | yes |" in doc.read_text()
    assert "| not run (over 40M parameters) |" in doc.read_text()
    assert script.main(["--models", "squeezenet1_1", "--large", "--redo", "--json", store, "--doc", str(doc)]) == 0
    assert "| squeezenet1_1 | converted | yes | yes |" in doc.read_text() and "| ok / ok |" in doc.read_text()
    with pytest.raises(SystemExit) as e:  # a whole zoo without caps: refused by argparse (exit status 2)
        script.main(["--large", "--json", store, "--doc", str(doc)])
    assert e.value.code == 2


# -- sound analysis: the user's attributes, fixed sizes, layers that keep channel order, exports at any scale ---
class _OwnSurface(nn.Module):
    """A model with its own ``width`` attribute, ``forward_features`` / ``forward_head`` and ``feature_info``."""

    def __init__(self):
        super().__init__()
        self.width = 16  # read by forward: must survive conversion
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)
        self.feature_info = [{"num_chs": 16, "reduction": 1, "module": "bn"}]

    def forward_features(self, x):
        return torch.relu(self.bn(self.stem(x)))

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x)) * (self.width / 16)


def test_the_models_own_attributes_and_methods_are_kept():
    torch.manual_seed(0)
    net = _OwnSurface().eval()
    reference = copy.deepcopy(net)
    model = mn.slim(net, (0.5, 1.0))
    assert model.width == 16 and model.feature_info == reference.feature_info
    assert type(model).forward_features is _OwnSurface.forward_features and model.min_resolution == 1
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    mn.set_width(model, 0.5)
    assert mn.get_width(model) == 0.5 and model.width == 16 and model.stem.active_channels() == (3, 8)
    mn.allow_uncalibrated(model)
    assert model.eval()(x).shape == (2, 4)


class _FixedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 32 * 8 * 8))


def test_a_size_fixed_in_the_code_is_refused_at_conversion():
    with pytest.raises(mn.MutualNetError, match=r"node 'view' \(\.view\(\)\) reshapes to a size fixed in the code "
                                                r"\(2048 features or channels in dimension 1\)") as e:
        mn.slim(_FixedView(), input_size=8)
    assert "\n" not in str(e.value)


class _Decoder(nn.Module):
    """An SE block written with Linear + view(b, c, 1, 1), nn.Upsample and a transposed convolution."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 16)
        self.up = nn.ConvTranspose2d(16, 16, 2, 2)
        self.bn = nn.BatchNorm2d(16)
        self.resize = nn.Upsample(scale_factor=2, mode="nearest")
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        y = self.enc(x)
        b, c, _, _ = y.size()
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(y.mean((2, 3)).view(b, c))))).view(b, c, 1, 1)
        y = y * s.expand_as(y)
        return self.head(self.resize(torch.relu(self.bn(self.up(y)))))


def test_upsampling_transposed_convolution_and_a_view_based_se_are_slimmed(tmp_path):
    from mutualnet.deploy.export import export_subnet, save_exported
    from mutualnet.layers.converted import SlimmableConvTranspose2d

    torch.manual_seed(0)
    net = _Decoder().eval()
    reference = copy.deepcopy(net)
    model = mn.slim(net, (0.25, 1.0), input_size=16)
    assert isinstance(model.up, SlimmableConvTranspose2d) and model.fc1.slim_in and model.fc2.slim_out
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    mn.allow_uncalibrated(model)
    model.set_width(0.5)
    assert model.up.active_channels() == (8, 8) and model.fc1.active_channels() == (8, 8)
    with torch.no_grad():
        dense = mn.materialize(model).eval()
        torch.testing.assert_close(dense(x), model(x), rtol=0, atol=0)
    assert dense.up.weight.shape == (8, 8, 2, 2) and mn.profile(model, 0.5, 16).macs == count_macs(dense, x[:1])
    net, check = export_subnet(model, 0.5, 16, allow_uncalibrated=True)
    save_exported(net, tmp_path / "d.onnx", "onnx")


def test_the_export_check_is_relative_to_the_outputs_scale():
    from mutualnet.deploy.export import export_subnet

    torch.manual_seed(0)
    model = mn.slim(_torchvision("resnet18"), (0.25, 1.0))
    with torch.no_grad():
        model.fc.weight.mul_(1e4)  # logits in the thousands: float rounding of the BN fold exceeds 1e-4 absolute
    net, check = export_subnet(model, 1.0, 32)
    assert check["max_abs_diff"] > 0
    with pytest.raises(mn.MutualNetError, match=r"of the outputs' scale"):
        export_subnet(model, 1.0, 32, atol=1e-12)


class _Chunked(nn.Module):
    """A CSP-like block: chunk(2) of a conv's output, one half convolved, concatenated back; a ghost-like
    residual (a plain tensor plus a concatenation of a map and its depthwise convolution)."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c2, self.c3 = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(32, 16, 1)
        self.dw, self.head = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        y = torch.relu(self.bn1(self.c1(x)))
        a, b = y.chunk(2, dim=1)
        y = torch.cat([a, self.c2(b)], 1)[:, :32]
        g = self.c3(y)
        return self.head(y + torch.cat([g, self.dw(g)], 1)).mean((2, 3))


def test_chunks_and_a_concatenation_meeting_a_plain_tensor_are_made_in_parts():
    from mutualnet.layers.concat import ConcatConv2d, ConcatDepthwiseConv2d

    torch.manual_seed(0)
    net = _Chunked().eval()
    reference = copy.deepcopy(net)
    model = mn.slim(net, (0.25, 1.0), input_size=16)
    assert isinstance(model.c1, ConcatConv2d) and model.c1.out_segments == ((16, 1, True), (16, 1, True))
    assert isinstance(model.dw, ConcatDepthwiseConv2d) or model.dw.group_width == 1
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    mn.allow_uncalibrated(model)
    model.set_width(0.5)
    assert model.c1.active_channels() == (3, 16) and model.c2.active_channels() == (8, 8)
    with torch.no_grad():
        dense = mn.materialize(model).eval()
        torch.testing.assert_close(dense(x), model(x), rtol=0, atol=0)
    assert mn.profile(model, 0.5, 16).macs == count_macs(dense, x[:1])


class _Mixed(nn.ModuleDict):
    """timm's MixedConv2d pattern: a split at sizes written in the code, one conv per part (iterating itself)."""

    def __init__(self, c):
        super().__init__({"0": nn.Conv2d(c // 2, c // 2, 3, padding=1, groups=c // 2),
                          "1": nn.Conv2d(c - c // 2, c - c // 2, 5, padding=2, groups=c - c // 2)})
        self.splits = [c // 2, c - c // 2]

    def forward(self, x):
        parts = torch.split(x, self.splits, 1)
        return torch.cat([conv(parts[i]) for i, conv in enumerate(self.values())], 1)


class _PartialResidual(nn.Module):
    """ReXNet's pattern: the leading channels of a wider output get the shortcut (a slice fixed in the code),
    FasterNet's: a conv on a split's first part, the rest untouched; a literal split in a training-only branch."""

    def __init__(self, cin, cout):
        super().__init__()
        self.cin = cin
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.part = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        y = torch.cat([y[:, 0:self.cin] + x, y[:, self.cin:]], dim=1)
        a, b = y.split([32, y.shape[1] - 32], dim=1) if not self.training else torch.split(y, [32, 64], 1)
        # (a size computed from the input, y.shape[1] - 32, is replaced by the width's too: 32 is not 32 below 1.0)
        return torch.relu(torch.cat([self.part(a), b], 1))


class _LiteralCuts(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.mixed = _Mixed(64)
        self.block = _PartialResidual(64, 96)
        self.head_bn = nn.BatchNorm1d(96)  # RepViT's head: BatchNorm1d on pooled features
        self.fc = nn.Linear(96, 5)

    def forward(self, x):
        x = self.block(self.mixed(self.stem(x)))
        return self.fc(self.head_bn(x.mean((2, 3))))


def test_splits_and_slices_written_in_the_code_follow_the_width(tmp_path):
    """x.split([16, 16], 1) / x[:, :32] inside a module's forward: the producers output those parts, the forward
    is rewritten to take the sizes from the width; exact at the top width, materialize and ONNX exact below."""
    from mutualnet.deploy.export import export_subnet, save_exported
    from mutualnet.layers.converted import ChannelCut, ConcatBatchNorm1d

    torch.manual_seed(0)
    net = _LiteralCuts().eval()
    for m in net.modules():  # non-trivial statistics, so that a wrong channel would show
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    reference = copy.deepcopy(net)
    model = mn.slim(net, (0.25, 1.0), input_size=32)
    assert type(model.mixed).__name__ == "_Mixed" and isinstance(model.mixed, _Mixed)  # still its class
    assert len(model.mixed) == 2  # the cut is an attribute, not a child the ModuleDict would iterate
    assert any(isinstance(v, ChannelCut) for v in vars(model.block).values())
    assert isinstance(model.head_bn, ConcatBatchNorm1d)  # pooled features of a concatenation
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
        reference.load_state_dict(model.state_dict(), strict=True)  # the state-dict keys are the original's
    mn.allow_uncalibrated(model)
    for w in (0.25, 0.5):
        model.set_width(w)
        with torch.no_grad():
            out = model(x)
            dense = mn.materialize(model).eval()
            torch.testing.assert_close(dense(x), out, rtol=1e-5, atol=1e-6)
        assert isinstance(dense.head_bn, nn.BatchNorm1d) and dense.head_bn.num_features == 96 * w  # 3 parts
        assert mn.profile(model, w, 32).macs == count_macs(dense, x[:1]) < mn.profile(model, 1.0, 32).macs
    model.train()  # the training-mode forward (another literal split) runs at a narrow width too
    model.set_width(0.5)
    model(x).sum().backward()
    grad = model.stem.weight.grad.abs().flatten(1).sum(1)  # the stem makes 2 parts: the leading 16 of each
    assert (grad[16:32] == 0).all() and (grad[48:] == 0).all() and (grad[:16] > 0).all() and (grad[32:48] > 0).all()
    model.eval()
    net, _ = export_subnet(model, 0.5, 32, allow_uncalibrated=True, atol=1e-5)
    save_exported(net, tmp_path / "m.onnx", "onnx", atol=1e-5)


class _ResidualChain(nn.Module):
    """Inception-ResNet's pattern: a concatenation added to 1x1 conv outputs, block after block."""

    def __init__(self, n=4):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 1), nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(32, 32, 1) for _ in range(n))
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = torch.cat([self.a(x), self.b(x)], 1)
        for conv in self.blocks:
            x = torch.relu(x + 0.2 * conv(x))
        return self.fc(x.mean((2, 3)))


def test_a_chain_of_residual_additions_to_a_concatenation_converts():
    torch.manual_seed(0)
    net = _ResidualChain(6).eval()
    reference = copy.deepcopy(net)
    model = mn.slim(net, (0.25, 1.0), input_size=16)
    assert all(c.out_segments == ((16, 1, True), (16, 1, True)) for c in model.blocks)  # made in both parts
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
        model.set_width(0.5)
        torch.testing.assert_close(mn.materialize(model)(x), model(x))
