"""Optimizer parameter groups and the per-iteration cosine schedule with warm-up."""

import math

import pytest
import torch
from torch import nn

from mutualnet import create_model
from mutualnet.layers import SlimmableBatchNorm2d, SlimmableConv2d
from mutualnet.train import build_optimizer, build_scheduler, param_groups
from mutualnet.train.optim import cosine_lambda


def test_weight_decay_only_on_conv_and_linear_weights():
    model = create_model("mobilenet_v1", width_range=(0.25, 1.0), num_classes=10)
    decay, rest = param_groups(model, 4e-5)
    assert decay["weight_decay"] == 4e-5 and rest["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    for m in model.modules():
        if isinstance(m, SlimmableConv2d):
            assert (id(m.weight) in decayed) == (not m.depthwise)
        elif isinstance(m, nn.Linear):
            assert id(m.weight) in decayed and (m.bias is None or id(m.bias) not in decayed)
        elif isinstance(m, SlimmableBatchNorm2d):
            assert id(m.weight) not in decayed and id(m.bias) not in decayed
    assert any(isinstance(m, SlimmableConv2d) and m.depthwise for m in model.modules())
    n_all = sum(1 for _ in model.parameters())
    assert len(decay["params"]) + len(rest["params"]) == n_all
    (everything,) = param_groups(model, 1e-4, decay_all=True)
    assert len(everything["params"]) == n_all and everything["weight_decay"] == 1e-4


def test_sgd_is_nesterov():
    opt = build_optimizer(create_model("resnet20_cifar"), 0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.9 and g["lr"] == 0.1 for g in opt.param_groups)


def test_cosine_with_warmup():
    f = cosine_lambda(100, warmup_steps=10, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(100) == pytest.approx(0.1)
    after = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    g = cosine_lambda(8)
    assert [round(g(s), 6) for s in (0, 4, 8)] == [1.0, 0.5, 0.0]
    assert g(2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_scheduler_continues_after_reload():
    def make():
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
        return opt, build_scheduler(opt, total_steps=20, warmup_steps=3, min_lr=0.01)

    opt, sched = make()
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    opt2, sched2 = make()
    for _ in range(7):
        opt2.step()
        sched2.step()
    opt3, sched3 = make()
    opt3.load_state_dict(opt2.state_dict())
    sched3.load_state_dict(sched2.state_dict())
    assert opt3.param_groups[0]["lr"] == pytest.approx(lrs[7])  # continues, does not restart
    opt3.step()
    sched3.step()
    assert opt3.param_groups[0]["lr"] == pytest.approx(lrs[8])
    assert lrs[-1] > 0.01 - 1e-9 and lrs[0] == pytest.approx(0.5 / 3)
