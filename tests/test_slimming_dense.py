"""Per-pixel and multi-output networks: choosing the trained output, dense mutual learning, export."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mutualnet as mn
from mutualnet.deploy.export import export_subnet, save_exported
from mutualnet.train.step import SubNet, distill_loss, train_step


class _TinySeg(nn.Module):
    """An encoder-decoder with an auxiliary head, returning a dict as torchvision's segmentation models do."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.up = nn.ConvTranspose2d(32, 16, 2, 2)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, classes, 1)
        self.aux = nn.Conv2d(32, classes, 1)

    def forward(self, x):
        f = self.enc(x)
        out = self.head(torch.relu(self.bn(self.up(f))))
        size = x.shape[-2:]
        return {"out": F.interpolate(out, size=size, mode="bilinear"),
                "aux": F.interpolate(self.aux(f), size=size, mode="bilinear")}


def _data(n=8, size=32):
    """Synthetic segmentation: class 1 inside a bright square, 2 inside a dark one, 0 elsewhere."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, size, size, generator=g) * 0.1, torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        a, b = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
        c = 1 + i % 2
        x[i, :, a:a + size // 2, b:b + size // 2] += 1.0 if c == 1 else -1.0
        y[i, a:a + size // 2, b:b + size // 2] = c
    return x, y


def test_several_outputs_are_refused_in_one_line_until_one_is_chosen():
    x, y = _data()
    model = mn.slim(_TinySeg(), (0.5, 1.0), input_size=32)
    with pytest.raises(mn.MutualNetError, match=r"the model returns a dict of outputs 'out', 'aux'; the sandwich "
                                                r"step trains one output tensor: choose it when converting, "
                                                r"mutualnet.slim\(model, output='out'\)") as e:
        train_step(model.train(), x, y, [SubNet(1.0, 32, "labels")])
    assert "\n" not in str(e.value)
    with pytest.raises(mn.MutualNetError, match=r"output='main' is not one of _TinySeg's output tensors \('out', "
                                                r"'aux'\)"):
        mn.slim(_TinySeg(), (0.5, 1.0), input_size=32, output="main")


def test_dense_mutual_learning_trains_a_segmentation_network_and_exports_it(tmp_path):
    torch.manual_seed(0)
    net = _TinySeg().eval()
    reference = copy.deepcopy(net)
    model = mn.slim(net, (0.25, 1.0), input_size=32, output="out")
    x, y = _data()
    with torch.no_grad():
        assert torch.equal(model(x), reference(x)["out"])  # the chosen output, exactly the original's
    # the teacher's 32 px map and a 24 px student: resized to the student, averaged per pixel (not summed)
    student, teacher = torch.randn(2, 3, 24, 24), torch.randn(2, 3, 32, 32)
    t24 = F.interpolate(teacher, size=(24, 24), mode="bilinear")
    per_pixel = F.kl_div(F.log_softmax(student, 1), F.log_softmax(t24, 1), reduction="none", log_target=True).sum(1)
    torch.testing.assert_close(distill_loss(student, teacher), per_pixel.mean())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    subnets = [SubNet(1.0, 32, "labels"), SubNet(0.25, 24, "teacher"), SubNet(0.5, 16, "teacher")]
    model.train()
    first = None
    for _ in range(12):
        opt.zero_grad()
        losses = train_step(model, x, y, subnets)  # per-pixel labels resized to each student's map
        opt.step()
        first = losses if first is None else first
        assert torch.isfinite(losses).all() and losses.max() < 10  # distillation is a per-pixel mean
    assert losses[0] < first[0] * 0.7
    net_, check = export_subnet(model, 0.5, 32, allow_uncalibrated=True)
    assert net_(x).shape == (8, 3, 32, 32)
    save_exported(net_, tmp_path / "seg.onnx", "onnx")
