import functools
import json

import pytest
import torch

import mutualnet as mn
from mutualnet.calibrate import calibrate
from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mutualnet.cli import main
from mutualnet.data import build_dataset, load_images
from mutualnet.evaluate import evaluate
from mutualnet.layers import SlimmableBatchNorm2d, config_key
from mutualnet.search import QueryTable, SearchPlan, build_query_table

DS_META = {"name": "synthetic", "root": None, "num_classes": 4, "in_chans": 3, "input_size": 16,
           "synthetic_length": 64}


def _tiny(num_classes=4):
    return mn.create_model("resnet20_cifar", num_classes=num_classes, width_range=(0.25, 0.5))


@functools.cache
def _trained_state(steps=30):
    """Weights of a briefly hand-trained tiny model (so accuracies differ across configurations)."""
    torch.manual_seed(0)
    model = _tiny()
    data = build_dataset("synthetic", "train", input_size=16, synthetic_length=64, num_classes=4)
    x, y = load_images(data)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for _ in range(steps):
        for w in (0.5, 0.25):
            model.set_width(w)
            torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    return {k: v.clone() for k, v in model.state_dict().items()}


def _trained_tiny():
    model = _tiny()
    model.load_state_dict(_trained_state())
    return model.eval()


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, _trained_tiny(), meta={"resolutions": [16, 12], "mode": "mutual",
                                                 "width_range": [0.25, 0.5], "dataset": DS_META})
    return path


def test_calibrated_stats_are_exact_mean_and_var_of_bn_inputs():
    model = _tiny()
    images = torch.randn(70, 3, 20, 20) * 2 + 0.5  # 70 = 3 uneven batches of 32
    width, res = 0.4, 16  # not on any grid: any width in range works
    inputs: dict[str, list[torch.Tensor]] = {}
    bns = {n: m for n, m in model.named_modules() if isinstance(m, SlimmableBatchNorm2d)}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: inputs.setdefault(n, []).append(a[0].detach()))
             for n, m in bns.items()]
    result = calibrate(model, images, width, res, num_images=70, batch_size=32)
    for h in hooks:
        h.remove()
    key = config_key(width, res)
    assert result.key == key and result.num_images == 70 and result.images_per_s > 0
    assert inputs["bn1"][0].shape[-1] == 16  # the stem's BN: images resized 20 -> 16 on the device
    for name, bn in bns.items():
        x = torch.cat(inputs[name]).double()
        assert x.shape[0] == 70
        xs = x.transpose(0, 1).reshape(x.shape[1], -1)
        mean, var = bn.calibrated[key]
        torch.testing.assert_close(mean.double(), xs.mean(1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(var.double(), xs.var(1, unbiased=True), rtol=1e-5, atol=1e-6)
    # eval at that configuration now uses them; other configurations are untouched
    bn = next(iter(bns.values()))
    mn.set_config(model, width, res)
    model(torch.randn(2, 3, res, res))
    assert bn.calibration_key() == key and bn.active_stats()[0] is bn.calibrated[key][0]
    assert list(bn.calibrated) == [key]
    with pytest.raises(mn.MutualNetError, match="outside"):
        calibrate(model, images, 0.6, res)


def test_calibration_stops_once_the_statistics_have_converged():
    model = _tiny()
    same = torch.randn(10, 3, 16, 16).repeat(6, 1, 1, 1)  # 6 batches of the same 10 images: nothing moves after 2
    early = calibrate(model, same, 0.5, 16, num_images=60, batch_size=10, tol=0.01)
    mean_10, var_10 = next(m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d)).calibrated[early.key]
    assert early.num_images == 20
    fresh = torch.randn(60, 3, 16, 16) * torch.linspace(0.5, 3, 60).view(60, 1, 1, 1)  # every batch moves them
    assert calibrate(model, fresh, 0.5, 16, num_images=60, batch_size=10, tol=0.01).num_images == 60
    # what it stored is exactly the statistics of the images it used
    full = calibrate(model, same[:20], 0.5, 16, num_images=20, batch_size=10)
    bn = next(m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d))
    torch.testing.assert_close((mean_10, var_10), bn.calibrated[full.key])
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(mn.MutualNetError, match="tolerance must be a positive number"):
            calibrate(model, same, 0.5, 16, tol=bad)


def test_calibration_fixes_a_narrow_subnetwork():
    model = _trained_tiny()
    val = load_images(build_dataset("synthetic", "val", input_size=16, synthetic_length=64, num_classes=4))
    calib, _ = load_images(build_dataset("synthetic", "train", input_size=16, synthetic_length=64, num_classes=4))
    model.eval()
    # running statistics were only tracked at the widest width; they are wrong for the narrow one at 12 px
    with mn.allow_uncalibrated(model):  # (eval refuses it otherwise)
        before = evaluate(model, val, 0.25, 12)["top1"]
    calibrate(model, calib, 0.25, 12, num_images=64)
    after = evaluate(model, val, 0.25, 12)
    assert after["count"] == 64 and after["top1"] > before


def _search(model, tmp_path, **kw):
    tr = build_dataset("synthetic", "train", input_size=16, synthetic_length=64, num_classes=4)
    va = build_dataset("synthetic", "val", input_size=16, synthetic_length=64, num_classes=4)
    return build_query_table(model, va, tr, resolutions=[12, 16], width_step=0.125, calib_images=48,
                             batch_size=32, state_dir=tmp_path, progress=False, **kw)


def test_query_table_rows_frontier_and_selection(tmp_path):
    model = _trained_tiny()
    table = _search(model, tmp_path, meta={"model": "resnet20_cifar"}, latency=True)
    assert len(table) == 3 * 2 and [r["resolution"] for r in table.rows] == [16, 16, 16, 12, 12, 12]
    for r in table.rows:
        prof = mn.profile(model, r["width"], r["resolution"])
        assert (r["macs"], r["params"]) == (prof.macs, prof.params)
        assert 0 <= r["top1"] <= r["top5"] <= 100 and r["latency_ms"] > 0
        # every configuration carries its own calibrated statistics
        assert config_key(r["width"], r["resolution"]) in model.bn1.calibrated
    front = table.frontier("macs")
    assert front and all(a["macs"] < b["macs"] and a["top1"] < b["top1"] for a, b in zip(front, front[1:]))
    assert {id(r) for r in front} == {id(r) for r in table.rows if r["pareto"]}
    for r in table.rows:  # nothing off the frontier beats a frontier row of lower-or-equal cost
        assert r["pareto"] or any(f["macs"] <= r["macs"] and f["top1"] >= r["top1"] for f in front)
    # selection: the most accurate row within budget, for every budget
    for budget in sorted({r["mflops"] for r in table.rows}):
        sel = table.select(max_mflops=budget)
        assert sel["mflops"] <= budget
        assert sel["top1"] == max(r["top1"] for r in table.rows if r["mflops"] <= budget)
    cheapest = min(r["mflops"] for r in table.rows)
    with pytest.raises(mn.MutualNetError, match=f"cheapest is .*{cheapest:.2f} MFLOPs"):
        table.select(max_mflops=cheapest * 0.99)
    assert table.select(max_latency_ms=1e9)["top1"] == max(r["top1"] for r in table.rows)
    assert table.meta["latency"]["batch_size"] == 1 and table.meta["calibration"]["images"] == 48
    assert 0 < table.meta["calibration"]["share_of_search_time"] < 1
    # save/load round trip, CSV beside the JSON
    table.save(tmp_path / "t.json")
    again = QueryTable.load(tmp_path / "t.json")
    assert again.rows == table.rows and again.meta["model"] == "resnet20_cifar"
    csv = (tmp_path / "t.csv").read_text().splitlines()
    assert csv[0] == "width,resolution,top1,top5,macs,params,mflops,latency_ms,pareto" and len(csv) == 7


def test_budgets_are_compared_at_the_printed_precision():
    """The printed cost of a configuration (2.54 for 2.542 MFLOPs) selects it; a lower budget does not."""
    rows = [{"width": 0.5, "resolution": 16, "top1": 40, "top5": 70, "macs": 2_542_000, "params": 5,
             "latency_ms": 1.2344},
            {"width": 1.0, "resolution": 16, "top1": 60, "top5": 90, "macs": 9_000_000, "params": 9,
             "latency_ms": 3.0}]
    table = QueryTable(rows=rows)
    assert table.select(max_mflops=2.54)["width"] == 0.5
    with pytest.raises(mn.MutualNetError, match="the cheapest is width 0.5 at 16 px .2.54 MFLOPs"):
        table.select(max_mflops=2.53)
    sel = table.select(max_latency_ms=1.234)
    assert sel["width"] == 0.5 and sel["frontier"] == "latency"
    with pytest.raises(mn.MutualNetError, match="fastest is .*1.234 ms"):
        table.select(max_latency_ms=1.233)
    assert table.select(max_mflops=9.0)["frontier"] == "mflops"


def test_select_fastest_runs_each_configuration_on_its_fastest_runtime():
    row = {"top5": 90.0, "params": 10, "latency_ms": None}
    table = QueryTable(rows=[
        row | {"width": 0.5, "resolution": 16, "top1": 60.0, "macs": 1e6, "latency_eager_ms": 2.0,
               "latency_onnxruntime_ms": 1.0},
        row | {"width": 1.0, "resolution": 16, "top1": 70.0, "macs": 4e6, "latency_eager_ms": 3.0,
               "latency_onnxruntime_ms": 3.5},  # eager wins here (small networks: ONNX Runtime's overhead)
    ])
    assert [r["runtime"] for r in table.fastest_runtimes()] == ["onnxruntime", "eager"]
    best = table.select(max_latency_ms=3.0, runtime="fastest")
    assert (best["width"], best["runtime"], best["latency_fastest_ms"]) == (1.0, "eager", 3.0)
    # on one runtime alone 3 ms buys less: ONNX Runtime fits only the narrow network
    assert table.select(max_latency_ms=3.0, runtime="onnxruntime")["width"] == 0.5
    assert table.select(max_latency_ms=1.5, runtime="fastest")["runtime"] == "onnxruntime"
    with pytest.raises(mn.MutualNetError, match="the fastest is .*1.000 ms"):
        table.select(max_latency_ms=0.5, runtime="fastest")
    with pytest.raises(mn.MutualNetError, match="no per-runtime latency"):
        QueryTable(rows=[{k: v for k, v in r.items() if not k.startswith("latency_")}
                         for r in table.rows]).select(max_latency_ms=3.0, runtime="fastest")


def test_no_latency_table_refuses_latency_selection():
    table = QueryTable(rows=[{"width": 1.0, "resolution": 32, "top1": 50, "top5": 80, "macs": 10, "params": 5}])
    with pytest.raises(mn.MutualNetError, match="no latency.*mutualnet latency --checkpoint"):
        table.select(max_latency_ms=5)
    with pytest.raises(mn.MutualNetError, match="no latency"):
        table.frontier("latency_ms")


def test_killed_search_resumes_where_it_stopped(tmp_path, monkeypatch):
    import mutualnet.search.build as build

    full = _search(_trained_tiny(), tmp_path / "full")
    model = _trained_tiny()
    calls = []
    real = build.calibrate

    def dying(*a, **kw):  # the 4th configuration is "killed"
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(a[2:4])
        return real(*a, **kw)

    monkeypatch.setattr(build, "calibrate", dying)
    with pytest.raises(KeyboardInterrupt):
        _search(model, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / build.STATE_FILE).read_text())
    assert len(saved["rows"]) == 3
    monkeypatch.setattr(build, "calibrate", real)
    fresh = _trained_tiny()  # a new process: calibrated statistics come back from disk
    calls.clear()
    monkeypatch.setattr(build, "calibrate", lambda *a, **kw: (calls.append(a[2:4]), real(*a, **kw))[1])
    resumed = _search(fresh, tmp_path / "run")
    assert len(calls) == 3 and len(resumed) == 6
    for a, b in zip(full.rows, resumed.rows):
        assert (a["width"], a["resolution"], a["macs"]) == (b["width"], b["resolution"], b["macs"])
        assert a["top1"] == pytest.approx(b["top1"])
    for r in resumed.rows:
        assert config_key(r["width"], r["resolution"]) in fresh.bn1.calibrated
    # another model in the same folder is refused rather than mixed in
    with pytest.raises(mn.MutualNetError, match="unfinished search with other settings"):
        _search(_tiny(), tmp_path / "run")


def test_cli_search_select_plot_end_to_end(tmp_path, ckpt_path, capsys):
    out = tmp_path / "search"
    rc = main(["search", "--checkpoint", str(ckpt_path), "--out", str(out), "--width-step", "0.125",
               "--calib-images", "32", "--val-images", "48", "--eval-batch-size", "16", "--no-progress"])
    assert rc == 0
    table = QueryTable.load(out / "query_table.json")
    assert len(table) == 6 and {r["resolution"] for r in table.rows} == {16, 12}
    assert table.meta["dataset"]["name"] == "synthetic" and table.meta["mode"] == "mutual"
    assert (out / "query_table.csv").is_file() and not (out / "query_table.partial.json").exists()
    # calibrated.pt: the statistics of every configuration, and the table; it reproduces the table's accuracy
    ckpt = load_checkpoint(out / "calibrated.pt")
    assert QueryTable.from_dict(ckpt["query_table"]).rows == table.rows
    model = model_from_checkpoint(ckpt).eval()
    assert {config_key(r["width"], r["resolution"]) for r in table.rows} <= set(model.bn1.calibrated)
    val = build_dataset("synthetic", "val", input_size=16, synthetic_length=64, num_classes=4)
    from torch.utils.data import Subset
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:48].sort().values.tolist()
    row = table.rows[-1]
    top1 = evaluate(model, load_images(Subset(val, idx)), row["width"], row["resolution"])["top1"]
    assert top1 == pytest.approx(row["top1"])
    capsys.readouterr()

    budget = sorted(r["mflops"] for r in table.rows)[2]
    assert main(["select", "--table", str(out), "--max-mflops", str(budget), "--json"]) == 0
    sel = json.loads(capsys.readouterr().out)
    assert sel == table.select(max_mflops=budget)
    assert main(["select", "--table", str(out / "query_table.json"), "--max-mflops", str(budget)]) == 0
    assert f"width {sel['width']:g} at {sel['resolution']} px" in capsys.readouterr().out

    assert main(["plot", str(out), "--out", str(tmp_path / "one.png")]) == 0
    assert main(["plot", str(out), str(out / "query_table.json"), "--labels", "MutualNet", "US-Net",
                 "--out", str(tmp_path / "two.png")]) == 0
    for f in ("one.png", "two.png"):
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / f).stat().st_size > 5000

    # calibrate one off-grid configuration into a copy of the checkpoint
    assert main(["calibrate", "--checkpoint", str(ckpt_path), "--width", "0.3", "--resolution", "14",
                 "--calib-images", "16", "--out", str(tmp_path / "c.pt")]) == 0
    assert "w0.300_r14" in model_from_checkpoint(tmp_path / "c.pt").bn1.calibrated


def test_cli_bad_input_is_one_line_exit_2(tmp_path, ckpt_path, capsys):
    table = tmp_path / "t.json"
    QueryTable(rows=[{"width": 1.0, "resolution": 32, "top1": 50, "top5": 80, "macs": 2_000_000,
                      "params": 5}]).save(table)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    (tmp_path / "notjson.json").write_text("{oops")
    cases = [
        (["select", "--table", str(tmp_path / "nope.json"), "--max-mflops", "5"], "query table not found"),
        (["select", "--table", str(tmp_path / "notjson.json"), "--max-mflops", "5"], "not valid JSON"),
        (["select", "--table", str(table), "--max-mflops", "1"], "cheapest is width 1 at 32 px .*2.00 MFLOPs"),
        (["select", "--table", str(table), "--max-latency-ms", "3"], "no latency"),
        (["select", "--table", str(table)], "give a budget"),
        (["search", "--checkpoint", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "o")], "corrupt"),
        (["search", "--checkpoint", str(ckpt_path), "--out", str(tmp_path / "o"), "--widths", "0.1,0.5"],
         "outside the trained range"),
        (["search", "--checkpoint", str(ckpt_path), "--out", str(tmp_path / "o"), "--resolutions", "16,2"],
         "too small"),
        (["search", "--checkpoint", str(ckpt_path), "--out", str(tmp_path / "o"), "--dataset", "cifar10"],
         "needs --data-root"),
        (["search", "--checkpoint", str(ckpt_path), "--out", str(tmp_path / "o"), "--halving", "2"],
         "halving must be a fraction"),
        (["search", "--checkpoint", str(ckpt_path), "--out", str(tmp_path / "o"), "--calib-tol", "nan"],
         "--calib-tol"),
        (["calibrate", "--checkpoint", str(ckpt_path), "--width", "0.9", "--resolution", "16",
          "--out", str(tmp_path / "c.pt")], "outside"),
        (["plot", str(table), str(table), "--labels", "a", "--out", str(tmp_path / "p.png")], "1 labels for 2"),
        (["plot", str(tmp_path / "nope.json"), "--out", str(tmp_path / "p.png")], "not found"),
    ]
    for argv, msg in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, (argv, err)
        assert __import__("re").search(msg, err), (argv, err)
    assert not (tmp_path / "c.pt").exists() and not (tmp_path / "p.png").exists()


def test_cli_search_calibrates_until_the_statistics_converge(tmp_path, ckpt_path):
    def search(out, *extra):
        assert main(["search", "--checkpoint", str(ckpt_path), "--out", str(out), "--width-step", "0.25",
                     "--calib-images", "64", "--val-images", "32", "--eval-batch-size", "16", "--no-progress",
                     *extra]) == 0
        return QueryTable.load(out / "query_table.json")
    full, early = search(tmp_path / "full"), search(tmp_path / "tol", "--calib-tol", "0.5")
    cal = early.meta["calibration"]
    assert cal["tol"] == 0.5 and 2 * 16 * len(early) <= cal["images_used"] < 64 * len(early)
    assert "tol" not in full.meta["calibration"]
    # fewer images, statistics close to the full ones: the same networks, accuracies within a few images
    assert [(r["width"], r["resolution"]) for r in early.rows] == [(r["width"], r["resolution"]) for r in full.rows]
    assert max(abs(a["top1"] - b["top1"]) for a, b in zip(early.rows, full.rows)) <= 100 * 4 / 32


def test_resize_then_crop_builds_each_resolution(tmp_path):
    asked = []

    def data(split):
        def build(res):
            asked.append((split, res))
            return build_dataset("synthetic", split, input_size=res, synthetic_length=32, num_classes=4)
        return build

    table = build_query_table(_trained_tiny(), data("val"), data("train"), resolutions=[16, 12], widths=[0.5],
                              calib_images=16, batch_size=16, resize_then_crop=True, progress=False)
    assert sorted(asked) == [("train", 12), ("train", 16), ("val", 12), ("val", 16)]
    assert len(table) == 2 and table.meta["resize_then_crop"] is True
    with pytest.raises(mn.MutualNetError, match="resize_then_crop needs"):
        build_query_table(_tiny(), data("val")(16), data("train")(16), resolutions=[16], resize_then_crop=True)


def test_identical_networks_are_searched_once_and_the_table_equals_the_exhaustive_one(monkeypatch):
    import mutualnet.search.build as build

    model, widths = _trained_tiny(), [0.25 + 0.025 * i for i in range(11)]  # 11 widths, 3 distinct networks
    same = build.distinct_widths(model, widths)
    assert len(set(same.values())) == 3 and same[0.275] == 0.25 and same[0.5] != 0.5
    tr = build_dataset("synthetic", "train", input_size=16, synthetic_length=64, num_classes=4)
    va = build_dataset("synthetic", "val", input_size=16, synthetic_length=64, num_classes=4)
    calls = []
    real = build.calibrate
    monkeypatch.setattr(build, "calibrate", lambda *a, **kw: (calls.append(a[2:4]), real(*a, **kw))[1])

    def search(m):
        return build_query_table(m, va, tr, resolutions=[12], widths=widths, calib_images=48, batch_size=32,
                                 progress=False)

    fast = search(model)
    assert len(calls) == 3 and len(fast) == 11 and fast.meta["distinct_networks"] == 3
    calls.clear()
    monkeypatch.setattr(build, "distinct_widths", lambda m, ws: {float(w): float(w) for w in ws})
    slow_model = _trained_tiny()
    slow = search(slow_model)
    assert len(calls) == 11 and slow.rows == fast.rows
    for r in fast.rows:  # every width holds statistics, equal to those calibrated on their own
        key = config_key(r["width"], r["resolution"])
        for a, b in zip(model.modules(), slow_model.modules()):
            if isinstance(a, SlimmableBatchNorm2d):
                torch.testing.assert_close(a.calibrated[key], b.calibrated[key])


def test_successive_halving_keeps_the_exhaustive_frontier_for_less(tmp_path):
    from mutualnet.data.synthetic import SyntheticImages

    tr, va = SyntheticImages(64, 4, 16, noise=1.5), SyntheticImages(400, 4, 16, noise=1.5, offset=64)
    kw = {"resolutions": [24, 16, 8], "widths": [0.25, 0.5], "calib_images": 48, "batch_size": 100,
          "progress": False}

    def model():
        # width 0.5 made clearly worse than the cheaper width 0.25 (the classifier's extra inputs are noise), so
        # which networks halving stops does not hang on how a 30-step training came out on this CPU
        m = _trained_tiny()
        with torch.no_grad():
            m.fc.weight[:, m.fc.weight.shape[1] // 2:] = 50 * torch.randn(m.fc.weight.shape[0],
                                                                           m.fc.weight.shape[1] // 2,
                                                                           generator=torch.Generator().manual_seed(0))
        return m

    full = build_query_table(model(), va, tr, **kw)
    plan = SearchPlan.of(model(), halving=0.125, **{k: v for k, v in kw.items() if k != "progress"})  # what
    fast = build_query_table(model(), va, tr, plan, state_dir=tmp_path, progress=False)
    assert [(r["width"], r["resolution"], r["top1"]) for r in fast.frontier()] == \
        [(r["width"], r["resolution"], r["top1"]) for r in full.frontier()]
    assert all(r["val_images"] == 400 for r in fast.rows if r["pareto"])
    assert all(r["val_images"] == 50 for r in fast.rows if r["width"] == 0.5)  # dominated: stopped after 1/8
    assert fast.meta["validation"]["images_evaluated"] < 0.8 * full.meta["validation"]["images_evaluated"]
    fast.save(tmp_path / "t.json")
    assert (tmp_path / "t.csv").read_text().splitlines()[0].endswith(",pareto,val_images")
    with pytest.raises(mn.MutualNetError, match="halving must be a fraction"):
        build_query_table(model(), va, tr, halving=1.5, **kw)
    with pytest.raises(mn.MutualNetError, match="give a plan or its fields, not both"):
        build_query_table(model(), va, tr, plan, halving=0.5)


def test_search_times_identical_networks_once(tmp_path):
    """Widths that round to the same channels are one network: one latency, not two noisy ones."""
    model = _trained_tiny()
    p1, p2 = mn.profile(model, 0.25, 16), mn.profile(model, 0.26, 16)
    assert (p1.macs, p1.params) == (p2.macs, p2.params)
    calls = []
    import mutualnet.search.build as build

    real = build.measure_latency
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build, "measure_latency", lambda *a, **k: calls.append(a[1:3]) or real(*a, **k))
        table = _search(model, tmp_path, widths=[0.25, 0.26], latency=True)
    assert calls == [(0.25, 16), (0.25, 12)]
    assert table.find(0.25, 16)["latency_ms"] == table.find(0.26, 16)["latency_ms"]
