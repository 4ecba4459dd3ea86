import json

import pytest
import torch

import mutualnet as mn
from mutualnet.cli import main
from mutualnet.layers import WidthRange


def test_profile_restores_width_and_counts_active_params():
    model = mn.create_model("resnet20_cifar")
    model.set_width(0.5)
    p = mn.profile(model, 0.25, 32)
    assert model.width == 0.5
    assert p.params < sum(q.numel() for q in model.parameters())
    assert p.macs < mn.profile(model, 1.0, 32).macs


def test_latency_is_measured():
    model = mn.create_model("resnet20_cifar")
    lat = mn.measure_latency(model, 0.5, 32, repeats=3, warmup=1)
    assert lat.median_ms > 0 and lat.batch_size == 1 and lat.threads >= 1


def test_width_grid():
    assert WidthRange(0.25, 1.0).grid(0.05) == [round(0.25 + 0.05 * i, 4) for i in range(16)]
    assert WidthRange(0.9, 1.0).grid(0.05) == [0.9, 0.95, 1.0]
    assert WidthRange(0.7, 1.0).grid(0.2) == [0.7, 0.9, 1.0]


def test_cli_profile_json_and_grid(capsys):
    assert main(["profile", "--model", "mobilenet_v1", "--width", "0.25", "--resolution", "128", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert abs(out["macs"] / 1e6 - 13.6) < 0.136 and out["params"] > 0
    assert main(["profile", "--model", "resnet20_cifar", "--grid", "--resolutions", "32,24", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 * 16
    assert main(["profile", "--model", "resnet20_cifar", "--latency", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "latency" in text and "1 threads" in text


@pytest.mark.parametrize("argv,msg", [
    (["profile", "--model", "nope"], "unknown model"),
    (["profile", "--model", "mobilenet_v2", "--width", "0.5"], "outside this model's trained range"),
    (["profile", "--model", "mobilenet_v2", "--resolution", "16"], "too small"),
    (["profile", "--model", "resnet20_cifar", "--latency", "--device", "cuda:0"] if not torch.cuda.is_available()
     else ["profile", "--model", "nope"], "cuda" if not torch.cuda.is_available() else "unknown model"),
])
def test_cli_bad_input_is_one_line(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1


def test_cli_models(capsys):
    assert main(["models", "mobilenet*", "--json"]) == 0
    names = [m["name"] for m in json.loads(capsys.readouterr().out)]
    assert names == mn.list_models("mobilenet*")
