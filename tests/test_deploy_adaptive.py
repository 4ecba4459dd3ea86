import collections
import json
import re

import pytest
import torch
from PIL import Image

import mutualnet as mn
from deploy_helpers import calibrate_config, table_rows, trained_like
from mutualnet.checkpoint import load_checkpoint, save_checkpoint
from mutualnet.cli import main
from mutualnet.deploy import AdaptiveNet, measure_switch_us
from mutualnet.search.table import QueryTable

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
    preds = net.predict(x, topk=2, normalised=True)
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
    assert AdaptiveNet.from_checkpoint(ckpt).preprocessing.resize == "antialias"
    ckpt["meta"]["preprocessing"]["resize"] = "official"  # e.g. converted released weights
    net = AdaptiveNet.from_checkpoint(ckpt)
    net.set_config(0.5, 24)
    x = torch.randn(2, 3, 32, 32)
    xr = torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear", align_corners=True)
    with torch.no_grad(), mn.use_config(model, 0.5, 24):
        ref = model.eval()(xr)
    assert net.preprocessing.resize == "official" and (net.logits(x) - ref).abs().max() <= 1e-5


def test_latency_table_then_select_by_latency(calibrated, capsys, tmp_path):
    tmp, original, model, table = calibrated
    path = tmp_path / "calibrated.pt"  # `latency` updates the checkpoint's own table too: work on a copy
    path.write_bytes(original.read_bytes())
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


def test_latency_updates_every_copy_and_identical_networks_share_one_measurement(calibrated, tmp_path, capsys):
    """`mutualnet latency --checkpoint calibrated.pt` fills the table inside it and query_table.json beside it, so
    the guide's next steps (select/predict/AdaptiveNet by latency) work; 0.25 and 0.26 of resnet20 are the same
    network (same channels): timed once, one number."""
    _, original, model, _ = calibrated
    configs = [(0.25, 16), (0.26, 16), (0.5, 16), (1.0, 16), (1.0, 32)]
    table = QueryTable(rows=table_rows(model, configs))
    ckpt = torch.load(original, weights_only=True) | {"query_table": table.to_dict()}
    path = tmp_path / "calibrated.pt"
    torch.save(ckpt, path)
    table.save(tmp_path / "query_table.json")
    assert main(["latency", "--checkpoint", str(path), "--threads", "1", "--repeats", "5", "--warmup", "1",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "measured 4 distinct networks for 5 configurations" in out
    assert f"updated {tmp_path / 'query_table.json'}, {path}" in out
    beside = QueryTable.load(tmp_path / "query_table.json")
    inside = QueryTable.from_dict(torch.load(path, weights_only=True)["query_table"])
    assert beside.rows == inside.rows and beside.has_latency
    assert beside.find(0.25, 16)["latency_ms"] == beside.find(0.26, 16)["latency_ms"]
    lat = inside.meta["latency"]
    assert (lat["warmup"], lat["repeats"], lat["networks_measured"]) == (1, 5, 4)
    shared = [n for n in lat["networks"] if len(n["configs"]) == 2][0]
    assert shared["configs"] == ["w0.250_r16", "w0.260_r16"] and shared["q1_ms"] <= shared["median_ms"] <= \
        shared["q3_ms"]
    budget = max(r["latency_ms"] for r in inside.rows)
    net = AdaptiveNet.from_checkpoint(path)
    assert net.set_budget(latency_ms=budget)["frontier"] == "latency"
    assert main(["select", "--table", str(tmp_path), "--max-latency-ms", f"{budget:.3f}"]) == 0
    assert "on the accuracy-latency frontier" in capsys.readouterr().out


def test_suspect_measurements_are_the_disturbed_ones():
    from mutualnet.deploy.latency import suspect_networks
    from mutualnet.profiling import Latency

    def lat(median, q1=None, q3=None):
        return Latency(median, "cpu", 1, 1, 20, 5, q1 or median, q3 or median, median)

    measured = {(100, 1, 16): lat(1.0), (200, 2, 16): lat(2.0), (300, 3, 16): lat(1.5),  # faster than 200-MAC
                (400, 4, 16): lat(3.0, 2.0, 4.0), (50, 1, 8): lat(9.0)}  # wide spread; alone at its resolution
    assert suspect_networks(measured) == [(200, 2, 16), (400, 4, 16)]


def test_predict_takes_raw_images_and_says_class_names(calibrated, tmp_path):
    """[0, 1] tensors, PIL images and files are normalised with the checkpoint's own mean/std; a normalised
    batch passed as raw is refused rather than silently misread."""
    _, path, _, _ = calibrated
    net = AdaptiveNet.from_checkpoint(path)
    raw = torch.rand(2, 3, 40, 40)
    mean, std = torch.tensor([0.5] * 3).view(3, 1, 1), torch.tensor([0.25] * 3).view(3, 1, 1)
    assert net.predict(raw, topk=3) == net.predict((raw - mean) / std, topk=3, normalised=True)
    assert net.predict(raw)[0][0].label.startswith("class")
    img = Image.fromarray((raw[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    img.save(tmp_path / "a.png")
    from_file, from_pil = net.predict([tmp_path / "a.png"]), net.predict([img])
    assert from_file == from_pil and len(from_file) == 1
    with pytest.raises(mn.MutualNetError, match=r"outside \[0, 1\].*normalised=True"):
        net.predict((raw - mean) / std)


def test_a_configuration_added_by_calibrate_is_usable(calibrated):
    _, path, _, _ = calibrated
    net = AdaptiveNet.from_checkpoint(path)
    calibrate_config(net.model, 0.3, 24, torch.randn(8, 3, 32, 32))
    row = net.set_config(0.3, 24)
    assert (net.width, net.resolution, row) == (0.3, 24, {"width": 0.3, "resolution": 24}) and net.is_calibrated()
    with pytest.raises(mn.MutualNetError, match="neither in the query table nor calibrated"):
        net.set_config(0.35, 24)


def test_eval_any_configuration_of_a_checkpoint(calibrated, tmp_path, capsys):
    """`mutualnet eval` needs no query table: stored statistics, the top width's own, or --calibrate."""
    from mutualnet.data import build_dataset, random_subset
    from mutualnet.evaluate import evaluate

    _, path, model, _ = calibrated
    argv = ["eval", "--checkpoint", str(path), "--val-images", "24", "--calib-images", "16", "--batch-size", "8"]
    assert main([*argv, "--config", "1.0,32", "--config", "0.5,24", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert [r["bn_statistics"] for r in res] == ["calibrated (stored in the checkpoint)"] * 2
    val = build_dataset("synthetic", "val", input_size=32, num_classes=10, synthetic_length=512)
    out = evaluate(model, torch.utils.data.DataLoader(random_subset(val, 24, 0), batch_size=8), 1.0, 32)
    assert (res[0]["top1"], res[0]["top5"], res[0]["images"]) == (out["top1"], out["top5"], 24)
    capsys.readouterr()
    assert main([*argv, "--config", "0.3,24"]) == 2
    err = capsys.readouterr().err
    assert "w0.300_r24 has no calibrated BatchNorm statistics" in err and "add --calibrate" in err
    assert main([*argv, "--config", "0.3,24", "--calibrate"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"width 0.3 at 24 px: top-1 [\d.]+%, top-5 [\d.]+% on 24 synthetic validation images "
                        r"\([\d.]+ MFLOPs; BN: re-estimated on 16 training images\)", line), line


def test_exports_carry_preprocessing_and_class_names(calibrated, tmp_path, capsys):
    _, path, _, _ = calibrated
    assert main(["export", "--checkpoint", str(path), "--width", "0.5", "--resolution", "24",
                 "--out", str(tmp_path / "m.pt")]) == 0
    meta = torch.load(tmp_path / "m.pt", weights_only=True)["meta"]
    assert meta["preprocessing"] == {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 32, "resize_ratio": 0.875,
                                     "resize": "antialias"}
    assert meta["class_names"][:2] == ["class0", "class1"]


def test_latency_per_runtime_and_adaptive_net_on_onnxruntime(calibrated, tmp_path, capsys):
    _, path, model, table = calibrated
    t = tmp_path / "rt.json"
    QueryTable(rows=[table.find(w, r) for w, r in [(0.25, 16), (0.5, 24), (1.0, 32)]]).save(t)
    assert main(["latency", "--table", str(t), "--checkpoint", str(path), "--threads", "1", "--repeats", "2",
                 "--warmup", "1", "--runtime", "onnxruntime,eager,torchscript"]) == 0
    said = capsys.readouterr().out
    filled = QueryTable.load(t)
    picks = collections.Counter(r["runtime"] for r in filled.fastest_runtimes())
    assert "onnxruntime" in said and "fastest per configuration" in said
    assert all(f"{rt} for {n}" in said for rt, n in picks.items())
    assert main(["select", "--table", str(t), "--max-mflops", "1000", "--runtime", "fastest"]) == 0
    assert f"ms on {filled.select(max_mflops=1000, runtime='fastest')['runtime']} " in capsys.readouterr().out
    assert filled.runtimes == ["eager", "torchscript", "onnxruntime"]
    assert all(r["latency_ms"] == r["latency_onnxruntime_ms"] > 0 and r["latency_eager_ms"] > 0 for r in filled.rows)
    assert filled.meta["latency"]["runtime"] == "onnxruntime"
    assert t.with_suffix(".csv").read_text().splitlines()[0].endswith(
        ",pareto,latency_eager_ms,latency_torchscript_ms,latency_onnxruntime_ms")
    budget = sorted(r["latency_eager_ms"] for r in filled.rows)[1]
    assert main(["select", "--table", str(t), "--max-latency-ms", str(budget), "--runtime", "eager", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == filled.select(max_latency_ms=budget, runtime="eager")
    assert main(["select", "--table", str(t), "--max-latency-ms", "1", "--runtime", "tvm"]) == 2
    assert main(["latency", "--table", str(t), "--checkpoint", str(path), "--runtime", "tvm"]) == 2

    net = AdaptiveNet.from_checkpoint(path, table=t, runtime="onnxruntime")
    eager = AdaptiveNet.from_checkpoint(path, table=t)
    x = torch.randn(2, 3, 40, 40)
    assert not net._runners  # sessions are built on first use
    for row in filled.rows:
        net.set_config(row["width"], row["resolution"])
        eager.set_config(row["width"], row["resolution"])
        assert (net.logits(x) - eager.logits(x)).abs().max() <= 1e-4
    assert len(net._runners) == 3
    b = filled.rows[1]["latency_onnxruntime_ms"]
    assert net.set_budget(latency_ms=b) == filled.select(max_latency_ms=b, runtime="onnxruntime")
    ts = AdaptiveNet.from_checkpoint(path, table=t, runtime="torchscript")
    ts.set_config(0.5, 24)
    eager.set_config(0.5, 24)
    assert (ts.logits(x) - eager.logits(x)).abs().max() <= 1e-4
