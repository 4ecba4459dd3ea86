import pytest
import torch
from torch import nn

import mutualnet as mn
from conftest import read_metrics
from mutualnet.layers import SlimmableBatchNorm2d, SlimmableConv2d, SlimmableLinear, bind_state, channel_config
from mutualnet.train.compiled import CompiledModel
from mutualnet.train.step import SubNet, train_step


class _Tiny(nn.Module):
    """Three slimmable layers: enough to exercise width slicing, BN and a classifier, quick to compile."""

    width_range = (0.25, 1.0)
    in_chans, num_classes = 3, 4

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = SlimmableConv2d(3, 16, 3, padding=1, slim_in=False)
        self.bn1 = SlimmableBatchNorm2d(16)
        self.conv2 = SlimmableConv2d(16, 32, 3, stride=2, padding=1)
        self.bn2 = SlimmableBatchNorm2d(32)
        self.fc = SlimmableLinear(32, 4)
        bind_state(self)

    def set_width(self, width: float) -> None:
        mn.set_width(self, width)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_snapping_maps_widths_to_one_width_per_network_and_changes_nothing():
    model = mn.create_model("resnet20_cifar", num_classes=4, width_range=(0.25, 1.0))
    cm = CompiledModel(model)
    widths = [0.25 + 0.01 * i for i in range(76)]
    snapped = [cm.snap(w) for w in widths]
    assert cm.snap(1.0) == 1.0 and cm.snap(0.99) != 1.0  # only the top width updates running statistics
    assert len(set(snapped)) == cm.distinct_networks + 1 < 20
    assert all(channel_config(model, w) == channel_config(model, s) for w, s in zip(widths, snapped))
    # the step on snapped widths is the step on the sampled ones: same losses, same gradients
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))
    plan = [SubNet(1.0, 16, "labels"), SubNet(0.25, 12, "teacher"), SubNet(0.61, 14, "teacher")]
    out = []
    for p in (plan, cm.snap_subnets(plan)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        out.append((train_step(model, x, y, p), _grads(model)))
    assert cm.snap_subnets(plan)[2].width != 0.61
    torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=0)
    for k in out[0][1]:
        torch.testing.assert_close(out[0][1][k], out[1][1][k], rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_step_matches_eager_losses_and_gradients():
    torch.manual_seed(0)
    model = _Tiny().train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    plan = [SubNet(1.0, 16, "labels"), SubNet(0.25, 12, "teacher")]
    model.zero_grad(set_to_none=True)
    ref_losses = train_step(model, x, y, plan)
    ref = _grads(model)
    cm = CompiledModel(model)
    for _ in range(2):  # the second step reuses the graphs
        model.zero_grad(set_to_none=True)
        losses = train_step(cm, x, y, cm.snap_subnets(plan))
        torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-5)
        got = _grads(model)
        assert got.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_run_compile_trains_the_same_steps_as_eager(tmp_path):

    from mutualnet.train import load_config, train
    from mutualnet.train.config import resolve

    def losses(name, *extra):
        cfg = load_config(None, [
            "model.name=resnet20_cifar", "model.width_range=[0.25, 1.0]", "data.name=synthetic",
            "data.synthetic_length=16", "data.batch_size=8", "data.workers=0", "train.resolutions=[16]",
            "train.num_subnets=2", "train.epochs=1", "run.max_steps=2", "run.device=cpu", "run.progress=false",
            "run.val_every=0", "run.tensorboard=false", f"run.out={tmp_path / name}", *extra])
        run_dir = train(cfg)
        return [r["losses"] for r in read_metrics(run_dir, "train")]

    eager = losses("eager")
    # graph capture of the real loop (aot_eager: the same graphs inductor compiles, without code generation)
    compiled = losses("compiled", "run.compile=true", "run.compile_backend=aot_eager")
    assert len(eager) == len(compiled) == 2
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=1e-5)
    with pytest.raises(mn.MutualNetError, match="compile_backend"):
        resolve(load_config(None, ["run.compile_backend=tvm", "model.name=resnet20_cifar", "data.name=synthetic"]))


def test_compile_auto_compiles_only_past_the_measured_break_even():
    from mutualnet.train.compiled import MEASURED_COMPILE, AutoCompile, CompileBreakEven, graphs_to_compile

    assert CompileBreakEven(100.0, 1.0, 0.8).steps == pytest.approx(500)
    assert CompileBreakEven(100.0, 1.0, 0.8).pays(501) and not CompileBreakEven(100.0, 1.0, 0.8).pays(500)
    assert CompileBreakEven(1.0, 1.0, 1.0).steps == float("inf")  # no saving: never pays
    model = mn.create_model("resnet20_cifar")  # [0.25, 1.0]: 8 distinct networks
    assert graphs_to_compile(model, 1) == 8 + 1 and graphs_to_compile(model, 4) == 2 * (8 + 1)

    def decide(steps_left, device_type="cpu"):
        auto = AutoCompile(model, steps_left=steps_left, num_resolutions=4, device_type=device_type, probe=3)
        said = [auto.observe(s) for s in (9.0, 1.0, 1.0, 1.0)]  # the first (warm-up) is not counted
        assert said[:2] == [None, None] and said[3] is None and said[2] == auto.message
        return auto

    measured = MEASURED_COMPILE["cpu"]
    break_even = 18 * measured["seconds_per_graph"] / (1.0 - measured["step_ratio"])
    short = decide(int(break_even) - 100)
    assert short.break_even.steps == pytest.approx(break_even)
    assert short.step_model() is model and "staying eager" in short.message
    long = decide(int(break_even) + 100)
    assert isinstance(long.step_model(), CompiledModel) and "compiling" in long.message
    gpu = decide(10**9, "cuda")  # nothing measured there yet: eager, and it says so
    assert gpu.step_model() is model and "no measured compilation cost on cuda" in gpu.message


@pytest.mark.slow
def test_run_compile_auto_times_the_first_steps_and_says_what_it_chose(tmp_path, capsys):
    from mutualnet.train import load_config, train
    from mutualnet.train.config import resolve

    cfg = load_config(None, [
        "model.name=resnet20_cifar", "data.name=synthetic", "data.synthetic_length=16", "data.batch_size=8",
        "data.workers=0", "train.resolutions=[16]", "train.num_subnets=2", "train.epochs=3", "run.device=cpu",
        "run.progress=false", "run.val_every=0", "run.tensorboard=false", f"run.out={tmp_path / 'auto'}",
        "run.compile=auto"])
    train(cfg)
    out = capsys.readouterr().out
    assert "run.compile auto: eager step" in out and "2 left: staying eager" in out
    with pytest.raises(mn.MutualNetError, match="run.compile must be true, false or auto"):
        resolve(load_config(None, ["run.compile=sometimes", "model.name=resnet20_cifar", "data.name=synthetic"]))
