"""timm's CNNs become slimmable by their building blocks (mutualnet.slimming.known), and ``timm/<name>`` works in
the registry and the CLI. The family-by-family table is scripts/slim_coverage.py --zoo timm (docs/slimming.md)."""

import json

import pytest
import torch

import mutualnet as mn
from mutualnet.cli import main
from mutualnet.deploy.export import export_subnet, save_exported
from mutualnet.layers.converted import SlimmableBatchNormAct2d, SlimmableBlurPool2d, SlimmableConv2dSame
from mutualnet.profiling import count_macs

timm = pytest.importorskip("timm")


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


# its own forward_features / forward_head / feature_info (ResNet); fused BatchNormAct2d, timm's Linear, SE with
# hard-sigmoid (MobileNetV3); TensorFlow-SAME padded convolutions (tf_ variants)
@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050", "tf_mobilenetv3_small_minimal_100"])
def test_timm_models_convert_exactly(name, tmp_path):
    torch.manual_seed(0)
    model = mn.create_model(f"timm/{name}", num_classes=5, width_range=(0.25, 1.0)).eval()
    reference = timm.create_model(name, pretrained=False, num_classes=5).eval()
    reference.load_state_dict(model.state_dict(), strict=True)  # same keys and shapes: timm weights load as they are
    assert isinstance(model, type(reference)) and model.feature_info == reference.feature_info
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _rel(model(x), reference(x)) <= 1e-5
        assert _rel(model.forward_features(x), reference.forward_features(x)) <= 1e-5  # timm's own method
    mn.allow_uncalibrated(model)
    model.set_width(0.25)
    with torch.no_grad():
        dense = mn.materialize(model).eval()
        torch.testing.assert_close(dense(x), model(x), rtol=1e-5, atol=1e-6)
    assert mn.profile(model, 0.25, 64).macs == count_macs(dense, x[:1]) < mn.profile(model, 1.0, 64).macs / 2
    if name != "resnet18":
        assert any(isinstance(m, SlimmableBatchNormAct2d) for m in model.modules())
    if name.startswith("tf_"):
        assert any(isinstance(m, SlimmableConv2dSame) for m in model.modules())
        net, _ = export_subnet(model, 0.5, 64, allow_uncalibrated=True, atol=1e-5)
        save_exported(net, tmp_path / "m.onnx", "onnx", atol=1e-5)


def test_timm_refusals_are_one_accurate_line():
    with pytest.raises(mn.MutualNetError, match=r"cannot slim ResNet: node 'stack' \(stack, in layer1\.0\.conv1 "
                                                r"\(SelectiveKernel\)\) is an operation the analysis does not know "
                                                r"how to slim") as e:
        mn.create_model("timm/skresnet18", num_classes=5)
    assert "\n" not in str(e.value)
    # ResNeSt: the reshape into radix groups, summed and softmax-weighted (split attention), is no channel shuffle
    resnest = (r"^cannot slim ResNet: node 'reshape' \(\.reshape\(\), in layer1\.0\.conv2 \(SplitAttn\)\) splits 128 "
               r"channels into 2 groups of 64 \(split attention's radix groups, as in ResNeSt: summed over the groups, "
               r"each weighted by a softmax across them\): at narrower widths the groups would hold other channels$")
    with pytest.raises(mn.MutualNetError, match=resnest):
        mn.create_model("timm/resnest14d", num_classes=5)
    with pytest.raises(mn.MutualNetError, match=r"unknown model 'timm/resnet19'"):
        mn.create_model("timm/resnet19")


def test_timm_prefix_in_the_cli_and_registry(tmp_path, capsys):
    assert "timm/resnet18" in mn.list_models("timm/resnet1*") and mn.model_info("timm/resnet18").input_size == 224
    capsys.readouterr()
    assert main(["profile", "--model", "timm/mobilenetv3_small_050", "--width", "0.5", "--resolution", "64",
                 "--num-classes", "10", "--json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    model = mn.create_model("timm/mobilenetv3_small_050", num_classes=10)
    assert prof["macs"] == mn.profile(model, 0.5, 64).macs


def test_timm_coverage_script(tmp_path):
    """docs/slimming.md's timm table comes from scripts/slim_coverage.py --zoo timm; here on a refused model (the
    converted models' checks are the ones test_timm_models_convert_exactly makes; a full row costs minutes here)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).parent.parent
    spec = importlib.util.spec_from_file_location("slim_coverage", root / "scripts" / "slim_coverage.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    doc = tmp_path / "slimming.md"
    doc.write_text(f"intro\n{script.TIMM_BEGIN}\nSTALE\n{script.TIMM_END}\nend\n")
    assert script.main(["--zoo", "timm", "--models", "skresnet18", "--json", str(tmp_path / "c.json"),
                        "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("end\n") and "STALE" not in text
    assert "0 of 1 timm CNN families converted" in text
    assert "| sknet | skresnet18 | refused: node 'stack' (stack, in layer1.0.conv1 (SelectiveKernel)) is an" in text


class _TimmLayers(torch.nn.Module):
    """timm's anti-aliased downsampling (TResNet) and VGG's convolutional head (a ConvMlp timm keeps out of tracing
    for a size test)."""

    def __init__(self):
        super().__init__()
        from timm.layers import BlurPool2d
        from timm.models.vgg import ConvMlp

        self.stem = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.aa = BlurPool2d(32, stride=2)
        self.pre_logits = ConvMlp(32, 64, kernel_size=3, drop_rate=0.0)
        self.fc = torch.nn.Linear(64, 5)

    def forward(self, x):
        return self.fc(self.pre_logits(self.aa(self.stem(x))).mean((2, 3)))


def test_timm_blur_pool_and_vgg_head_convert_exactly(tmp_path):
    import copy

    torch.manual_seed(0)
    net = _TimmLayers().eval()
    reference = copy.deepcopy(net)
    model = mn.slim(net, (0.25, 1.0), input_size=32)
    assert isinstance(model.aa, SlimmableBlurPool2d)
    assert mn.layers.is_slimmable(model.pre_logits.fc1) and mn.layers.is_slimmable(model.pre_logits.fc2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _rel(model(x), reference(x)) <= 1e-6
        assert _rel(model(x[..., :4, :4]), reference(x[..., :4, :4])) <= 1e-6  # ConvMlp's own pooling branch
    model.set_width(0.5)
    with torch.no_grad():
        dense = mn.materialize(model).eval()
        torch.testing.assert_close(dense(x), model(x), rtol=1e-5, atol=1e-6)
    assert dense.pre_logits.fc1.in_channels == 16 and dense.pre_logits.fc1.out_channels == 32
    assert type(dense.aa) is type(reference.aa) and dense.aa.channels == 16  # timm's layer, 16 channels
    net, _ = export_subnet(model, 0.5, 32, allow_uncalibrated=True, atol=1e-5)
    save_exported(net, tmp_path / "m.onnx", "onnx", atol=1e-5)


def test_results_md_timm_commands_run_shrunk(tmp_path):
    """docs/results.md's timm Fashion-MNIST commands (train, search, plot), read from the doc and run on synthetic
    data at a few images (later --set values win), so the published run's commands stay valid."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    section = text.split("## Any CNN from timm:")[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    lines = [line.strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines() if line.strip()]
    assert [line.split()[1] for line in lines] == ["train", "search", "plot"]
    shrink = {"train": ["--set", "data.name=synthetic", "--set", "data.synthetic_length=16", "--set",
                        "data.train_subset=16", "--set", "data.batch_size=8", "--set", "train.resolutions=[28, 24]",
                        "--set", "run.max_steps=1", "--set", "run.progress=false", "--set", "run.tensorboard=false",
                        "--set", "run.calib_batches=1"],
              "search": ["--width-step", "0.65", "--calib-images", "8", "--val-images", "8", "--eval-batch-size", "8",
                         "--no-progress"], "plot": []}
    for line in lines:
        argv = [a.replace("runs/", f"{tmp_path}/runs/").replace("docs/img/", f"{tmp_path}/") for a in
                shlex.split(line)[1:]]
        assert main(argv + shrink[argv[0]]) == 0, line
    table = json.loads((tmp_path / "runs" / "timm_mnv3" / "search" / "query_table.json").read_text())
    assert {r["width"] for r in table["rows"]} == {0.35, 1.0} and (tmp_path / "timm_mobilenetv3_small_100_frontier.png"
                                                                   ).stat().st_size > 1000
