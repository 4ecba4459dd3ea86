import json

import pytest
import torch
from PIL import Image

import mutualnet as mn
from deploy_helpers import calibrate_config, one_thread, table_rows, trained_like
from mutualnet.checkpoint import load_checkpoint, save_checkpoint
from mutualnet.cli import main
from mutualnet.deploy import AdaptiveNet, measure_switch_us
from mutualnet.search.table import QueryTable

_threads = pytest.fixture(autouse=True)(one_thread)

CONFIGS = [(w, r) for r in (32, 24, 16) for w in (0.25, 0.5, 0.75, 1.0)]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("adaptive")
    model = trained_like("resnet20_cifar")
    imgs = torch.randn(16, 3, 32, 32)
    for w, r in CONFIGS:
        calibrate_config(model, w, r, imgs)
    table = QueryTable(rows=table_rows(model, CONFIGS))
    path = tmp / "calibrated.pt"
    meta = {"resolutions": [32, 24, 16], "mode": "mutual", "class_names": [f"class{i}" for i in range(10)],
            "dataset": {"name": "synthetic", "num_classes": 10, "in_chans": 3, "input_size": 32,
                        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    save_checkpoint(path, model, meta, query_table=table.to_dict())
    table.save(tmp / "table.json")
    return tmp, path, model, table


def test_set_budget_switches_without_reloading_and_matches_each_configuration(calibrated):
    _, path, model, table = calibrated
    net = AdaptiveNet.from_checkpoint(path)
    x = torch.randn(3, 3, 40, 40)  # any input size: resized to the active resolution
    params = [p.data_ptr() for p in net.model.parameters()]
    seen = set()
    for row in table.frontier():
        got = net.set_budget(mflops=row["mflops"])
        assert got == table.select(max_mflops=row["mflops"])
        assert (net.width, net.resolution) == (got["width"], got["resolution"]) and net.is_calibrated()
        seen.add((net.width, net.resolution))
        # the same answer as the slimmable model at that configuration, with its calibrated statistics
        xr = torch.nn.functional.interpolate(x, size=(net.resolution,) * 2, mode="bilinear", antialias=True)
        with torch.no_grad(), mn.use_config(model, net.width, net.resolution):
            ref = model.eval()(xr)
        assert (net.logits(x) - ref).abs().max() <= 1e-5
    assert len(seen) >= 3
    assert [p.data_ptr() for p in net.model.parameters()] == params  # nothing reloaded
    preds = net.predict(x, topk=2)
    assert len(preds) == 3 and preds[0][0].label.startswith("class")
    assert preds[0][0].confidence >= preds[0][1].confidence
    assert measure_switch_us(net, repeats=200) < 1000  # microseconds
    with pytest.raises(mn.MutualNetError, match="no configuration fits"):
        net.set_budget(mflops=1e-6)
    with pytest.raises(mn.MutualNetError, match="no latency"):
        net.set_budget(latency_ms=5)


def test_predictions_resize_as_the_checkpoint_records(calibrated):
    _, path, model, _ = calibrated
    ckpt = load_checkpoint(path)
    assert AdaptiveNet.from_checkpoint(ckpt).resize == "antialias"
    ckpt["meta"]["resize"] = "official"  # e.g. converted released weights
    net = AdaptiveNet.from_checkpoint(ckpt)
    net.set_config(0.5, 24)
    x = torch.randn(2, 3, 32, 32)
    xr = torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear", align_corners=True)
    with torch.no_grad(), mn.use_config(model, 0.5, 24):
        ref = model.eval()(xr)
    assert net.resize == "official" and (net.logits(x) - ref).abs().max() <= 1e-5


def test_latency_table_then_select_by_latency(calibrated, capsys):
    tmp, path, model, table = calibrated
    t = tmp / "lat.json"
    table.save(t)
    assert main(["latency", "--table", str(t), "--checkpoint", str(path), "--threads", "1", "--repeats", "3",
                 "--warmup", "1", "--batch-size", "2"]) == 0
    filled = QueryTable.load(t)
    assert filled.has_latency and all(r["latency_ms"] > 0 for r in filled.rows)
    assert (filled.meta["latency"]["device"], filled.meta["latency"]["batch_size"],
            filled.meta["latency"]["threads"]) == ("cpu", 2, 1)
    csv_rows = t.with_suffix(".csv").read_text().splitlines()
    assert len(csv_rows) == len(filled.rows) + 1 and all(not r.endswith(",,True") for r in csv_rows[1:])
    budget = sorted(r["latency_ms"] for r in filled.rows)[len(filled.rows) // 2]
    row = filled.select(max_latency_ms=budget)
    assert row["latency_ms"] <= budget
    net = AdaptiveNet.from_checkpoint(path, table=t)
    assert net.set_budget(latency_ms=budget) == row
    out = tmp / "lat.onnx"
    assert main(["export", "--checkpoint", str(path), "--table", str(t), "--max-latency-ms", str(budget),
                 "--out", str(out)]) == 0
    assert f"width {row['width']:g} at {row['resolution']} px" in capsys.readouterr().out


def test_latency_cli_errors_leave_table_intact(calibrated, tmp_path, capsys):
    tmp, path, _, table = calibrated
    t = tmp_path / "t.json"
    table.save(t)
    before = t.read_text()
    assert main(["latency", "--table", str(t), "--checkpoint", str(path), "--device", "cuda:7"]) == 2
    assert main(["latency", "--table", str(tmp_path / "none.json"), "--checkpoint", str(path)]) == 2
    other = trained_like("mobilenet_v1_cifar", width_range=(0.5, 1.0))
    save_checkpoint(tmp_path / "other.pt", other, {"resolutions": [32]})
    assert main(["latency", "--table", str(t), "--checkpoint", str(tmp_path / "other.pt")]) == 2
    errs = [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert len(errs) == 3 and all(e.startswith("error:") for e in errs)
    assert "outside the checkpoint's range" in errs[2]
    assert t.read_text() == before


def test_cli_predict_images(calibrated, tmp_path, capsys):
    _, path, _, table = calibrated
    files = []
    for i in range(2):
        f = tmp_path / f"img{i}.png"
        Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy()).save(f)
        files.append(str(f))
    budget = sorted(r["mflops"] for r in table.rows)[5]
    assert main(["predict", "--checkpoint", str(path), "--budget-mflops", str(budget), *files]) == 0
    out = capsys.readouterr().out.splitlines()
    row = table.select(max_mflops=budget)
    assert out[0].startswith(f"configuration: width {row['width']:g} at {row['resolution']} px")
    assert len(out) == 3 and out[1].startswith(files[0]) and "class" in out[1] and "(" in out[1]
    assert main(["predict", "--checkpoint", str(path), "--budget-mflops", str(budget), "--json", files[0]]) == 0
    d = json.loads(capsys.readouterr().out)
    assert 0 < d["predictions"][0]["top"][0]["confidence"] <= 1
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert main(["predict", "--checkpoint", str(path), "--budget-mflops", str(budget), str(bad)]) == 2
    assert main(["predict", "--checkpoint", str(path), "--budget-mflops", "0.00001", files[0]]) == 2
    errs = capsys.readouterr().err.strip().splitlines()
    assert errs[0].startswith("error: cannot read image") and "no configuration fits" in errs[1]
