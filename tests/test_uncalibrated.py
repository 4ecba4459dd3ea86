"""One policy for configurations without calibrated BN statistics: refused below the top width, everywhere."""

import pytest
import torch

import mutualnet as mn
from deploy_helpers import table_rows, trained_like
from mutualnet.calibrate import calibrate
from mutualnet.checkpoint import save_checkpoint
from mutualnet.cli import main
from mutualnet.deploy import AdaptiveNet
from mutualnet.search import QueryTable


def test_library_eval_refuses_an_uncalibrated_width_and_says_how_to_calibrate():
    model = trained_like("resnet20_cifar", width_range=(0.25, 1.0))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), mn.use_config(model, 0.5, 32):
        with pytest.raises(mn.MutualNetError, match=r"width 0.5 at 32 px.*`mutualnet calibrate --checkpoint CKPT "
                                                    r"--width 0.5 --resolution 32"):
            model(x)
        with mn.allow_uncalibrated(model):  # knowingly: the widest's statistics, sliced
            sliced = model(x)
        with pytest.raises(mn.MutualNetError):  # the permission ends with the block
            model(x)
        calibrate(model, torch.randn(16, 3, 32, 32) * 3 - 1, 0.5, 32)
        calibrated = model(x)
        assert (calibrated - sliced).abs().max() > 1e-3  # the statistics it would have used silently are wrong
    with torch.no_grad(), mn.use_config(model, 0.5, 24):
        with pytest.raises(mn.MutualNetError, match="width 0.5 at 24 px"):  # per resolution, too
            model(torch.randn(2, 3, 24, 24))
    with torch.no_grad(), mn.use_width(model, 0.5):  # a width without a resolution: the error names use_config
        with pytest.raises(mn.MutualNetError, match=r"no resolution set.*mutualnet.use_config\(model, width, "):
            model(x)
    with torch.no_grad():
        for res in (32, 20):  # the top width runs on the running statistics: they are its own
            assert model(torch.randn(2, 3, res, res)).shape == (2, 10)
    model.train()
    with mn.use_width(model, 0.5):
        model(x).sum().backward()  # training mode normalises with batch statistics: unaffected


def test_profiling_needs_no_statistics():
    model = trained_like("resnet20_cifar", width_range=(0.25, 1.0))
    assert mn.profile(model, 0.5, 24).macs > 0
    assert mn.measure_latency(model, 0.5, 24, repeats=1, warmup=0).median_ms > 0
    with pytest.raises(mn.MutualNetError):
        with torch.no_grad(), mn.use_width(model, 0.5):
            model.eval()(torch.randn(1, 3, 24, 24))  # the profilers' permission did not leak


def test_cli_and_adaptive_net_follow_the_same_policy(tmp_path, capsys):
    model = trained_like("resnet20_cifar", width_range=(0.25, 1.0))
    calibrate(model, torch.randn(16, 3, 32, 32), 0.25, 32)
    path = tmp_path / "m.pt"
    table = QueryTable(rows=table_rows(model, [(0.25, 32), (0.5, 32)]))  # 0.5 was never calibrated
    save_checkpoint(path, model, {"resolutions": [32]}, query_table=table.to_dict())

    assert main(["export", "--checkpoint", str(path), "--width", "0.5", "--resolution", "32",
                 "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "mutualnet calibrate" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()
    assert main(["export", "--checkpoint", str(path), "--width", "0.25", "--resolution", "32",
                 "--out", str(tmp_path / "y.pt")]) == 0

    net = AdaptiveNet.from_checkpoint(path)
    net.set_config(0.25, 32)
    assert net.predict(torch.rand(1, 3, 32, 32))[0][0].confidence > 0
    net.set_config(0.5, 32)
    with pytest.raises(mn.MutualNetError, match="mutualnet calibrate"):
        net.predict(torch.rand(1, 3, 32, 32))
