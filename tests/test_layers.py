import pytest
import torch
from torch import nn

from mutualnet import MutualNetError
from mutualnet.layers import (
    SlimmableBatchNorm2d,
    SlimmableConv2d,
    SlimmableLinear,
    allow_uncalibrated,
    bind_state,
    config_key,
    make_divisible,
    materialize,
    set_width,
    slim_channels,
    use_width,
)


def test_make_divisible_rounds_to_nearest_and_never_below_90_percent():
    assert make_divisible(32) == 32
    assert make_divisible(22.4) == 24
    assert make_divisible(44.8) == 48
    assert make_divisible(3) == 8  # never below the divisor
    assert make_divisible(20) == 24  # int(24)//8*8 = 24
    for v in [9.0, 17.5, 33.3, 100.0, 1000.7]:
        assert make_divisible(v) >= 0.9 * v and make_divisible(v) % 8 == 0


def test_slim_channels_keeps_ratio_multiples():
    assert slim_channels(96, 0.35, 6) == make_divisible(16 * 0.35) * 6
    assert slim_channels(256, 0.9, 4) == make_divisible(64 * 0.9) * 4
    for w in [0.25, 0.5, 0.73, 1.0, 1.5]:
        assert slim_channels(1024, w, 4) % 4 == 0


class _Net(nn.Module):
    def __init__(self, mw=1.0):
        super().__init__()
        self.conv = SlimmableConv2d(3, 32, 3, 1, 1, max_width=mw, slim_in=False)
        self.bn = SlimmableBatchNorm2d(32, max_width=mw)
        self.dw = SlimmableConv2d(32, 32, 3, 1, 1, depthwise=True, max_width=mw)
        self.grouped = SlimmableConv2d(32, 64, 1, groups=2, max_width=mw)
        self.fc = SlimmableLinear(64, 5, max_width=mw)
        self.width_range = (0.25, mw)
        bind_state(self)

    def forward(self, x):
        x = self.grouped(self.dw(torch.relu(self.bn(self.conv(x)))))
        return self.fc(x.mean((2, 3)))


def test_layers_use_leading_slices_and_match_dense():
    net = _Net().eval()
    allow_uncalibrated(net)  # slicing, not accuracy: the fresh running statistics will do
    x = torch.randn(2, 3, 8, 8)
    set_width(net, 0.5)
    y = net(x)
    dense = materialize(net)
    assert isinstance(dense.conv, nn.Conv2d) and not isinstance(dense.conv, SlimmableConv2d)
    assert dense.conv.out_channels == 16 and dense.dw.groups == 16 and dense.grouped.out_channels == 32
    torch.testing.assert_close(dense(x), y)
    # poisoning everything outside the active slice must not change the output
    with torch.no_grad():
        net.conv.weight[16:] = float("nan")
        net.grouped.weight[32:] = float("nan")
        net.fc.weight[:, 32:] = float("nan")
    torch.testing.assert_close(net(x), y)


def test_width_switching_and_range_errors():
    net = _Net()
    with use_width(net, 0.25):
        assert net.conv.active_channels() == (3, 8)
    assert net.conv.width == 1.0
    with pytest.raises(MutualNetError, match=r"outside .* range \[0.25, 1\]"):
        set_width(net, 1.5)
    with pytest.raises(MutualNetError, match="expected 32 input channels"):
        net.dw(torch.randn(1, 31, 4, 4))


def test_bn_trains_with_batch_stats_and_tracks_running_stats_only_at_full_width():
    bn = SlimmableBatchNorm2d(16).train()
    x = torch.randn(4, 8, 5, 5) * 3 + 2
    set_width(bn, 0.5)
    y = bn(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)
    assert torch.all(bn.running_mean == 0) and int(bn.num_batches_tracked) == 0
    set_width(bn, 1.0)
    bn(torch.randn(4, 16, 5, 5) + 1)
    assert int(bn.num_batches_tracked) == 1 and bn.running_mean.abs().sum() > 0


def test_bn_calibration_is_exact_and_survives_state_dict():
    bn = SlimmableBatchNorm2d(32, max_width=1.0)
    bn.slim_state.resolution = 7
    set_width(bn, 0.37)
    c = bn.active_channels()
    batches = [torch.randn(n, c, 7, 7) * (i + 1) + i for i, n in enumerate([3, 5, 2])]
    bn.begin_calibration()
    with torch.no_grad():
        for b in batches:
            bn(b)
    key = bn.end_calibration()
    assert key == config_key(0.37, 7)
    allx = torch.cat(batches).transpose(0, 1).reshape(c, -1).double()
    mean, var = bn.calibrated[key]
    torch.testing.assert_close(mean.double(), allx.mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var.double(), allx.var(1), rtol=1e-5, atol=1e-6)
    # eval uses the calibrated statistics of the active configuration
    bn.eval()
    x = batches[0]
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + bn.eps)
    torch.testing.assert_close(bn(x), expected, rtol=1e-4, atol=1e-4)
    # statistics travel in the state dict, for any width
    sd = bn.state_dict()
    assert any(k.startswith("calib_stats.") for k in sd)
    bn2 = SlimmableBatchNorm2d(32)
    bn2.load_state_dict(sd)
    torch.testing.assert_close(bn2.calibrated[key][0], mean)


def test_module_with_calibrated_bn_loads_strictly_into_fresh_model():
    net = _Net()
    set_width(net, 0.6)
    net.slim_state.resolution = 8
    net.bn.begin_calibration()
    net(torch.randn(2, 3, 8, 8))
    net.bn.end_calibration()
    fresh = _Net()
    fresh.load_state_dict(net.state_dict(), strict=True)
    assert set(fresh.bn.calibrated) == set(net.bn.calibrated)


def test_running_stats_only_updated_at_top_width_even_when_rounding_gives_all_channels():
    bn = SlimmableBatchNorm2d(16).train()
    set_width(bn, 0.9)  # 14.4 channels round to all 16
    assert bn.active_channels() == 16
    bn(torch.randn(4, 16, 3, 3) + 5)
    assert int(bn.num_batches_tracked) == 0 and torch.all(bn.running_mean == 0)
    set_width(bn, 1.0)
    bn(torch.randn(4, 16, 3, 3) + 5)
    assert int(bn.num_batches_tracked) == 1 and bn.running_mean.mean() > 0.3

