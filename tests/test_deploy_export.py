import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import mutualnet as mn
from deploy_helpers import calibrate_config, table_rows, trained_like
from mutualnet.calibrate import is_calibrated
from mutualnet.checkpoint import load_checkpoint, save_checkpoint
from mutualnet.cli import main
from mutualnet.deploy import export_subnet, load_exported, save_exported
from mutualnet.layers import is_slimmable

CASES = [("mobilenet_v2_cifar", 0.5, 24), ("resnet20_cifar", 0.35, 32), ("mobilenet_v1_cifar", 0.6, 28),
         ("resnet20_cifar", 1.0, 20)]


@pytest.mark.parametrize("name,width,res", CASES)
@pytest.mark.parametrize("fold", [False, True])
def test_export_matches_slimmable_with_calibrated_stats(name, width, res, fold):
    model = trained_like(name)
    calibrate_config(model, width, res, torch.randn(16, model.in_chans, 32, 32) * 3 - 1)
    assert is_calibrated(model, width, res)
    x = torch.randn(4, model.in_chans, res, res)
    with mn.use_config(model, width, res), torch.no_grad():
        ref = model(x)
        # the calibrated statistics matter: the shared running statistics give different logits
        stats = {id(m): m.calibrated.pop(mn.layers.config_key(width, res)) for m in model.modules()
                 if isinstance(m, mn.layers.SlimmableBatchNorm2d)}
        with mn.allow_uncalibrated(model):
            uncal = model(x)
        for m in model.modules():
            if id(m) in stats:
                m.calibrated[mn.layers.config_key(width, res)] = stats[id(m)]
    assert (uncal - ref).abs().max() > 1e-2

    net, check = export_subnet(model, width, res, fold_bn=fold)
    assert model.width == model.width_range[1]  # restored
    assert not any(is_slimmable(m) for m in net.modules())
    assert all(type(m).__module__.startswith("torch.nn") for m in net.modules() if not list(m.children()))
    with torch.no_grad():
        out = net(x)
    assert (out - ref).abs().max().item() <= 1e-4
    n_params = sum(p.numel() for p in net.parameters())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    if fold:
        assert check["folded"] > 0 and n_bn == 0 or name == "wide_resnet16_4"
    else:
        assert check["folded"] == 0
        assert n_params == mn.profile(model, width, res).params  # only the sub-network's parameters


def test_uncalibrated_refused_when_required_and_width_range_checked():
    model = trained_like("resnet20_cifar")
    with pytest.raises(mn.MutualNetError, match="no calibrated BatchNorm statistics"):
        export_subnet(model, 0.5, 32, require_calibrated=True)
    with pytest.raises(mn.MutualNetError, match="outside this model's trained range"):
        export_subnet(model, 0.1, 32)
    with pytest.raises(mn.MutualNetError, match="too small"):
        export_subnet(model, 0.5, 2)


def test_formats_roundtrip_and_load_without_mutualnet(tmp_path):
    model = trained_like("mobilenet_v2_cifar")
    calibrate_config(model, 0.5, 24, torch.randn(8, 3, 32, 32))
    net, _ = export_subnet(model, 0.5, 24)
    x = torch.randn(3, 3, 24, 24)
    with torch.no_grad():
        ref = net(x)
    checks = {}
    for fmt in ("pt", "torchscript", "onnx"):
        checks |= save_exported(net, tmp_path / f"m.{fmt}", fmt, meta={"class_names": list("abcdefghij")})
    assert checks["onnx_max_abs_diff"] <= 1e-4 and checks["torchscript_max_abs_diff"] <= 1e-4
    d = torch.load(tmp_path / "m.pt", weights_only=True)
    assert d["width"] == 0.5 and d["resolution"] == 24 and d["meta"]["class_names"][0] == "a"
    with torch.no_grad():
        assert (load_exported(tmp_path / "m.pt")(x) - ref).abs().max() <= 1e-6
    torch.save(x, tmp_path / "x.pt")
    torch.save(ref, tmp_path / "ref.pt")
    # TorchScript and ONNX load with torch / onnxruntime alone: mutualnet is made unimportable
    code = f"""
import sys; sys.modules['mutualnet'] = None
import json, torch, onnxruntime as ort
x, ref = torch.load({str(tmp_path / 'x.pt')!r}), torch.load({str(tmp_path / 'ref.pt')!r})
files = {{'mutualnet.json': ''}}
ts = torch.jit.load({str(tmp_path / 'm.torchscript')!r}, _extra_files=files)
assert json.loads(files['mutualnet.json'])['resolution'] == 24
s = ort.InferenceSession({str(tmp_path / 'm.onnx')!r}, providers=['CPUExecutionProvider'])
o = torch.from_numpy(s.run(None, {{'images': x.numpy()}})[0])
print(float((ts(x) - ref).abs().max()), float((o - ref).abs().max()))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    ts_diff, onnx_diff = map(float, out.stdout.split())
    assert ts_diff <= 1e-4 and onnx_diff <= 1e-4


def test_failed_export_leaves_existing_file_untouched(tmp_path, monkeypatch):
    model = trained_like("resnet20_cifar")
    net, _ = export_subnet(model, 1.0, 32)
    target = tmp_path / "m.onnx"
    target.write_bytes(b"precious")

    def boom(*a, **k):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(mn.MutualNetError, match="ONNX export failed"):
        save_exported(net, target, "onnx")
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left behind


@pytest.fixture
def calibrated_ckpt(tmp_path):
    """A checkpoint like `mutualnet search` writes: calibrated stats + an embedded query table."""
    from mutualnet.search.table import QueryTable

    model = trained_like("resnet20_cifar")
    configs = [(w, r) for r in (32, 24) for w in (0.25, 0.5, 1.0)]
    imgs = torch.randn(16, 3, 32, 32)
    for w, r in configs:
        calibrate_config(model, w, r, imgs)
    table = QueryTable(rows=table_rows(model, configs), meta={"model": "resnet20_cifar"})
    path = tmp_path / "calibrated.pt"
    meta = {"resolutions": [32, 24], "mode": "mutual", "class_names": [f"c{i}" for i in range(10)],
            "dataset": {"name": "synthetic", "num_classes": 10, "in_chans": 3, "input_size": 32,
                        "root": str(tmp_path / "data")}}
    save_checkpoint(path, model, meta, query_table=table.to_dict())
    table.save(tmp_path / "table.json")
    return path, model, table


def test_cli_export_by_budget_and_explicit(calibrated_ckpt, tmp_path, capsys):
    path, model, table = calibrated_ckpt
    budget = sorted(r["mflops"] for r in table.rows)[2] + 1e-6
    out = tmp_path / "sub.onnx"
    assert main(["export", "--checkpoint", str(path), "--max-mflops", str(budget), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    row = table.select(max_mflops=budget)
    assert f"width {row['width']:g} at {row['resolution']} px" in text and "onnx vs PyTorch" in text
    import onnx
    meta = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["mutualnet"])
    assert meta["width"] == row["width"] and meta["resolution"] == row["resolution"]
    # a file that travels names its data and checkpoint, never a path of the machine it was made on
    assert meta["meta"]["dataset"]["name"] == "synthetic" and meta["meta"]["checkpoint"] == "calibrated.pt"
    assert str(tmp_path) not in json.dumps(meta)
    out_pt = tmp_path / "sub.pt"
    assert main(["export", "--checkpoint", str(path), "--width", "0.5", "--resolution", "24", "--format", "pt",
                 "--out", str(out_pt), "--no-fold-bn", "--table", str(tmp_path / "table.json")]) == 2
    assert main(["export", "--checkpoint", str(path), "--width", "0.5", "--resolution", "24", "--format", "pt",
                 "--out", str(out_pt), "--no-fold-bn"]) == 0
    net = load_exported(out_pt)
    x = torch.randn(2, 3, 24, 24)
    ck = load_checkpoint(path)
    ref_model = mn.checkpoint.model_from_checkpoint(ck).eval()
    with torch.no_grad(), mn.use_config(ref_model, 0.5, 24):
        assert (net(x) - ref_model(x)).abs().max() <= 1e-4


@pytest.mark.parametrize("argv,msg", [
    (["--width", "0.1", "--resolution", "32"], "outside this model's trained range"),
    (["--width", "0.5", "--resolution", "28"], "no calibrated BatchNorm statistics"),
    (["--max-mflops", "0.0001"], "no configuration fits"),
    (["--max-mflops", "5", "--table", "/nonexistent/t.json"], "query table not found"),
    (["--max-latency-ms", "5"], "no latency"),
    (["--max-mflops", "5", "--width", "0.5"], "not both"),
])
def test_cli_export_errors_are_one_line(calibrated_ckpt, tmp_path, capsys, argv, msg):
    path, _, _ = calibrated_ckpt
    out = tmp_path / "keep.pt"
    out.write_bytes(b"old")
    assert main(["export", "--checkpoint", str(path), "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and msg in err and len(err.splitlines()) == 1
    assert out.read_bytes() == b"old"


def test_cli_export_missing_table_and_uncalibrated_override(tmp_path, capsys):
    model = trained_like("resnet20_cifar")
    path = tmp_path / "plain.pt"
    save_checkpoint(path, model, {"resolutions": [32]})
    assert main(["export", "--checkpoint", str(path), "--max-mflops", "5", "--out", str(tmp_path / "o.pt")]) == 2
    assert "no query table" in capsys.readouterr().err
    # the top width needs no calibration; another width does unless overridden (with a warning)
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "top.pt")]) == 0
    assert main(["export", "--checkpoint", str(path), "--width", "0.5", "--out", str(tmp_path / "h.pt"),
                 "--allow-uncalibrated"]) == 0
    assert "warning:" in capsys.readouterr().err
