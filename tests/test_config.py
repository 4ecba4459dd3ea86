"""The active configuration (width, resolution) has one owner: the model's shared state."""

from pathlib import Path

import pytest
import torch

import mutualnet as mn
from mutualnet.calibrate import calibrate
from mutualnet.errors import MutualNetError
from mutualnet.layers import WidthRange


def _model():
    torch.manual_seed(0)
    model = mn.create_model("resnet20_cifar", num_classes=4, width_range=(0.25, 1.0))
    with torch.no_grad():  # BN statistics far from identity, so the wrong statistics show
        for m in model.modules():
            if isinstance(m, mn.layers.SlimmableBatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_materialize_uses_the_configuration_it_is_given_not_the_last_forward():
    """The bug of issue 11: materialise at (0.5, 20) after a forward at 28 px must be the (0.5, 20) network."""
    model = _model()
    images = torch.randn(64, 3, 28, 28)
    calibrate(model, images, 0.5, 20, num_images=64, batch_size=32)
    calibrate(model, images, 0.5, 28, num_images=64, batch_size=32)
    x28, x20 = torch.randn(2, 3, 28, 28), torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        model(x28)  # a forward pass at 28 px no longer changes the configuration
        assert mn.get_config(model) == (1.0, None)
        with pytest.raises(MutualNetError, match="needs the resolution"):
            mn.materialize(model, 0.5)  # ambiguous: statistics exist at 20 and 28 px
        dense = mn.materialize(model, 0.5, 20)
        with mn.use_config(model, 0.5, 20):
            ref = model(x20)
        assert float((dense(x20) - ref).abs().max()) == 0.0
        with mn.use_config(model, 0.5, 28):  # and the other resolution's statistics really differ
            other = mn.materialize(model)(x20)
        assert float((other - ref).abs().max()) > 1e-3
    assert mn.get_config(model) == (1.0, None)


def test_use_config_sets_checks_and_restores_both():
    model = _model()
    mn.set_config(model, 0.75, 24)
    with mn.use_config(model, 0.5, 20):
        assert mn.get_config(model) == (0.5, 20)
        assert all(m.slim_state is model.slim_state for m in model.modules() if mn.layers.is_slimmable(m))
        with pytest.raises(MutualNetError, match="configured for 20 px"):
            model(torch.randn(1, 3, 28, 28))
        with mn.allow_uncalibrated(model):  # shapes only: no statistics needed
            model(torch.randn(1, 3, 20, 20))
    assert mn.get_config(model) == (0.75, 24)
    with pytest.raises(MutualNetError, match="outside this model's trained range"):
        with mn.use_config(model, 1.5, 20):
            pass
    with pytest.raises(MutualNetError, match="too small"):
        mn.set_config(model, 0.5, 2)
    assert mn.get_config(model) == (0.75, 24)  # a refused configuration changes nothing
    mn.set_width(model, 0.25)  # the width alone; the resolution stays
    assert mn.get_config(model) == (0.25, 24)


def test_entry_points_restore_the_configuration():
    model = _model()
    mn.set_config(model, 0.75, 24)
    calibrate(model, torch.randn(8, 3, 28, 28), 0.5, 20, num_images=8, batch_size=8)
    mn.profile(model, 0.25, 16)
    mn.measure_latency(model, 0.25, 16, warmup=0, repeats=1)
    from mutualnet.deploy.export import export_subnet
    from mutualnet.evaluate import evaluate

    export_subnet(model, 0.5, 20)
    evaluate(model, (torch.randn(4, 3, 28, 28), torch.zeros(4, dtype=torch.long)), 0.5, 20)
    assert mn.get_config(model) == (0.75, 24)


def test_width_range_check_contains_grid():
    rng = WidthRange(0.25, 1.0)
    assert rng.contains(0.1 + 0.15) and rng.contains(1.0 + 1e-9) and not rng.contains(1.01)
    assert rng.check(0.5) == 0.5
    with pytest.raises(MutualNetError, match=r"width 0.2 is outside this model's trained range \[0.25, 1\]"):
        rng.check(0.2)
    assert rng.grid(0.25) == [0.25, 0.5, 0.75, 1.0]
    assert WidthRange(0.3, 1.0).grid(0.25) == [0.3, 0.55, 0.8, 1.0]  # the top is always included
    with pytest.raises(MutualNetError, match="step must be positive"):
        rng.grid(0)
    lo, hi = mn.create_model("resnet20_cifar").width_range  # still a tuple
    assert isinstance(mn.create_model("resnet20_cifar").width_range, WidthRange) and lo < hi


def test_readme_library_use_runs():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = readme.split("## Library use", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["logits"].shape == (2, 1000) and mn.get_config(scope["model"]) == (1.0, None)
    assert not any(mn.layers.is_slimmable(m) for m in scope["dense"].modules())
