"""Step parity: one iteration of our ``train_step`` against a transcription of the original MutualNet loop.

The reference below is written from the original code's ``train()`` (taoyang1122/MutualNet, ``train.py``) and
its ``InputList`` transform (``utils/transforms.py``), not from ours: every resolution is made up front with
``F.interpolate(bilinear, align_corners=True)``; the widest network runs on ``input_list[0]`` against the labels;
the narrowest and two uniform random widths, sorted widest first, each run on a random entry of the list and
are distilled with ``nn.KLDivLoss(reduction='batchmean')`` from the widest's detached softmax; then one
optimizer step. Both sides start from the same weights and inputs and take one plain SGD step.

The network runs in float64 (our step computes its losses in float32, as it does under autocast), so the
two sides differ by ~1e-7 relative, well below the 1e-5 tolerance, while a real difference (the antialiased
resize against the original's: ~5e-2) is far above it.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mutualnet import create_model
from mutualnet.train import SubNet, train_step

LR = 0.5
WIDTHS = (0.25, 0.5)  # a MobileNet v1 slice, so 224 px runs in about a second
RTOL = 1e-5


def _input_list(img, resolution_list):  # the original InputList, applied to a batch
    return [F.interpolate(img, (r, r), mode="bilinear", align_corners=True) for r in resolution_list]


def _original_step(model, img, target, resolution_list, sampled_widths, res_idx):
    """One iteration of the original loop (train.py ``train``), with its random draws passed in."""
    optimizer = torch.optim.SGD(model.parameters(), LR)
    criterion = nn.CrossEntropyLoss()
    input_list = _input_list(img, resolution_list)
    optimizer.zero_grad()
    model.set_width(WIDTHS[1])
    max_output = model(input_list[0])
    criterion(max_output, target).backward()
    max_output_detach = max_output.detach()
    width_mult_list = [WIDTHS[0]] + list(sampled_widths)
    for width_mult, i in sorted(zip(width_mult_list, res_idx), reverse=True):
        model.set_width(width_mult)
        output = model(input_list[i])
        loss = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(output, dim=1), F.softmax(max_output_detach, dim=1))
        loss.backward()
    optimizer.step()


def _our_step(model, img, target, resolution_list, sampled_widths, res_idx, resize):
    optimizer = torch.optim.SGD(model.parameters(), LR)
    plan = [SubNet(WIDTHS[1], resolution_list[0], "labels")]
    plan += [SubNet(float(w), resolution_list[i], "teacher") for w, i in zip([WIDTHS[0], *sampled_widths], res_idx)]
    optimizer.zero_grad()
    train_step(model, img, target, plan, resize=resize)
    optimizer.step()


@torch.no_grad()
def _max_rel_diff(a: nn.Module, b: nn.Module) -> float:
    return max(float((p - q).norm() / q.norm()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.fixture(scope="module")
def start():
    torch.manual_seed(0)
    model = create_model("mobilenet_v1", num_classes=10, width_range=WIDTHS).double().train()
    img = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    target = torch.tensor([3, 7])
    rng = np.random.default_rng(0)
    sampled = rng.uniform(*WIDTHS, 2)
    return model, img, target, sampled


def _run_both(start, resolution_list, res_idx, resize):
    model, img, target, sampled = start
    ours, ref = copy.deepcopy(model), copy.deepcopy(model)
    _our_step(ours, img, target, resolution_list, sampled, res_idx, resize)
    _original_step(ref, img, target, resolution_list, sampled, res_idx)
    assert _max_rel_diff(ref, model) > 1e-3  # the step did change the weights
    return _max_rel_diff(ours, ref)


def test_every_subnetwork_at_224_matches_the_original_step(start):
    # at the top resolution nothing is resized, so the default mode (antialias) is the original step too
    assert _run_both(start, [224], [0, 0, 0], "antialias") < RTOL


def test_lower_resolutions_match_the_original_step_with_official_resize(start):
    res_list, res_idx = [224, 192, 160, 128], [3, 1, 2]  # 128, 192, 160 px (the narrowest gets 128)
    assert _run_both(start, res_list, res_idx, "official") < RTOL
    # and the comparison can tell resizes apart: antialiased inputs give a visibly different step
    assert _run_both(start, res_list, res_idx, "antialias") > 100 * RTOL
