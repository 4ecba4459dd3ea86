"""Released MutualNet / US-Net checkpoints and torchvision weights load into our models and compute the same.

The released files are not downloaded: a small, independent re-implementation of the original code's
module and key layout (``features.<i>.body.<j>``, ``USBatchNorm2d`` with per-width ``bn.<i>`` statistics,
``classifier.0``, DataParallel's ``module.`` prefix) writes them, and computes the reference outputs.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import mutualnet as mn
from mutualnet.calibrate import calibrate
from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint
from mutualnet.cli import main
from mutualnet.deploy import export_subnet, load_released, load_torchvision_weights


def _md(v, divisor=8, min_value=1):  # the original make_divisible
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class RefConv(nn.Conv2d):
    def __init__(self, cin, cout, k, stride=1, pad=0, depthwise=False, us=(True, True), ratio=(1, 1)):
        super().__init__(cin, cout, k, stride, pad, groups=cin if depthwise else 1, bias=False)
        self.depthwise, self.us, self.ratio, self.width_mult = depthwise, us, ratio, 1.0

    def forward(self, x):
        cin = _md(self.in_channels * self.width_mult / self.ratio[0]) * self.ratio[0] if self.us[0] \
            else self.in_channels
        cout = _md(self.out_channels * self.width_mult / self.ratio[1]) * self.ratio[1] if self.us[1] \
            else self.out_channels
        return F.conv2d(x, self.weight[:cout, :cin], None, self.stride, self.padding, 1, cin if self.depthwise else 1)


class RefBN(nn.BatchNorm2d):
    def __init__(self, c, widths, ratio=1):
        super().__init__(c, affine=True, track_running_stats=False)
        self.bn = nn.ModuleList([nn.BatchNorm2d(_md(c * w / ratio) * ratio, affine=False) for w in widths])
        self.widths, self.ratio, self.width_mult = widths, ratio, 1.0

    def forward(self, x):
        c = _md(self.num_features * self.width_mult / self.ratio) * self.ratio
        bn = self.bn[self.widths.index(self.width_mult)]
        return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], self.weight[:c], self.bias[:c], False, 0.0,
                            self.eps)


class RefLinear(nn.Linear):
    width_mult = 1.0

    def forward(self, x):
        return F.linear(x, self.weight[:, :_md(self.in_features * self.width_mult)], self.bias)


class RefMobileNetV1(nn.Module):
    def __init__(self, widths, num_classes=7):
        super().__init__()
        feats = [nn.Sequential(RefConv(3, 32, 3, 2, 1, us=(False, True)), RefBN(32, widths), nn.ReLU6(True))]
        cin = 32
        for c, n, s in [[64, 1, 1], [128, 2, 2], [256, 2, 2], [512, 6, 2], [1024, 2, 2]]:
            for i in range(n):
                body = nn.Sequential(RefConv(cin, cin, 3, s if i == 0 else 1, 1, depthwise=True), RefBN(cin, widths),
                                     nn.ReLU6(True), RefConv(cin, c, 1), RefBN(c, widths), nn.ReLU6(True))
                feats.append(nn.Module())
                feats[-1].body = body
                feats[-1].forward = body.forward
                cin = c
        feats.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(RefLinear(1024, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class RefInvertedResidual(nn.Module):
    def __init__(self, inp, outp, stride, t, widths):
        super().__init__()
        self.res = stride == 1 and inp == outp
        h = inp * t
        layers = [RefConv(inp, h, 1, ratio=(1, t)), RefBN(h, widths, t), nn.ReLU6(True)] if t != 1 else []
        layers += [RefConv(h, h, 3, stride, 1, depthwise=True, ratio=(t, t)), RefBN(h, widths, t), nn.ReLU6(True),
                   RefConv(h, outp, 1, ratio=(t, 1)), RefBN(outp, widths)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x) + x if self.res else self.body(x)


class RefMobileNetV2(nn.Module):
    def __init__(self, widths, num_classes=7):
        super().__init__()
        feats = [nn.Sequential(RefConv(3, 32, 3, 2, 1, us=(False, True)), RefBN(32, widths), nn.ReLU6(True))]
        cin = 32
        for t, c, n, s in [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                           [6, 320, 1, 1]]:
            for i in range(n):
                feats.append(RefInvertedResidual(cin, c, s if i == 0 else 1, t, widths))
                cin = c
        feats.append(nn.Sequential(RefConv(cin, 1280, 1, us=(True, False)), nn.BatchNorm2d(1280), nn.ReLU6(True)))
        feats.append(nn.AdaptiveAvgPool2d(1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def _randomise(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                if "running_var" in name:
                    t.copy_(torch.rand(t.shape, generator=g) * 2 + 0.5)
                elif "running_mean" in name or name.endswith("bias"):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.2)
                elif t.dim() == 1:  # BN weight
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    fan_in = t[0].numel()
                    t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)


def _released_file(tmp_path, ref):
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}  # DataParallel's prefix
    path = tmp_path / "released.pt"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "last_epoch": 249}, path)
    return path


def _set(ref, w):
    for m in ref.modules():
        if hasattr(m, "width_mult"):
            m.width_mult = w


@pytest.mark.parametrize("ref_cls,widths", [
    (RefMobileNetV1, [0.25, 1.0]),  # MutualNet MobileNet v1
    (RefMobileNetV2, [0.7, 0.9, 1.0]),  # MutualNet MobileNet v2
    (RefMobileNetV2, [0.35, 0.375, 0.4, 0.425, 0.45, 0.475, 0.5, 0.525, 0.55, 0.575, 0.6, 0.625, 0.65, 0.675, 0.7,
                      0.725, 0.75, 0.775, 0.8, 0.825, 0.85, 0.875, 0.9, 0.925, 0.95, 0.975, 1.0]),  # US-Net v2
])
def test_released_checkpoint_computes_what_the_original_computes(tmp_path, ref_cls, widths):
    ref = ref_cls(widths).eval()
    _randomise(ref)
    path = _released_file(tmp_path, ref)
    model = load_released(path)  # architecture and width list inferred
    assert model.released_widths == widths and tuple(model.width_range) == (min(widths), max(widths))
    x = torch.randn(2, 3, 64, 64)
    check = [widths[0], widths[len(widths) // 2], widths[-1]]
    for w in check:
        _set(ref, w)
        with torch.no_grad(), mn.use_width(model, w):
            expected, got = ref(x), model(x)
        assert (got - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item()), w
    # and the exported sub-network keeps computing it
    net, chk = export_subnet(model, check[0], 64)
    _set(ref, check[0])
    with torch.no_grad():
        assert (net(x) - ref(x)).abs().max().item() <= 1e-3


def test_usnet_v1_width_list_and_mismatch_errors(tmp_path):
    us = [round(0.25 + 0.025 * i, 4) for i in range(31)]
    ref = RefMobileNetV1(us).eval()
    _randomise(ref)
    path = _released_file(tmp_path, ref)
    model = load_released(path, arch="mobilenet_v1")
    assert len(model.released_widths) == 31
    x = torch.randn(1, 3, 32, 32)
    _set(ref, 0.525)
    with torch.no_grad(), mn.use_width(model, 0.525):
        assert (model(x) - ref(x)).abs().max() <= 1e-4
    with pytest.raises(mn.MutualNetError, match="layers, our mobilenet_v2 has"):
        load_released(path, arch="mobilenet_v2")
    with pytest.raises(mn.MutualNetError, match="do not fit widths"):
        load_released(path, widths=list(reversed(us)))  # bn.<i> order matters
    # a checkpoint of another width range: channel counts differ from ours and are named
    sd = torch.load(path, weights_only=True)["model"]
    sd["module.features.3.body.3.weight"] = torch.zeros(100, 128, 1, 1)
    with pytest.raises(mn.MutualNetError, match=r"features\.3\.body\.3\.weight has shape \(100, 128, 1, 1\)"):
        load_released({"model": sd})
    with pytest.raises(mn.MutualNetError, match="released MobileNet v1 has 27"):
        load_released({"model": {k: v for k, v in sd.items() if "features.5." not in k}})


def test_cli_convert_released_then_export(tmp_path, capsys):
    ref = RefMobileNetV1([0.25, 1.0]).eval()
    _randomise(ref)
    path = _released_file(tmp_path, ref)
    out = tmp_path / "mn.pt"
    assert main(["convert", "--released", str(path), "--out", str(out)]) == 0
    assert "widths [0.25, 1.0]" in capsys.readouterr().out
    # the original code's resize is recorded, so calibration, search and predict use it on these weights
    assert load_checkpoint(out)["meta"]["preprocessing"]["resize"] == "official"
    assert model_from_checkpoint(out).preprocessing.resize == "official" == load_released(path).preprocessing.resize
    onnx_out = tmp_path / "q.onnx"
    assert main(["export", "--checkpoint", str(out), "--width", "0.25", "--resolution", "64",
                 "--out", str(onnx_out)]) == 0
    import onnxruntime as ort

    x = torch.randn(2, 3, 64, 64)
    _set(ref, 0.25)
    sess = ort.InferenceSession(str(onnx_out), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        assert (got - ref(x)).abs().max() <= 1e-3
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["convert", "--released", str(bad), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read released checkpoint") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name,tv", [("mobilenet_v2", torchvision.models.mobilenet_v2),
                                     ("resnet18", torchvision.models.resnet18)])
def test_torchvision_weights_at_width_one(tmp_path, name, tv):
    ref = tv(num_classes=10).eval()
    _randomise(ref)
    model = mn.create_model(name, num_classes=10, width_range=(0.9, 1.0)).set_width(0.9)
    path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), path)
    load_torchvision_weights(model, path)
    assert model.width == 1.0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.eval()(x) - ref(x)).abs().max() <= 1e-4


def test_torchvision_weights_mismatch_is_named(tmp_path, capsys):
    sd = torchvision.models.resnet18(num_classes=10).state_dict()
    with pytest.raises(mn.MutualNetError, match=r"missing keys \(e\.g\. layer1\.2"):
        load_torchvision_weights(mn.create_model("resnet34", num_classes=10), sd)
    with pytest.raises(mn.MutualNetError, match=r"shape mismatches \(e\.g\. fc\.weight"):
        load_torchvision_weights(mn.create_model("resnet18", num_classes=5), sd)
    with pytest.raises(mn.MutualNetError, match="width_range"):
        load_torchvision_weights(mn.create_model("resnet18", num_classes=10, width_range=(0.9, 1.2)), sd)
    path = tmp_path / "r18.pth"
    torch.save(sd, path)
    assert main(["convert", "--torchvision", str(path), "--model", "resnet34", "--out", str(tmp_path / "o.pt")]) == 2
    assert "do not match resnet34" in capsys.readouterr().err


def test_statistics_the_original_never_computed_are_not_imported_as_statistics(tmp_path, capsys):
    """The original train.py saves every listed width's BatchNorm statistics but the narrowest's at their initial
    mean 0 / variance 1: those widths, the top one included, are uncalibrated here, not run on 0 / 1."""
    widths = [0.25, 1.0]  # the released MutualNet MobileNet v1 list
    ref = RefMobileNetV1(widths).eval()
    _randomise(ref)
    with torch.no_grad():  # as the original saves them: only the narrowest's were computed
        for m in ref.modules():
            if isinstance(m, RefBN):
                for i in range(1, len(widths)):
                    m.bn[i].reset_running_stats()
    path = _released_file(tmp_path, ref)
    model = load_released(path)
    assert model.uncomputed_widths == [1.0]
    x = torch.randn(2, 3, 32, 32)
    _set(ref, 0.25)
    with torch.no_grad(), mn.use_config(model, 0.25, 32):
        assert (model(x) - ref(x)).abs().max() <= 1e-4  # the computed ones are used
    with torch.no_grad(), mn.use_config(model, 1.0, 32), pytest.raises(mn.MutualNetError, match="calibrate"):
        model(x)  # the top width too: its running statistics would be the 0 / 1 it was saved with
    out = tmp_path / "mn.pt"
    assert main(["convert", "--released", str(path), "--out", str(out)]) == 0
    assert "widths [1.0] were saved with BatchNorm's initial statistics" in capsys.readouterr().out
    again = model_from_checkpoint(out).eval()  # the refusal travels with the checkpoint
    with torch.no_grad(), mn.use_config(again, 1.0, 32), pytest.raises(mn.MutualNetError, match="calibrate"):
        again(x)
    calibrate(again, torch.randn(8, 3, 32, 32), 1.0, 32)
    with torch.no_grad(), mn.use_config(again, 1.0, 32):
        assert torch.isfinite(again(x)).all()
    with torch.no_grad(), mn.use_config(again, 1.0, 64), pytest.raises(mn.MutualNetError, match="calibrate"):
        again(torch.randn(2, 3, 64, 64))  # calibrated at 32 px only
    assert any(k.endswith("running_stats_invalid") for k in load_checkpoint(out)["model"])
    assert not any(k.endswith("running_stats_invalid") for k in mn.create_model("mobilenet_v1").state_dict())
