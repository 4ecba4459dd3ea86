import copy
import json

import pytest

from mutualnet.compare import matched_budgets, run_compare, usnet_lower_width
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


@pytest.mark.slow
def test_compare_runs_every_arm_end_to_end(tmp_path):
    r = copy.deepcopy(DEMO_RECIPE)
    r["data"] = {"name": "synthetic", "batch_size": 32, "workers": 0, "synthetic_length": 64}
    r["model"]["num_classes"] = 4
    r["model"]["width_range"] = [0.25, 1.0]
    r["run"].update({"tensorboard": False})
    r["optim"]["lr"] = 0.1
    res = run_compare(tmp_path / "cmp", recipe=r, epochs=1, singles=[(1.0, 28), (0.25, 16)], width_step=0.25,
                      calib_images=32, val_images=32, threads=1, progress=False)
    assert set(res.tables) == {"MutualNet", "US-Net", "US-Net+", "Independent"}
    assert {x["resolution"] for x in res.tables["US-Net"].rows} == {28}
    assert {x["resolution"] for x in res.tables["US-Net+"].rows} == {28, 24, 20, 16}
    assert len(res.tables["Independent"]) == 2
    assert set(res.boost) == {"boosted_top1", "plain_top1", "mflops"}
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert summary["usnet_width_range"][0] == res.usnet_width_lo
    md = (tmp_path / "cmp" / "results.md").read_text()
    assert "| budget (MFLOPs) | MutualNet | US-Net | US-Net+ | Independent |" in md and "boost" in md
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000


def test_default_budgets_include_the_cheapest_and_the_full_configuration():
    from mutualnet.compare import _default_budgets

    b = _default_budgets([2.541888, 10.0, 31.021952])
    assert b[0] >= 2.541888 and b[-1] >= 31.021952 and len(b) == 8 and b == sorted(b)
