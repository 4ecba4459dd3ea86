"""Training options from the method's lineage (issue 19): zero-initialised residual scales (BigNAS), dropout only in
the widest sub-network (BigNAS), AlphaNet's alpha-divergence and gradient clipping, and the number of sub-networks
per step."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml

from conftest import read_metrics
from mutualnet import MutualNetError
from mutualnet.checkpoint import load_checkpoint
from mutualnet.cli import main
from mutualnet.layers import zero_init_residual
from mutualnet.models import create_model
from mutualnet.models.mobilenet_v2 import InvertedResidual
from mutualnet.models.resnet import BasicBlock, Bottleneck, ResNet
from mutualnet.models.wide_resnet import PreActBlock
from mutualnet.train import SubNet, alpha_divergence, distill_loss, load_config, resolve, train_step


# -- alpha-divergence -------------------------------------------------------------------------------------
def test_alpha_divergence_matches_a_hand_computed_value():
    # student q, teacher p, as log-probabilities (log-softmax of log-probabilities is themselves)
    q = torch.tensor([[0.8, 0.2], [0.5, 0.5]]).log()
    p = torch.tensor([[0.5, 0.5], [0.8, 0.2]]).log()
    # row 1: D_1 = KL(p || q) = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2) = 0.5 ln 1.5625 beats D_-1 = (sum q^2/p - 1)/2 = 0.18
    # row 2: D_-1 = (0.25/0.8 + 0.25/0.2 - 1)/2 = 0.28125 beats KL = 0.8 ln 1.6 + 0.2 ln 0.4 = 0.19274
    expected = (0.5 * math.log(1.5625) + 0.28125) / 2
    assert alpha_divergence(q, p, -1.0, 1.0, clip=5.0).item() == pytest.approx(expected, rel=1e-6)
    assert alpha_divergence(q, p, 1.0, 1.0).item() == pytest.approx((0.5 * math.log(1.5625) + 0.19274) / 2,
                                                                    rel=1e-4)


def _grad(fn, s):
    s = s.detach().clone().requires_grad_(True)
    value = fn(s)
    value.backward()
    return value.detach(), s.grad


def test_alpha_divergence_reduces_to_kl_at_alpha_one_and_to_reverse_kl_at_zero():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10) * 3
    for temp in (1.0, 2.0):  # value and gradient are the paper's KL, softened alike
        got, got_grad = _grad(lambda x, temp=temp: alpha_divergence(x, t, 1.0, 1.0, clip=5.0, temperature=temp), s)
        ref, ref_grad = _grad(lambda x, temp=temp: distill_loss(x, t, temp), s)
        torch.testing.assert_close(got, ref)
        torch.testing.assert_close(got_grad, ref_grad)

    def reverse_kl(x):
        lq, lp = F.log_softmax(x, 1), F.log_softmax(t, 1)
        return (lq.exp() * (lq - lp)).sum(1).mean()

    got, got_grad = _grad(lambda x: alpha_divergence(x, t, 0.0, 0.0, clip=1e6), s)
    ref, ref_grad = _grad(reverse_kl, s)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-4, atol=1e-6)


def _d_alpha(x, t, alpha):
    lq, lp = F.log_softmax(x, 1), F.log_softmax(t, 1)
    return (lq.exp() * ((alpha * (lp - lq)).exp() - 1)).sum(1) / (alpha * (alpha - 1))


def test_alpha_divergence_follows_the_worse_side_and_clips_its_gradient():
    torch.manual_seed(1)
    s, t = torch.randn(8, 5) * 2, torch.randn(8, 5) * 2
    kl = lambda x: (F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(x, 1))).sum(1)  # noqa: E731
    chosen = lambda x: torch.maximum(_d_alpha(x, t, -1.0), kl(x)).mean()  # noqa: E731
    assert (_d_alpha(s, t, -1.0) > kl(s)).any() and (_d_alpha(s, t, -1.0) < kl(s)).any()  # both sides chosen
    got, got_grad = _grad(lambda x: alpha_divergence(x, t, -1.0, 1.0, clip=1e6), s)
    ref, ref_grad = _grad(chosen, s)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-4, atol=1e-6)
    # an unsure student, a teacher sure of one class: (p/q)^-1 = q/p ~ e^8 on the others; the clip bounds the step
    s_flat, t_sure = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 8.0]])
    _, clipped = _grad(lambda x: alpha_divergence(x, t_sure, -1.0, -1.0, clip=5.0), s_flat)
    _, unclipped = _grad(lambda x: alpha_divergence(x, t_sure, -1.0, -1.0, clip=1e30), s_flat)
    assert clipped.norm() < 2 and unclipped.norm() > 100


def test_alpha_divergence_stays_finite_where_the_students_probability_underflows():
    # a logit gap of 150: q = e^-150 is 0 in float32 and p/q = inf, where the paper's KL is finite (~149); the
    # ablation's seed-1 run with train.distill=alpha hit exactly this at iteration 39 and stopped on a nan loss
    s, t = torch.tensor([[0.0, 150.0, 0.0], [1.0, -2.0, 0.5]]), torch.tensor([[5.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    ref, ref_grad = _grad(lambda x: distill_loss(x, t), s)
    got, got_grad = _grad(lambda x: alpha_divergence(x, t, 1.0, 1.0), s)
    assert torch.isfinite(ref) and ref > 70
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got_grad, ref_grad)
    for lo, hi in ((-1.0, 1.0), (0.0, 0.0), (-1.0, -1.0), (0.5, 0.5)):
        value, grad = _grad(lambda x, lo=lo, hi=hi: alpha_divergence(x, t, lo, hi), s)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), (lo, hi)


# -- dropout only in the widest --------------------------------------------------------------------------
@pytest.mark.parametrize("regularize, expected", [("all", [True, True, True]), ("widest", [True, False, False])])
def test_regularize_widest_runs_dropout_in_the_first_subnetwork_only(regularize, expected):
    model = create_model("mobilenet_v2_cifar", width_range=(0.35, 1.0), num_classes=10).train()
    dropout = model.classifier[0]
    seen = []
    dropout.register_forward_hook(lambda m, i, o: seen.append(m.training))
    x, y = torch.randn(2, 3, 16, 16), torch.randint(10, (2,))
    plan = [SubNet(1.0, 16, "labels"), SubNet(0.35, 8, "teacher"), SubNet(0.6, 12, "teacher")]
    train_step(model, x, y, plan, regularize=regularize)
    assert seen == expected and dropout.training  # switched back on after the step


# -- zero-initialised residual scales ---------------------------------------------------------------------
_TV = torchvision.models
RESIDUAL = {  # block type -> (does it have an identity path, what the block computes from x when it is zeroed)
    BasicBlock: (lambda b: b.downsample is None, F.relu), Bottleneck: (lambda b: b.downsample is None, F.relu),
    PreActBlock: (lambda b: b.shortcut is None, lambda x: x),
    InvertedResidual: (lambda b: b.use_res_connect, lambda x: x),
    _TV.resnet.BasicBlock: (lambda b: b.downsample is None, F.relu),
    _TV.mobilenetv2.InvertedResidual: (lambda b: b.use_res_connect, lambda x: x),
}


def _build(name):
    if name == "resnet_bottleneck":  # a small ResNet of bottlenecks (resnet50 has 16; building it is slow)
        return ResNet(Bottleneck, [2, 2], num_classes=10, small_input=True, planes=(8, 16), stem_channels=16)
    if name == "torchvision/mobilenet_v2":  # torchvision's own blocks, as tv/mobilenet_v2 keeps them after slim()
        return _TV.mobilenet_v2(num_classes=10)
    return create_model(name, num_classes=10, **({"small_input": True} if name.startswith("tv/") else {}))


@pytest.mark.parametrize("name, blocks", [("resnet20_cifar", 9), ("resnet_bottleneck", 4), ("wide_resnet16_4", 6),
                                          ("mobilenet_v2_cifar", 10), ("tv/resnet18", 8),
                                          ("torchvision/mobilenet_v2", 10)])
def test_zero_init_residual_starts_every_block_as_its_shortcut(name, blocks):
    model = _build(name).train()
    assert zero_init_residual(model) == blocks
    checked = []

    def check(block, inputs, out):
        torch.testing.assert_close(out, RESIDUAL[type(block)][1](inputs[0]), rtol=0, atol=0)
        checked.append(block)

    for m in model.modules():
        if type(m) in RESIDUAL and RESIDUAL[type(m)][0](m):
            m.register_forward_hook(check)
    model(torch.randn(2, 3, 32, 32))
    assert len(checked) >= 1


def test_zero_init_residual_is_off_by_default_and_finds_nothing_in_plain_networks():
    assert (create_model("resnet20_cifar").layer1[0].bn2.weight == 1).all()  # untouched without the option
    assert zero_init_residual(create_model("mobilenet_v1", num_classes=10)) == 0


# -- config: validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("train.distill=js", "train.distill must be kl or alpha, got 'js'"),
    ("train.alpha_min=2", r"train.alpha_min \(2\) must not exceed train.alpha_max \(1\)"),
    ("train.alpha_min=.nan", "train.alpha_min must be a finite number"),
    ("train.alpha_max=50", "train.alpha_max"),
    ("train.alpha_clip=0", "train.alpha_clip"),
    ("train.regularize=some", "train.regularize must be all or widest"),
    ("model.zero_init_residual=3", "model.zero_init_residual: expected true or false"),
    ("optim.clip_grad_value=0", "optim.clip_grad_value"),
    ("optim.clip_grad_value=.inf", "optim.clip_grad_value must be a finite number"),
    ("train.num_subnets=1", "train.num_subnets must be at least 2"),
    ("train.num_subnets=0", "train.num_subnets"),
    ("train.num_subnets=2.5", "train.num_subnets: expected an integer"),
])
def test_bad_option_values_are_refused(override, message):
    with pytest.raises(MutualNetError, match=message):
        resolve(load_config(None, ["model.name=resnet20_cifar", override]))


def test_zero_init_with_pretrained_weights_is_refused():
    with pytest.raises(MutualNetError, match="model.zero_init_residual and model.init"):
        resolve(load_config(None, ["model.zero_init_residual=true", "model.init=x.pt"]))


# -- end to end: `mutualnet train` with each option on ----------------------------------------------------
def _train(tmp_path, name, *sets, model="resnet20_cifar"):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": model, "width_range": [0.35, 1.0]},
        "data": {"name": "synthetic", "synthetic_length": 16, "batch_size": 8, "workers": 0},
        "train": {"resolutions": [16, 8], "epochs": 1},
        "optim": {"lr": 0.01},
        "run": {"device": "cpu", "progress": False, "tensorboard": False, "val_every": 0, "max_steps": 1}}))
    run = tmp_path / name
    argv = ["train", "--config", str(recipe), "--set", f"run.out={run}"]
    code = main([*argv, *(a for s in sets for a in ("--set", s))])
    return code, run


def _losses(run):
    return read_metrics(run, "train")[0]["losses"]


def test_cli_zero_init_residual(tmp_path):
    code, run = _train(tmp_path, "zero", "model.zero_init_residual=true")
    assert code == 0
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["config"]["model"]["zero_init_residual"] is True
    scales = [v for k, v in ckpt["model"].items() if k.endswith("bn2.weight")]
    assert len(scales) == 9 and max(float(v.abs().max()) for v in scales) < 0.2  # one small step away from 0


def test_cli_alpha_divergence_changes_only_the_distilled_losses(tmp_path):
    assert _train(tmp_path, "kl")[0] == 0
    code, run = _train(tmp_path, "alpha", "train.distill=alpha", "train.alpha_min=-0.5", "train.alpha_clip=3")
    assert code == 0
    kl, alpha = _losses(tmp_path / "kl"), _losses(run)
    assert alpha[0] == pytest.approx(kl[0])  # the widest, on the labels: the same
    assert all(a != pytest.approx(k) for a, k in zip(alpha[1:], kl[1:])) and min(alpha[1:]) >= 0
    train = load_checkpoint(run / "last.pt")["config"]["train"]
    assert (train["distill"], train["alpha_min"], train["alpha_max"], train["alpha_clip"]) == ("alpha", -0.5, 1.0, 3.0)


def test_cli_regularize_widest(tmp_path, capsys):
    code, run = _train(tmp_path, "widest", "train.regularize=widest", model="mobilenet_v2_cifar")
    assert code == 0 and load_checkpoint(run / "last.pt")["config"]["train"]["regularize"] == "widest"
    capsys.readouterr()
    assert _train(tmp_path, "nodrop", "train.regularize=widest")[0] == 2  # resnet20 has no dropout: refused
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: train.regularize=widest changes nothing") and "\n" not in err


@pytest.mark.parametrize("n", [2, 5])
def test_cli_num_subnets(tmp_path, n):
    code, run = _train(tmp_path, f"n{n}", f"train.num_subnets={n}")
    assert code == 0 and len(_losses(run)) == n
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["meta"]["num_subnets"] == n and ckpt["config"]["train"]["num_subnets"] == n


def test_cli_clip_grad_value_bounds_every_gradient_entry(tmp_path):
    # plain SGD (no momentum, no decay): w1 = w0 - lr * clip(g), the same g for both learning rates (same seed),
    # so (w1(lr) - w1(2 lr)) / lr is the clipped gradient
    plain = ("optim.momentum=0", "optim.weight_decay=0", "optim.clip_grad_value=0.001")
    runs = [_train(tmp_path, f"lr{lr}", *plain, f"optim.lr={lr}") for lr in (0.01, 0.02)]
    assert all(code == 0 for code, _ in runs)
    a, b = (load_checkpoint(run / "last.pt") for _, run in runs)
    assert a["config"]["optim"]["clip_grad_value"] == 0.001
    names = [n for n, _ in create_model("resnet20_cifar", width_range=(0.35, 1.0)).named_parameters()]
    grads = torch.cat([((a["model"][n] - b["model"][n]) / 0.01).flatten() for n in names])
    assert grads.abs().max() <= 0.001 * 1.05 and grads.abs().max() >= 0.001 * 0.95  # clipped, and some were


@pytest.mark.slow
def test_compare_trains_an_arm_with_every_option_on(tmp_path):
    """The ablation's way in: `mutualnet compare --set` passes each option to the arms it trains."""
    out = tmp_path / "cmp"
    options = ["model.zero_init_residual=true", "train.distill=alpha", "optim.clip_grad_value=1.0",
               "train.num_subnets=3"]
    argv = ["compare", "--out", str(out), "--epochs", "1", "--train-images", "32", "--width-step", "0.5",
            "--calib-images", "32", "--val-images", "32", "--threads", "1", "--no-progress", "--arms", "mutualnet",
            *(a for s in ["data.name=synthetic", "data.synthetic_length=64", "data.batch_size=16", "data.holdout=16",
                          "model.num_classes=4", "run.tensorboard=false", "run.val_every=0", *options]
              for a in ("--set", s))]
    assert main(argv) == 0
    ckpt = load_checkpoint(out / "seed0" / "mutualnet" / "train" / "last.pt")
    cfg = ckpt["config"]
    assert cfg["model"]["zero_init_residual"] and cfg["train"]["distill"] == "alpha"
    assert cfg["optim"]["clip_grad_value"] == 1.0 and ckpt["meta"]["num_subnets"] == 3
    assert (out / "results.md").exists()
