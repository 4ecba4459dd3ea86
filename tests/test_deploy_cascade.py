"""Anytime inference: a cascade over configurations (mutualnet.deploy.cascade) in the library, CLI and export."""

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import mutualnet as mn
from deploy_helpers import calibrate_config, table_rows, trained_like
from mutualnet.checkpoint import save_checkpoint
from mutualnet.cli import main
from mutualnet.deploy import AdaptiveNet
from mutualnet.deploy.cascade import Cascade, Scores, Step, fit_cascade, model_runner, run_cascade, score_configs
from mutualnet.search.table import QueryTable

CONFIGS = [(0.5, 16), (0.5, 24), (1.0, 24), (1.0, 32)]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("cascade")
    model = trained_like("resnet20_cifar")
    imgs = torch.randn(16, 3, 32, 32)
    for w, r in CONFIGS:
        calibrate_config(model, w, r, imgs)
    table = QueryTable(rows=table_rows(model, CONFIGS))
    path = tmp / "calibrated.pt"
    meta = {"resolutions": [32, 24, 16], "mode": "mutual", "class_names": [f"class{i}" for i in range(10)],
            "dataset": {"name": "synthetic", "num_classes": 10, "in_chans": 3, "input_size": 32, "holdout": 64,
                        "synthetic_length": 256, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    save_checkpoint(path, model, meta, query_table=table.to_dict())
    return tmp, path, model, table


def _cascade(table, thresholds):
    rows = table.frontier()
    return Cascade(tuple(Step(r["width"], r["resolution"], t, r["mflops"]) for r, t in zip(rows, thresholds)))


def _at(model, width, resolution, x):
    with torch.no_grad(), mn.use_config(model, width, resolution):
        return model(torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear",
                                                     antialias=True))


def test_sending_all_to_the_last_step_or_stopping_all_at_the_first_equals_that_configuration(calibrated):
    _, path, model, table = calibrated
    front = table.frontier()
    assert len(front) >= 3
    x = torch.randn(12, 3, 32, 32)
    first, last = front[0], front[-1]
    net = AdaptiveNet.from_checkpoint(path)
    for thresholds, row, where in (([1.0] * len(front), last, len(front) - 1), ([0.0] * len(front), first, 0)):
        cascade = _cascade(table, thresholds)
        out = run_cascade(cascade, x, model_runner(model))
        ref = _at(model, row["width"], row["resolution"], x)
        assert torch.equal(out.logits, ref) and out.stop.tolist() == [where] * 12
        net.set_cascade(cascade)
        assert torch.equal(net.logits(x), ref)
        preds = net.predict(x, normalised=True)
        assert {(p[0].width, p[0].resolution) for p in preds} == {(row["width"], row["resolution"])}
        net.set_cascade(None)


def test_inputs_that_stop_leave_the_batch_and_each_gets_its_step_configuration(calibrated):
    _, _, model, table = calibrated
    x = torch.randn(40, 3, 32, 32)
    run, seen = model_runner(model), []

    def counting(step, images):
        seen.append((step.config, len(images)))
        return run(step, images)

    first = table.frontier()[0]
    conf0 = _at(model, first["width"], first["resolution"], x).softmax(-1).amax(-1)
    t0 = float(conf0.median())
    cascade = _cascade(table, [t0, 0.0, 0.0])  # about half stop at the first step, the rest at the second
    out = run_cascade(cascade, x, counting)
    stops = out.stop.tolist()
    assert seen[0] == (cascade.steps[0].config, 40) and seen[1] == (cascade.steps[1].config, stops.count(1))
    assert len(seen) == 2 and 0 < stops.count(0) < 40 and set(stops) == {0, 1}
    assert out.stop.eq(0).tolist() == (conf0 > t0).tolist()
    for i, k in enumerate(stops):
        ref = _at(model, *cascade.steps[k].config, x[i:i + 1])
        torch.testing.assert_close(out.logits[i:i + 1], ref, rtol=1e-4, atol=1e-4)
    report = cascade.report(out.stop, torch.ones(40, dtype=torch.bool))
    paid = [cascade.steps[0].mflops, cascade.steps[0].mflops + cascade.steps[1].mflops]
    assert report["mflops"] == pytest.approx(sum(paid[k] for k in stops) / 40)
    assert report["stop_share"] == [stops.count(0) / 40, stops.count(1) / 40, 0.0] and report["top1"] == 100.0


def test_fitting_evaluates_every_threshold_combination_exactly():
    """Every (chain, thresholds) point the fit weighs has the accuracy and cost a replay of the cascade gives."""
    from mutualnet.deploy.cascade import _chain_points, _replay

    g = torch.Generator().manual_seed(0)
    n, k = 50, 4
    correct = torch.rand(n, k, generator=g) < torch.tensor([0.6, 0.7, 0.8, 0.9])
    conf = torch.rand(n, k, generator=g) * 0.6 + 0.4 * correct
    scores = Scores([(0.5, 16), (0.5, 24), (1.0, 24), (1.0, 32)], [1.0, 2.0, 4.0, 8.0], conf, correct)
    for chain in [(0,), (0, 3), (1, 2), (0, 1, 3), (0, 1, 2, 3)]:
        acc, tot, thr = _chain_points(scores, chain, 5)
        assert len(acc) == len(thr) > 0 and thr.shape[1] == len(chain) - 1
        for a, c, t in itertools.islice(zip(acc, tot, thr), 0, None, 7):
            cascade = Cascade(tuple(Step(*scores.configs[j], th, scores.mflops[j])
                                    for j, th in zip(chain, [*t.tolist(), 0.0])))
            stop, hit = _replay(cascade, scores, chain)
            assert int(hit.sum()) == int(a) and float(cascade.cost(stop).sum()) == pytest.approx(float(c))
    fitted = fit_cascade(scores, max_mflops=3.0, max_steps=3, grid=5, ties_se=0.0)
    assert fitted.fit["mflops"] <= 3.0 and fitted.fit["target"] == {"max_mflops": 3.0}
    # nothing cheaper than it reaches its accuracy, by brute force over the same grid
    best = fit_cascade(scores, min_top1=fitted.fit["top1"], max_steps=3, grid=5, ties_se=0.0)
    assert best.fit["mflops"] <= fitted.fit["mflops"] + 1e-9 and best.fit["top1"] >= fitted.fit["top1"]
    with pytest.raises(mn.MutualNetError, match="no cascade fits 0.5 MFLOPs"):
        fit_cascade(scores, max_mflops=0.5)
    with pytest.raises(mn.MutualNetError, match="give one target"):
        fit_cascade(scores)


def test_held_out_differences_within_their_noise_spend_the_budget():
    """ties_se: among cascades within the budget whose held-out top-1 is within that many standard errors of the
    best, the costliest is kept (0: the most accurate); a top-1 target needs that margin on top."""
    from mutualnet.deploy.cascade import _chain_points

    g = torch.Generator().manual_seed(3)
    n = 400
    correct = torch.rand(n, 3, generator=g) < torch.tensor([0.7, 0.8, 0.9])
    conf = torch.rand(n, 3, generator=g) * 0.5 + 0.5 * correct
    scores = Scores([(0.5, 16), (0.5, 24), (1.0, 32)], [1.0, 2.0, 8.0], conf, correct)
    budget, z = 4.0, 1.0
    plain = fit_cascade(scores, max_mflops=budget, grid=10, ties_se=0.0)
    noisy = fit_cascade(scores, max_mflops=budget, grid=10, ties_se=z)
    every = [(float(a) / n * 100, float(c) / n) for ch in [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
             for a, c in zip(*_chain_points(scores, ch, 10)[:2])]
    points = [(a, c) for a, c in every if c <= budget + 1e-9]
    top = max(a for a, _ in points)
    assert plain.fit["top1"] == pytest.approx(top) and noisy.fit["ties_se"] == z
    se = 100 * (top / 100 * (1 - top / 100) / n) ** 0.5
    near = [c for a, c in points if a >= top - z * se - 1e-9]
    assert noisy.fit["mflops"] == pytest.approx(max(near)) and noisy.fit["mflops"] <= budget
    assert noisy.fit["mflops"] > plain.fit["mflops"] and noisy.fit["top1"] >= top - z * se - 1e-9
    target = 100 * float(correct[:, 0].float().mean())  # the cheapest configuration alone reaches it, no margin
    need = target + z * 100 * (target / 100 * (1 - target / 100) / n) ** 0.5
    cheap = fit_cascade(scores, min_top1=target, grid=10, ties_se=0.0)
    safe = fit_cascade(scores, min_top1=target, grid=10, ties_se=z)
    assert cheap.fit["mflops"] == pytest.approx(min(c for a, c in every if a >= target - 1e-9))
    assert safe.fit["mflops"] == pytest.approx(min(c for a, c in every if a >= need - 1e-9))
    assert safe.fit["mflops"] > cheap.fit["mflops"]
    assert safe.fit["top1"] >= need > cheap.fit["top1"]
    with pytest.raises(mn.MutualNetError, match="ties_se"):
        fit_cascade(scores, max_mflops=budget, ties_se=float("nan"))


def test_fit_on_heldout_images_and_its_report_is_what_the_cascade_does_there(calibrated, tmp_path):
    _, _, model, table = calibrated
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    scores = score_configs(model, (images, labels), table.frontier(), batch_size=16)
    budget = (table.frontier()[0]["mflops"] + table.frontier()[-1]["mflops"]) / 2
    cascade = fit_cascade(scores, max_mflops=budget, grid=8)
    out = run_cascade(cascade, images, model_runner(model))
    rep = cascade.report(out.stop, out.logits.argmax(-1) == labels)
    assert rep["stop_share"] == cascade.fit["stop_share"] and 0 < rep["stop_share"][0] < 1
    assert (rep["mflops"], rep["top1"]) == pytest.approx((cascade.fit["mflops"], cascade.fit["top1"]))
    assert cascade.fit["mflops"] <= budget
    cascade.save(tmp_path / "c.json")
    assert Cascade.load(tmp_path / "c.json") == cascade


@pytest.mark.parametrize("bad, match", [
    ({"format": "x"}, "not a mutualnet cascade"),
    ({"steps": []}, "1 to 8 steps"),
    ({"steps": [{"width": 0.5, "resolution": 16, "threshold": float("nan"), "mflops": 1.0},
                {"width": 1.0, "resolution": 32, "threshold": 0.0, "mflops": 2.0}]}, "finite"),
    ({"steps": [{"width": 0.5, "resolution": 16, "threshold": 1.5, "mflops": 1.0},
                {"width": 1.0, "resolution": 32, "threshold": 0.0, "mflops": 2.0}]}, r"in \[0, 1\]"),
    ({"steps": [{"width": 0.5, "resolution": 16.5, "threshold": 0.5, "mflops": 1.0}]}, "integer"),
    ({"steps": [{"width": 0.5, "resolution": 16, "mflops": 1.0}]}, "exactly width"),
    ({"rule": "margin"}, "unknown cascade rule"),
    ({"extra": 1}, "unknown field"),
])
def test_a_bad_cascade_file_is_one_clear_error(tmp_path, bad, match):
    d = {"format": "mutualnet-cascade", "version": 1, "rule": "max_softmax", "fit": {},
         "steps": [{"width": 1.0, "resolution": 32, "threshold": 0.0, "mflops": 2.0}]} | bad
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(mn.MutualNetError, match=match):
        Cascade.load(tmp_path / "c.json")


DOC = Path(__file__).resolve().parents[1] / "docs" / "cascade.md"


def _doc_blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def test_benchmark_compares_cascade_time_with_its_mflops(calibrated, tmp_path, monkeypatch, capsys):
    import runpy

    _, path, model, table = calibrated
    cascade = _cascade(table, [0.3, 0.3, 0.0])
    cascade.save(tmp_path / "c.json")
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    monkeypatch.setattr(sys, "argv", ["bench_cascade.py", "--checkpoint", str(path), "--cascade",
                                      str(tmp_path / "c.json"), "--batch", "8", "--batches", "2", "--repeats", "1",
                                      "--runtimes", "eager"])
    runpy.run_path(str(bench / "bench_cascade.py"), run_name="__main__")
    out = capsys.readouterr().out
    for kind in ("wall", "cpu"):  # the goal's ratio, and its two factors whose product it is
        m = re.search(rf"eager {kind}: cascade time / MFLOPs-predicted time = ([\d.]+)x .* = per-step-time-predicted "
                      r"/ MFLOPs-predicted ([\d.]+)x .* x cascade / per-step-time-predicted ([\d.]+)x", out)
        assert m and float(m[1]) == pytest.approx(float(m[2]) * float(m[3]), rel=0.01), out


def test_the_commands_of_docs_cascade_md_run(calibrated, tmp_path, monkeypatch, capsys):
    """docs/cascade.md as written, on the tiny checkpoint: fit on held-out images, eval, predict, export; then its
    snippet runs the bundle in a Python where mutualnet cannot be imported and gives the library's classes and
    steps."""
    import shlex
    import shutil

    _, path, _, _ = calibrated
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/demo/search").mkdir(parents=True)
    shutil.copy(path, tmp_path / "runs/demo/search/calibrated.pt")
    Image.fromarray((torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy()).save(tmp_path / "shirt.png")
    scale = {"cascade": ["--grid", "8", "--heldout-images", "48", "--val-images", "24", "--batch-size", "16"],
             "eval": ["--val-images", "24", "--batch-size", "8"]}
    commands = [c for c in re.sub(r"\\\n\s*", " ", _doc_blocks("bash")[0]).splitlines() if c.startswith("mutualnet")]
    assert [shlex.split(c)[1] for c in commands] == ["cascade", "eval", "predict", "export"]
    outputs = []
    for command in commands:
        argv = shlex.split(command)[1:]
        assert main(argv + scale.get(argv[0], [])) == 0, (command, capsys.readouterr().err)
        outputs.append(capsys.readouterr().out)
    fit, evaluated, predicted, _ = outputs
    cascade = Cascade.load(tmp_path / "runs/demo/cascade.json")
    n = len(cascade.steps)
    assert cascade.fit["split"] == "holdout" and cascade.fit["images"] == 48 and cascade.fit["mflops"] <= 8
    assert "expected on 48 held-out images" in fit and "on 24 test images: top-1" in fit
    assert evaluated.startswith(f"cascade of {n} steps: top-1 ") and len(evaluated.splitlines()) == 1 + n
    line = r"shirt.png\tclass\d \([\d.]+\)\twidth [\d.]+ at \d+ px"
    assert re.fullmatch(rf"cascade of {n} steps: .*\n{line}\n", predicted), predicted
    argv = ["--checkpoint", "runs/demo/search/calibrated.pt", "--cascade", "runs/demo/cascade.json"]
    assert main(["eval", *argv, "--val-images", "24", "--batch-size", "8", "--per-image", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["report"]["images"] == 24 and len(res["images"]) == 24
    assert sum(res["report"]["stop_share"]) == pytest.approx(1.0)
    assert {(i["width"], i["resolution"]) for i in res["images"]} <= {s.config for s in cascade.steps}

    bundle = tmp_path / "runs/demo/cascade_bundle"
    assert [s["threshold"] for s in json.loads((bundle / "cascade.json").read_text())["steps"]] == cascade.thresholds
    images = torch.rand(10, 3, 32, 32)
    torch.save(images, tmp_path / "images.pt")
    code = ("import sys, torch; sys.modules['mutualnet'] = None\n" + _doc_blocks("python")[0] +
            "\ntorch.save(classify(torch.load('images.pt')), 'out.pt')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    classes, steps = torch.load(tmp_path / "out.pt")
    net = AdaptiveNet.from_checkpoint(path)
    net.set_cascade(cascade)
    ref = net.run_cascade(net.prepare(images))
    assert steps.tolist() == ref.stop.tolist() and classes.tolist() == ref.logits.argmax(-1).tolist()
    assert main(["export", *argv, "--out", "m.pt", "--format", "pt"]) == 2
    assert "a cascade bundle is torchscript or onnx" in capsys.readouterr().err
    assert cascade.fit["ties_se"] == 0.5  # the documented default
    assert main(["cascade", "--checkpoint", "runs/demo/search/calibrated.pt", "--max-mflops", "8", "--out", "x.json",
                 "--ties-se", "-1"]) == 2
    assert "--ties-se" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_the_results_command_runs(calibrated, tmp_path, monkeypatch, capsys):
    """docs/results.md's cascade command (scripts/cascade_curve.py), shrunk, on the tiny checkpoint."""
    import runpy
    import shlex

    _, path, _, table = calibrated
    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    command = next(line for line in text.splitlines() if line.startswith("python scripts/cascade_curve.py"))
    argv = shlex.split(command)[1:]
    argv[argv.index("--checkpoint") + 1] = str(path)
    argv[argv.index("--out") + 1] = str(tmp_path / "curve.png")
    front = [r["mflops"] for r in table.frontier()]
    budgets = ",".join(f"{b:.2f}" for b in (front[0] * 1.2, (front[0] + front[-1]) / 2))
    argv += ["--budgets", budgets, "--heldout-images", "48", "--val-images", "32", "--grid", "6", "--batch-size", "16",
             "--bootstrap", "2", "--bootstrap-budgets", budgets.split(",")[1]]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(Path(__file__).resolve().parents[1] / argv[0]), run_name="__main__")
    out = capsys.readouterr().out
    assert re.search(r"same stopping step for [\d.]+% of test images", out) and "goal 1" in out and "goal 2" in out
    assert len([line for line in out.splitlines() if re.match(r"\| [\d.]+ \| ", line)]) >= 2
    assert (tmp_path / "curve.png").stat().st_size > 1000
    boots = re.findall(r"bootstrap ties_se ([\d.]+), budget [\d.]+: .* goal 1 holds in (\d)/2", out)
    assert {t for t, _ in boots} == {"0", "0.5"} and len(boots) == 4, out
