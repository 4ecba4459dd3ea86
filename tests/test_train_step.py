"""The sandwich step: which sub-networks run, gradient accumulation, the detached teacher, peak memory."""

import copy
import weakref

import pytest
import torch
import torch.nn.functional as F

from mutualnet import create_model
from mutualnet.data import resize_batch
from mutualnet.train import SubNet, distill_loss, sample_subnets, train_step

RES = [32, 24, 16]


def _plans(mode, n=4, draws=40, wr=(0.25, 1.0)):
    g = torch.Generator().manual_seed(0)
    return [sample_subnets(mode, wr, RES, n, g) for _ in range(draws)]


def test_mutual_sandwich_rule():
    plans = _plans("mutual", n=5)
    for plan in plans:
        assert len(plan) == 5
        assert plan[0] == SubNet(1.0, 32, "labels")  # the widest, at the highest resolution, on the labels
        assert plan[1].width == 0.25  # the narrowest
        assert all(0.25 <= s.width <= 1.0 and s.target == "teacher" for s in plan[1:])
    # every other sub-network draws its own resolution, and the random widths vary
    assert {s.resolution for p in plans for s in p[1:]} == set(RES)
    assert any(len({s.resolution for s in p[1:]}) > 1 for p in plans)
    assert len({round(s.width, 6) for p in plans for s in p[2:]}) > 30


def test_baseline_modes():
    for plan in _plans("usnet"):
        assert [s.resolution for s in plan] == [32] * 4 and [s.target for s in plan[1:]] == ["teacher"] * 3
    msaug_us = _plans("usnet_msaug")
    assert all(len({s.resolution for s in p}) == 1 for p in msaug_us)  # one resolution shared per iteration
    assert {p[0].resolution for p in msaug_us} == set(RES)
    assert all(s.target == "labels" for p in _plans("mutual_gt") for s in p)
    msaug = _plans("msaug", wr=(1.0, 1.0))
    assert all(len(p) == 1 and p[0].width == 1.0 for p in msaug) and {p[0].resolution for p in msaug} == set(RES)
    assert _plans("single", wr=(0.5, 0.5), draws=1)[0] == [SubNet(0.5, 32, "labels")]
    with pytest.raises(ValueError):
        sample_subnets("nope", (0.25, 1.0), RES, 4, torch.Generator())


def test_same_seed_same_plan():  # every process of a distributed run must draw the same sub-networks
    assert _plans("mutual") == _plans("mutual")


def test_resize_on_device():
    x = torch.randn(2, 3, 32, 32)
    assert resize_batch(x, 32) is x
    y = resize_batch(x, 20)
    assert y.shape == (2, 3, 20, 20) and y.device == x.device
    torch.testing.assert_close(resize_batch(torch.ones(1, 1, 32, 32), 16), torch.ones(1, 1, 16, 16))


def test_distill_loss_is_kl_to_the_teacher():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    kl = (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum(1).mean()
    torch.testing.assert_close(distill_loss(s, t), kl)
    assert distill_loss(t, t).abs() < 1e-6
    soft = (F.softmax(t / 4, 1) * (F.log_softmax(t / 4, 1) - F.log_softmax(s / 4, 1))).sum(1).mean() * 16
    torch.testing.assert_close(distill_loss(s, t, temperature=4.0), soft)


def test_step_accumulates_gradients_with_a_detached_teacher():
    model = create_model("resnet20_cifar", width_range=(0.25, 1.0))
    ref = copy.deepcopy(model)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(10, (4,))
    plan = [SubNet(1.0, 16, "labels"), SubNet(0.25, 8, "teacher"), SubNet(0.6, 12, "teacher"),
            SubNet(0.8, 16, "labels")]
    losses = train_step(model, x, y, plan, label_smoothing=0.1)

    # reference: the paper's total loss, one backward; the teacher is the widest's prediction, detached
    ref.set_width(1.0)
    teacher = ref(x)
    total = F.cross_entropy(teacher, y, label_smoothing=0.1)
    expected = [total.detach()]
    for net in plan[1:]:
        ref.set_width(net.width)
        out = ref(F.interpolate(x, size=net.resolution, mode="bilinear", antialias=True))
        loss = distill_loss(out, teacher.detach()) if net.target == "teacher" else \
            F.cross_entropy(out, y, label_smoothing=0.1)
        expected.append(loss.detach())
        total = total + loss
    total.backward()
    torch.testing.assert_close(losses, torch.stack(expected))
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


class _Box:
    def __init__(self, t):
        self.t = t


class _SavedBytes:
    """Peak bytes of tensors autograd holds for backward (a memory measure that works on CPU)."""

    def __init__(self):
        self.live = self.peak = 0

    def _free(self, n):
        self.live -= n

    def pack(self, t):
        box, n = _Box(t), t.numel() * t.element_size()
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(box, self._free, n)
        return box

    def unpack(self, box):
        return box.t


def _peak(model, x, y, plan):
    tracker = _SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(tracker.pack, tracker.unpack):
        train_step(model, x, y, plan)
    model.zero_grad(set_to_none=True)
    return tracker.peak


def test_peak_memory_stays_near_one_full_network_step():
    model = create_model("resnet20_cifar", width_range=(0.25, 1.0))
    x, y = torch.randn(8, 3, 16, 16), torch.randint(10, (8,))
    full = _peak(model, x, y, [SubNet(1.0, 16, "labels")])
    plan = [SubNet(1.0, 16, "labels"), SubNet(0.25, 16, "teacher"), SubNet(1.0, 16, "teacher"),
            SubNet(0.9, 16, "teacher")]
    sandwich = _peak(model, x, y, plan)
    assert full > 0
    assert sandwich <= 1.15 * full, (sandwich, full)  # each graph is freed before the next forward
