import copy
import json
import sys

import pytest

from mutualnet import MutualNetError
from mutualnet.checkpoint import load_checkpoint
from mutualnet.cli import main
from mutualnet.compare import (
    ARMS,
    matched_budgets,
    mean_table,
    parse_seeds,
    seed_budgets,
    training_compute,
    usnet_lower_width,
)
from mutualnet.demo import DEMO_RECIPE
from mutualnet.models import create_model
from mutualnet.profiling import profile
from mutualnet.search import QueryTable


def test_usnet_lower_width_reaches_mutualnet_minimum_cost_or_the_channel_floor():
    recipe = copy.deepcopy(DEMO_RECIPE)
    recipe["model"]["width_range"] = [0.25, 1.0]
    w = usnet_lower_width(recipe)
    model = create_model("resnet20_cifar", in_chans=1, width_range=(0.05, 1.0))
    floor = min(profile(model, x / 100, 28).macs for x in range(5, 30, 5))
    assert profile(model, w, 28).macs == floor  # resnet20's 16-channel stem cannot go below 8 channels
    recipe["train"]["resolutions"] = [28, 27]  # a target the width grid can reach
    w2 = usnet_lower_width(recipe)
    target = profile(model, 0.25, 27).macs
    assert profile(model, w2, 28).macs <= target < profile(model, w2 + 0.05, 28).macs


def test_matched_budgets_picks_best_within_budget():
    a = QueryTable([{"width": 1, "resolution": 28, "top1": 90, "top5": 99, "macs": 10_000_000, "params": 1},
                    {"width": .5, "resolution": 28, "top1": 80, "top5": 99, "macs": 3_000_000, "params": 1}])
    b = QueryTable([{"width": 1, "resolution": 28, "top1": 85, "top5": 99, "macs": 5_000_000, "params": 1}])
    rows = matched_budgets({"a": a, "b": b}, [2, 4, 12])
    assert rows[0]["a"] is None and rows[0]["b"] is None
    assert rows[1]["a"]["top1"] == 80 and rows[1]["b"] is None
    assert rows[2]["a"]["top1"] == 90 and rows[2]["b"]["top1"] == 85


def _table(*rows):
    return QueryTable([{"width": w, "resolution": r, "top1": a, "top5": 99, "macs": int(m * 1e6), "params": 1}
                       for w, r, a, m in rows])


def test_seed_budgets_give_mean_and_spread_of_each_seeds_best_pick():
    s0 = {"a": _table((1, 28, 90, 10), (.5, 28, 80, 3)), "b": _table((1, 28, 85, 5))}
    s1 = {"a": _table((1, 28, 92, 10), (.5, 28, 70, 3), (.5, 16, 76, 1.5)), "b": _table((1, 28, 87, 5))}
    rows = seed_budgets([s0, s1], [2, 4, 12])
    assert rows[0]["a"]["values"] == [76] and rows[0]["a"]["std"] == 0 and rows[0]["b"] is None  # one seed fits
    assert rows[1]["a"]["mean"] == pytest.approx(78) and rows[1]["a"]["configs"] == [[.5, 28], [.5, 16]]
    assert rows[1]["a"]["std"] == pytest.approx(2 ** 0.5 * 2)  # sample std of 80 and 76
    assert rows[2]["a"]["mean"] == pytest.approx(91) and rows[2]["b"]["mean"] == pytest.approx(86)
    assert (rows[2]["b"]["min"], rows[2]["b"]["max"], rows[2]["b"]["n"]) == (85, 87, 2)


def test_mean_table_averages_configurations_every_seed_has():
    m = mean_table([_table((1, 28, 90, 10), (.5, 28, 80, 3)), _table((1, 28, 94, 10))])
    assert len(m) == 1 and m.rows[0]["top1"] == pytest.approx(92)
    assert m.rows[0]["top1_std"] == pytest.approx(8 ** 0.5) and m.rows[0]["pareto"]


def test_training_compute_counts_the_sub_networks_each_mode_trains():
    model = create_model("resnet20_cifar", in_chans=1, width_range=(0.25, 1.0))

    def macs(w, r):
        return profile(model, w, r).macs

    base = copy.deepcopy(DEMO_RECIPE)
    base["model"]["width_range"] = [0.25, 1.0]
    base["train"].update({"epochs": 3, "num_subnets": 2, "resolutions": [28, 16]})
    full = macs(1.0, 28)

    def compute(**train):
        r = copy.deepcopy(base)
        r["train"].update(train)
        return training_compute(r, grid=4)

    # two sub-networks: the widest at 28 px and the narrowest (mutual: at a random resolution)
    assert compute(mode="usnet")["macs_per_image"] == pytest.approx(full + macs(0.25, 28))
    assert compute(mode="mutual")["macs_per_image"] == pytest.approx(full + (macs(0.25, 28) + macs(0.25, 16)) / 2)
    assert compute(mode="usnet_msaug")["macs_per_image"] == pytest.approx(
        (full + macs(0.25, 28) + macs(1.0, 16) + macs(0.25, 16)) / 2)
    single = compute(mode="single", width=0.5, resolution=16)
    assert single == {"passes": 3, "macs_per_image": macs(0.5, 16), "full_epochs": pytest.approx(
        3 * macs(0.5, 16) / full), "epochs": 3}
    assert compute(mode="single")["full_epochs"] == pytest.approx(3)  # the unit: an epoch of the full network
    four = compute(mode="mutual", num_subnets=4)
    assert four["passes"] == 12
    assert full + macs(0.25, 16) + 2 * macs(0.25, 16) < four["macs_per_image"] < full + macs(0.25, 28) + 2 * full


def test_parse_seeds():
    assert parse_seeds("3") == [3] and parse_seeds("0,1") == [0, 1]
    for bad in ("1,1", "a", "-1,2", "1,"):
        with pytest.raises(MutualNetError):
            parse_seeds(bad)


def _compare_argv(out, *extra):
    return ["compare", "--out", str(out), "--epochs", "1", "--train-images", "32", "--width-step", "0.5",
            "--calib-images", "32", "--val-images", "32", "--threads", "1", "--no-progress",
            "--set", "data.name=synthetic", "--set", "data.synthetic_length=64", "--set", "data.batch_size=16",
            "--set", "model.num_classes=4", "--set", "run.tensorboard=false", "--set", "optim.lr=0.1",
            "--set", "run.val_every=0", "--set", "data.holdout=16", *extra]


@pytest.mark.slow
def test_compare_runs_each_arm_for_every_seed_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    argv = _compare_argv(out, "--seeds", "0,1", "--arms", "mutualnet,usnet+,independent", "--singles", "0.5@16")
    assert main(argv) == 0
    for seed in (0, 1):
        cfg = load_checkpoint(out / f"seed{seed}" / "mutualnet" / "train" / "last.pt")["config"]
        assert cfg["run"]["seed"] == seed and cfg["data"]["train_subset"] == 32 and cfg["data"]["batch_size"] == 16
        assert cfg["train"]["epochs"] == 1
        plus = load_checkpoint(out / f"seed{seed}" / "usnet_plus" / "train" / "last.pt")
        assert plus["meta"]["mode"] == "usnet"  # the paper's US-Net+: MutualNet's range (stored once, in model_args)
        assert plus["model_args"]["width_range"] == [0.5, 1.0]
    summary = json.loads((out / "compare.json").read_text())
    assert summary["seeds"] == [0, 1]
    assert {r["resolution"] for r in summary["per_seed"]["1"]["US-Net+"]} == {28, 24, 20, 16}
    assert {(r["width"], r["resolution"]) for r in summary["per_seed"]["1"]["Independent"]} == {(0.5, 16)}
    top = summary["matched"][-1]
    assert top["MutualNet"]["n"] == 2 and top["MutualNet"]["mean"] == pytest.approx(
        sum(top["MutualNet"]["values"]) / 2)
    c = summary["compute"]
    assert c["Independent"]["passes"] == 1 and c["MutualNet"]["passes"] == 4
    assert c["US-Net+"]["full_epochs"] > c["MutualNet"]["full_epochs"] > c["Independent"]["full_epochs"]
    md = (out / "results.md").read_text()
    assert "| budget (MFLOPs) | MutualNet | US-Net+ | Independent |" in md and " ± " in md
    assert "| MutualNet | 1 | 4 |" in md
    assert (out / "compare.png").stat().st_size > 10_000
    first = json.loads((out / "wall_time.json").read_text())
    assert len(first) == 2 * 3 and summary["seconds"] == pytest.approx(sum(first.values()), abs=0.1)

    # a rerun trains nothing again, and the wall time adds the new (short) part to the earlier one
    before = (out / "seed0" / "mutualnet" / "train" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert "already finished" in capsys.readouterr().out
    assert (out / "seed0" / "mutualnet" / "train" / "last.pt").stat().st_mtime_ns == before
    second = json.loads((out / "wall_time.json").read_text())
    assert all(second[k] >= first[k] for k in first) and sum(second.values()) > sum(first.values())

    # an arm behind the others (seed 1 of US-Net+ unfinished): the plot's legend says how many seeds it has
    (out / "seed1" / "usnet_plus" / "search" / "calibrated.pt").rename(out / "parked.pt")
    import mutualnet.compare as compare
    seen = {}
    monkeypatch.setattr(compare, "plot_tables", lambda tables, labels, *a, **k: seen.setdefault("labels", labels))
    assert main([*argv, "--report-only"]) == 0
    assert seen["labels"] == ["MutualNet", "US-Net+ (1 seed)", "Independent"]


@pytest.mark.slow
def test_compare_min_cost_usnet_and_the_boost_at_equal_epochs_and_equal_compute(tmp_path):
    out = tmp_path / "cmp"
    assert main(_compare_argv(out, "--arms", "usnet,boost")) == 0
    ckpt = load_checkpoint(out / "seed0" / "usnet" / "train" / "last.pt")
    assert ckpt["meta"]["mode"] == "usnet" and ckpt["model_args"]["width_range"][0] < 0.5  # MutualNet's cheapest cost
    summary = json.loads((out / "compare.json").read_text())
    assert {r["resolution"] for r in summary["per_seed"]["0"]["US-Net"]} == {28}
    boost, c = summary["boost"], summary["compute"]
    epochs = boost["equal_compute_epochs"]
    assert epochs == round(c["Boost"]["full_epochs"]) > 1 and c["Boost"]["plain_equal_compute"]["epochs"] == epochs
    load = load_checkpoint(out / "seed0" / f"single_w1_r28_e{epochs}" / "train" / "last.pt")
    assert load["meta"]["mode"] == "single" and load["config"]["train"]["epochs"] == epochs
    assert {"boosted_top1", "plain_top1", "plain_equal_compute_top1"} <= set(boost)
    assert f"trained alone for {epochs} epochs" in (out / "results.md").read_text()


def test_compare_cli_rejects_bad_flags_in_one_line(tmp_path, capsys):
    for argv, msg in ((["--seeds", "1,1"], "distinct"), (["--arms", "mutualnet,foo"], "unknown arm 'foo'"),
                      (["--train-images", "0"], "--train-images"), (["--set", "data.nope=1"], "data.nope")):
        try:
            code = main(["compare", "--out", str(tmp_path / "x"), *argv])
        except SystemExit as e:
            code = e.code
        assert code != 0
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_compare_help_states_the_demo_default_epochs(capsys):
    try:
        main(["compare", "--help"])
    except SystemExit:
        pass
    assert f"(default: the demo's, {DEMO_RECIPE['train']['epochs']})" in " ".join(capsys.readouterr().out.split())


def test_default_budgets_include_the_cheapest_and_the_full_configuration():
    from mutualnet.compare import _default_budgets

    b = _default_budgets([2.541888, 10.0, 31.021952])
    assert b[0] >= 2.541888 and b[-1] >= 31.021952 and len(b) == 8 and b == sorted(b)


def _documented_compare_commands() -> list[list[str]]:
    """The ``mutualnet compare`` commands of docs/results.md (fenced bash blocks, continuation lines joined)."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "results.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            if "mutualnet compare" in line and not line.lstrip().startswith("#"):
                argv = shlex.split(line.split("#")[0])
                found.append(argv[argv.index("compare"):])
    assert found, "docs/results.md shows no mutualnet compare command"
    return found


def test_the_documented_comparisons_have_the_promised_size_and_run_shrunk(tmp_path):
    """docs/results.md's commands parse; the long comparison's processes together cover >= 2 seeds x 8 epochs of
    the four arms; every command runs (shrunk), the report-only one on what the others left."""
    from mutualnet.cli import build_parser

    commands = _documented_compare_commands()
    parsed = [build_parser().parse_args(argv) for argv in commands]
    long_run = [a for a in parsed if a.out == "/var/tmp/cmp19" and not a.report_only]
    assert len({s for a in long_run for s in a.seeds}) >= 2 and all(a.epochs >= 8 for a in long_run)
    assert all({"mutualnet", "usnet", "usnet+", "independent"} <= set(a.arms or ARMS) for a in long_run)
    assert any(a.report_only and a.out == "/var/tmp/cmp19" for a in parsed)
    out = tmp_path / "cmp"
    for argv, args in zip(commands, parsed):  # the same commands, shrunk: later flags win, --set adds to theirs
        extra = [] if args.report_only else ["--seeds", "0", "--arms", "mutualnet"]
        assert main([*argv, "--out", str(out), *extra, "--epochs", "1", *_compare_argv(out)[3:]]) == 0
    assert json.loads((out / "compare.json").read_text())["recipe"]["data"]["train_subset"] == 32


@pytest.mark.slow
def test_gpu_comparison_script_runs_every_seed_and_arm_in_parallel_and_tabulates_them(tmp_path):
    """benchmarks/gpu_compare.sh (issue 19's comparison at a larger scale, for a lent GPU) runs on CPU shrunk:
    one process per seed x arm, then a report-only pass over all of them."""
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "gpu_compare.sh"
    extra = ("--train-images 32 --width-step 0.5 --calib-images 16 --val-images 16 --singles 0.5@16 "
             "--set data.name=synthetic --set data.synthetic_length=64 --set model.num_classes=4 "
             "--set data.holdout=16 --set data.batch_size=16 --set run.val_every=0 --set run.tensorboard=false "
             "--set run.calib_batches=1")
    env = {**os.environ, "PYTHON": sys.executable, "EPOCHS": "1", "SEEDS": "0 1", "ARMS": "mutualnet independent",
           "EXTRA": extra, "OMP_NUM_THREADS": "1", "BUDGET_S": "1200"}
    out = subprocess.run(["bash", str(script), str(tmp_path / "data"), str(tmp_path / "gpu")], env=env,
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    logs = "".join(p.read_text()[-500:] for p in sorted((tmp_path / "gpu").glob("seed*.log")))
    assert "runs stopped by the budget or failed: 0 of 4" in out.stdout, logs
    summary = json.loads((tmp_path / "gpu" / "compare.json").read_text())
    assert summary["seeds_per_arm"] == {"MutualNet": [0, 1], "Independent": [0, 1]}
    assert summary["selected_on"] == "holdout" and summary["recipe"]["data"]["train_subset"] == 32
    assert (tmp_path / "gpu" / "seed1" / "single_w0.5_r16" / "search" / "query_table.json").is_file()
