"""Elastic depth: the third dimension of the configuration (a stage at depth d runs its first d blocks)."""

import copy
import json

import pytest
import torch
from torch import nn

import mutualnet as mn
from conftest import read_metrics
from mutualnet.calibrate import calibrate
from mutualnet.errors import MutualNetError
from mutualnet.layers import ElasticSequential, SlimmableBatchNorm2d, active_num_params, config_key, skipped_blocks
from mutualnet.search import build_query_table
from mutualnet.search.table import QueryTable
from mutualnet.train.step import SubNet, sample_subnets, train_step

# (model, input size, extra args): every family with elastic stages, at tiny inputs
FAMILIES = [("resnet20_cifar", 16, {}), ("resnet18", 32, {"num_classes": 10}), ("wide_resnet16_4", 8, {}),
            ("mobilenet_v2_cifar", 16, {}), ("mobilenet_v1_cifar", 16, {})]


def _elastic(name="resnet20_cifar", **kw):
    torch.manual_seed(0)
    full = mn.create_model(name, **kw).depth_range.hi
    return mn.create_model(name, depth_range=(1, full), **kw)


def _as_plain(model):
    """The same weights with every elastic stage an ``nn.Sequential``: the network as it was before depth."""
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, ElasticSequential):
            m.__class__ = nn.Sequential
    return plain


@pytest.mark.parametrize("name", ["resnet20_cifar", "mobilenet_v2_cifar"])
def test_full_depth_is_bit_identical_to_the_plain_network(name):
    model = _elastic(name)
    plain = _as_plain(model)
    x = torch.randn(4, 3, 16, 16)
    for w in (model.width_range.lo, 1.0):
        out = []
        for m in (model, plain):
            m.zero_grad()
            mn.set_width(m, w)
            torch.manual_seed(1)  # the same dropout masks
            out.append(m(x))
            out[-1].square().sum().backward()
        assert torch.equal(*out)
        for (n, a), b in zip(model.named_parameters(), plain.parameters()):
            assert torch.equal(a.grad, b.grad), n
    for a, b in zip(model.state_dict().values(), plain.state_dict().values()):  # running statistics too
        assert torch.equal(a, b)
    # a model built without depth_range holds the same keys and checkpoints the same arguments as before
    default = mn.create_model(name)
    assert list(default.state_dict()) == list(model.state_dict()) and "depth_range" not in default.model_args
    assert default.depth_range.lo == default.depth_range.hi


def test_depth_is_part_of_the_configuration_and_checked():
    model = _elastic()
    assert model.depth_range == (1, 3) and mn.get_depth(model) is None
    with mn.use_config(model, 0.5, 16, 2):
        assert (mn.get_config(model), mn.get_depth(model)) == ((0.5, 16), 2)
        assert len(skipped_blocks(model)) == 3  # the third block of each of the 3 stages
        with mn.use_config(model, 1.0, 16, 3):  # the full depth, held as None
            assert mn.get_depth(model) is None and not skipped_blocks(model)
        assert mn.get_depth(model) == 2
    assert mn.get_depth(model) is None
    mn.set_config(model, 0.5, 16, 1)
    for bad in (0, 4, 1.5, "2", True):
        with pytest.raises(MutualNetError):
            mn.set_config(model, 1.0, 20, bad)
    assert (mn.get_config(model), mn.get_depth(model)) == ((0.5, 16), 1)  # a refused configuration changes nothing
    with pytest.raises(MutualNetError, match="trained depth range"):
        mn.set_config(mn.create_model("resnet20_cifar"), 1.0, 16, 2)  # trained without elastic depth
    with pytest.raises(MutualNetError, match="no elastic depth"):
        mn.set_config(mn.create_model("vgg16_bn"), 1.0, 32, 2)
    with pytest.raises(MutualNetError, match="bad arguments"):
        mn.create_model("resnet20_cifar", depth_range=(1, 2))  # hi must be the full depth


@pytest.mark.parametrize("name,res,kw", FAMILIES)
def test_shallow_network_materialises_to_plain_layers_without_the_skipped_blocks(name, res, kw):
    model = _elastic(name, **kw).eval()
    lo, x = model.width_range.lo, torch.randn(2, 3, res, res)
    with mn.allow_uncalibrated(model):
        for d in range(1, model.depth_range.hi + 1):
            with mn.use_config(model, lo, res, d):
                y, n = model(x), active_num_params(model)
            dense = mn.materialize(model, lo, res, d)
            assert not any(isinstance(m, ElasticSequential) or mn.layers.is_slimmable(m) for m in dense.modules())
            assert sum(p.numel() for p in dense.parameters()) == n
            torch.testing.assert_close(dense(x), y, rtol=1e-4, atol=1e-5)
        macs = [mn.profile(model, lo, res, depth=d).macs for d in range(1, model.depth_range.hi + 1)]
    assert macs == sorted(macs) and macs[0] < macs[-1]  # exact: the skipped blocks cost nothing


def test_calibration_at_a_depth_below_full_is_exact_and_keyed_by_it():
    model = _elastic()
    images = torch.randn(50, 3, 16, 16)
    inputs: dict[str, list[torch.Tensor]] = {}
    bns = {n: m for n, m in model.named_modules() if isinstance(m, SlimmableBatchNorm2d)}
    hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: inputs.setdefault(n, []).append(a[0].detach()))
             for n, m in bns.items()]
    result = calibrate(model, images, 0.5, 16, num_images=50, batch_size=16, depth=2)
    for h in hooks:
        h.remove()
    key = config_key(0.5, 16, 2)
    assert result.key == key == "w0.500_r16_d2" and result.depth == 2
    assert "layer3.1.bn1" in inputs and "layer3.2.bn1" not in inputs  # the third block of a stage never ran
    for name, bn in bns.items():
        if name not in inputs:
            assert key not in bn.calibrated
            continue
        xs = torch.cat(inputs[name]).double().transpose(0, 1).flatten(1)
        mean, var = bn.calibrated[key]
        torch.testing.assert_close(mean.double(), xs.mean(1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(var.double(), xs.var(1), rtol=1e-5, atol=1e-6)
    model.eval()
    with mn.use_config(model, 0.5, 16, 2):
        model(images[:2])  # calibrated
    with mn.use_config(model, 0.5, 16), pytest.raises(MutualNetError, match="no calibrated"):
        model(images[:2])  # the full depth at 0.5 is another configuration
    with mn.use_config(model, 1.0, 16, 2), pytest.raises(MutualNetError, match="--depth 2"):
        model(images[:2])  # the top width below full depth may not use the running statistics


def test_sandwich_with_depth_trains_deepest_widest_and_shallowest_narrowest():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    plain = sample_subnets("mutual", (0.25, 1.0), [28, 24, 20], 4, g1)
    assert all(s.depth is None for s in plain)
    assert sample_subnets("mutual", (0.25, 1.0), [28, 24, 20], 4, g2, depth_range=(3, 3)) == plain  # same draws
    seen = set()
    for _ in range(20):
        nets = sample_subnets("mutual", (0.25, 1.0), [28, 24, 20], 4, g1, depth_range=(1, 3))
        assert (nets[0].width, nets[0].resolution, nets[0].depth) == (1.0, 28, None)
        assert (nets[1].width, nets[1].depth) == (0.25, 1)
        seen |= {s.depth for s in nets[2:]}
    assert seen == {1, 2, None}  # random depths, the full one held as None
    model = _elastic()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    losses = train_step(model, x, y, sample_subnets("mutual", (0.25, 1.0), [16, 12], 4, g1, depth_range=(1, 3)))
    assert losses.shape == (4,) and torch.isfinite(losses).all() and mn.get_depth(model) is None
    # only the deepest-widest moves the shared running statistics: the widest below full depth does not
    before = model.layer1[0].bn1.running_mean.clone()
    train_step(model, x, y, [SubNet(1.0, 16, "labels", 2)])
    assert torch.equal(model.layer1[0].bn1.running_mean, before)
    train_step(model, x, y, [SubNet(1.0, 16, "labels")])
    assert not torch.equal(model.layer1[0].bn1.running_mean, before)


def test_query_table_has_a_depth_column_and_selects_shallow_networks(tmp_path):
    from mutualnet.data.synthetic import SyntheticImages

    model = _elastic(num_classes=4).eval()
    tr, va = SyntheticImages(32, 4, 16), SyntheticImages(40, 4, 16, offset=32)
    table = build_query_table(model, va, tr, resolutions=[16, 8], widths=[0.25, 1.0], calib_images=32,
                              batch_size=40, progress=False, state_dir=tmp_path)
    assert len(table) == 2 * 2 * 3 and table.meta["depths"] == [3, 2, 1] and table.full_depth == 3
    assert table.columns()[:3] == ["width", "resolution", "depth"]
    cheapest = min(table.rows, key=lambda r: r["macs"])
    assert (cheapest["width"], cheapest["resolution"], cheapest["depth"]) == (0.25, 8, 1)
    assert table.find(1.0, 16)["depth"] == 3 and table.find(1.0, 16, 1)["macs"] < table.find(1.0, 16)["macs"]
    for r in table.rows:  # every row's statistics are held under its key (the full depth: the 2-D key)
        d = None if r["depth"] == 3 else r["depth"]
        key = config_key(r["width"], r["resolution"], d)
        assert key in model.layer1[0].bn1.calibrated
        with mn.use_config(model, r["width"], r["resolution"], r["depth"]):
            assert mn.profile(model, r["width"], r["resolution"], depth=r["depth"]).macs == r["macs"]
    assert "depth 1" in table.describe(table.select(max_mflops=cheapest["mflops"]))
    from mutualnet.deploy.latency import network_groups  # latency is measured per network, depth included

    assert len(network_groups(model, table.rows)) == len(table)
    from mutualnet.deploy.cascade import score_configs  # a cascade's steps have no depth: refused, not run deep

    with pytest.raises(MutualNetError, match="full depth"):
        score_configs(model, (torch.randn(2, 3, 16, 16), torch.tensor([0, 1])), [cheapest])
    table.save(tmp_path / "t.json")
    back = QueryTable.load(tmp_path / "t.json")
    assert back.rows == table.rows and "depth" in (tmp_path / "t.csv").read_text().splitlines()[0]
    # a 2-D table (a model without elastic depth) has no depth column, and reads every row as full depth
    flat = QueryTable(rows=[{k: v for k, v in r.items() if k != "depth"} for r in table.rows if r["depth"] == 3])
    assert "depth" not in flat.columns() and flat.find(1.0, 16)["top1"] == table.find(1.0, 16)["top1"]


def test_depth_end_to_end_train_search_select_export_calibrate(tmp_path, capsys):
    """``model.depth_range`` opts a recipe in; train, search, select, export (ONNX) and calibrate carry the depth."""
    import onnxruntime as ort

    from mutualnet.checkpoint import load_checkpoint, model_from_checkpoint
    from mutualnet.cli import main
    from mutualnet.train import load_config, train

    cfg = load_config(None, [
        "model.name=resnet20_cifar", "model.width_range=[0.25, 1.0]", "model.depth_range=[1, 3]",
        "data.name=synthetic", "data.synthetic_length=16", "data.batch_size=8", "data.workers=0",
        "train.resolutions=[16, 8]", "train.epochs=1", "run.device=cpu", "run.progress=false",
        "run.calib_batches=1", f"run.out={tmp_path / 'run'}"])
    run_dir = train(cfg)
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["model_args"]["depth_range"] == [1, 3] and "depth_range" not in ckpt["config"]["model"]
    assert [r["config_narrowest"] for r in read_metrics(run_dir, "val")] == ["w0.250_r8_d1"]  # the shallowest too
    assert model_from_checkpoint(ckpt).depth_range == (1, 3)
    out = tmp_path / "search"
    assert main(["search", "--checkpoint", str(run_dir / "last.pt"), "--out", str(out), "--width-step", "0.75",
                 "--calib-images", "8", "--val-images", "8", "--eval-batch-size", "8", "--workers", "0",
                 "--no-progress"]) == 0
    table = QueryTable.load(out / "query_table.json")
    assert sorted({r["depth"] for r in table.rows}) == [1, 2, 3] and len(table) == 2 * 2 * 3
    cheapest = min(table.rows, key=lambda r: r["macs"])
    capsys.readouterr()
    assert main(["select", "--table", str(out / "query_table.json"), "--max-mflops", f"{cheapest['mflops']:.2f}"]) == 0
    assert "depth 1" in capsys.readouterr().out
    onnx_path = tmp_path / "shallow.onnx"
    assert main(["export", "--checkpoint", str(out / "calibrated.pt"), "--width", "0.25", "--resolution", "8",
                 "--depth", "1", "--out", str(onnx_path)]) == 0
    assert "depth 1" in capsys.readouterr().out
    model = model_from_checkpoint(load_checkpoint(out / "calibrated.pt")).eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad(), mn.use_config(model, 0.25, 8, 1):
        ref = model(x)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)  # the exported shallow network is the slimmable one
    n_convs = sum(n.op_type == "Conv" for n in __import__("onnx").load(str(onnx_path)).graph.node)
    assert n_convs == 1 + 3 * 2 + 2  # stem, one block per stage (2 convs), 2 shortcut convs: 2 blocks absent
    # a configuration the search did not cover: calibrate it (depth 2 at 0.5), then export it
    assert main(["calibrate", "--checkpoint", str(out / "calibrated.pt"), "--width", "0.5", "--resolution", "16",
                 "--depth", "2", "--calib-images", "8", "--workers", "0", "--out", str(tmp_path / "c.pt")]) == 0
    assert "w0.500_r16_d2" in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(tmp_path / "c.pt"), "--width", "0.5", "--resolution", "16",
                 "--depth", "2", "--out", str(tmp_path / "d2.pt")]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "c.pt"), "--width", "0.5", "--resolution", "16",
                 "--depth", "4", "--out", str(tmp_path / "d4.pt")]) == 2  # outside the trained range
    assert "trained depth range" in capsys.readouterr().err and not (tmp_path / "d4.pt").exists()
    # eval --config WIDTH,RESOLUTION,DEPTH: the accuracy of that shallow network, with its calibrated statistics
    from mutualnet.data.checkpoint import data_from_checkpoint

    ck = load_checkpoint(tmp_path / "c.pt")
    model = model_from_checkpoint(ck).eval()
    val = data_from_checkpoint(ck, model, workers=0).build("val", 16)
    xs, ys = zip(*(val[i] for i in range(len(val))))
    with torch.no_grad(), mn.use_config(model, 0.5, 16, 2):
        expect = 100 * (model(torch.stack(xs)).argmax(1) == torch.as_tensor(ys)).float().mean().item()
    assert main(["eval", "--checkpoint", str(tmp_path / "c.pt"), "--config", "0.5,16,2", "--config", "1.0,16",
                 "--workers", "0", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert [(r["width"], r["resolution"], r["depth"]) for r in rows] == [(0.5, 16, 2), (1.0, 16, 3)]
    assert rows[0]["top1"] == pytest.approx(expect) and rows[0]["images"] == len(val)
    assert rows[0]["bn_statistics"].startswith("calibrated")
    assert rows[0]["mflops"] == pytest.approx(mn.profile(model, 0.5, 16, depth=2).mflops)
    assert rows[0]["mflops"] < mn.profile(model, 0.5, 16).mflops
    for bad, why in ((["--config", "0.5,16,1"], "w0.500_r16_d1 has no calibrated"),  # not calibrated at depth 1
                     (["--config", "1.0,12,2"], "w1.000_r12_d2 has no calibrated"),  # top width, not full depth
                     (["--config", "0.5,16,4"], "trained depth range"), (["--config", "0.5,16,0"], "--config")):
        assert main(["eval", "--checkpoint", str(tmp_path / "c.pt"), *bad, "--workers", "0"]) == 2
        assert why in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "c.pt"), "--config", "0.5,16,1", "--calibrate",
                 "--calib-images", "8", "--workers", "0"]) == 0
    assert "width 0.5 at 16 px, depth 1: top-1" in capsys.readouterr().out
    # predict at a budget only a shallow network fits: the line names its depth
    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray((torch.rand(20, 20, 3) * 255).to(torch.uint8).numpy()).save(img)
    assert main(["predict", "--checkpoint", str(out / "calibrated.pt"), "--budget-mflops",
                 f"{cheapest['mflops'] + 1e-4:.6f}", str(img)]) == 0
    assert capsys.readouterr().out.startswith("configuration: width 0.25 at 8 px, depth 1 (")


def test_full_depth_epochs_trains_the_full_depth_first_then_elastic(tmp_path, monkeypatch):
    """``train.full_depth_epochs`` (progressive shrinking): the first epochs draw the 2-D plan, then elastic depth."""
    import mutualnet.train.loop as loop
    from mutualnet.train import load_config, train
    from mutualnet.train.config import resolve

    drawn: list = []

    def spy(*a, depth_range=None, **kw):
        plan = sample_subnets(*a, depth_range=depth_range, **kw)
        drawn.append({s.depth for s in plan})
        return plan

    monkeypatch.setattr(loop, "sample_subnets", spy)
    base = ["model.name=resnet20_cifar", "model.width_range=[0.25, 1.0]", "model.depth_range=[1, 3]",
            "data.name=synthetic", "data.synthetic_length=16", "data.batch_size=8", "data.workers=0",
            "train.resolutions=[16, 8]", "train.epochs=2", "run.device=cpu", "run.progress=false", "run.val_every=0",
            "run.tensorboard=false"]
    run_dir = train(load_config(None, base + ["train.full_depth_epochs=1", f"run.out={tmp_path / 'run'}"]))
    assert len(drawn) == 4 and drawn[0] == drawn[1] == {None} and 1 in drawn[2] and 1 in drawn[3]
    assert load_checkpoint_config(run_dir)["train"]["full_depth_epochs"] == 1
    for bad, why in (("train.full_depth_epochs=2", "below train.epochs"), ("train.full_depth_epochs=-1", "full_dep")):
        with pytest.raises(MutualNetError, match=why):
            resolve(load_config(None, base + [bad]))
    with pytest.raises(MutualNetError, match="needs an elastic model.depth_range"):
        resolve(load_config(None, [b for b in base if "depth_range" not in b] + ["train.full_depth_epochs=1"]))


def load_checkpoint_config(run_dir):
    from mutualnet.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "last.pt")["config"]


def test_plot_of_a_depth_table_colours_every_configuration_by_depth(tmp_path, monkeypatch):
    """One 3-D table: a colour per depth (all configurations and the frontier), the frontier's resolution as shape."""
    from mutualnet.search import plot

    rows = [{"width": w, "resolution": r, "depth": d, "mflops": w * r * d / 10, "macs": int(w * r * d * 1e5),
             "params": 1, "top1": 50 + 10 * d + r / 4 + 5 * w, "top5": 99.0}
            for w in (0.5, 1.0) for r in (16, 28) for d in (1, 2, 3)]
    table = QueryTable(rows=rows)
    figs = []
    monkeypatch.setattr(plot, "_save", lambda fig, out, **kw: figs.append(fig) or out)
    plot.plot_tables([table], ["t"], tmp_path / "f.png")
    ax = figs[0].axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["depth 1", "depth 2", "depth 3", "28 px", "16 px"]
    by_depth = {}  # the colour of every drawn point, by its (mflops, top1)
    for c in ax.collections:
        for (x, y), colour in zip(c.get_offsets(), c.get_facecolors() if len(c.get_facecolors()) else []):
            by_depth.setdefault(next(r["depth"] for r in rows if (r["mflops"], r["top1"]) == (x, y)), set()).add(
                tuple(colour[:3]))
    assert all(len(v) == 1 for v in by_depth.values()) and len({*map(frozenset, by_depth.values())}) == 3
    front = table.frontier("macs")
    assert {r["depth"] for r in front} == {1, 2, 3}  # the frontier crosses depths, each in its depth's colour
    # a 2-D table is drawn as before: grey configurations, frontier coloured by resolution
    plot.plot_tables([QueryTable(rows=[{k: v for k, v in r.items() if k != "depth"} for r in rows if r["depth"] == 3])],
                     ["t"], tmp_path / "g.png")
    assert figs[1].axes[0].get_legend().get_title().get_text() == "frontier resolution"


class _Block(nn.Module):
    """A residual block as people write them: the shortcut an ``nn.Identity`` unless the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.stage1 = nn.Sequential(_Block(8, 8), _Block(8, 8), _Block(8, 8))
        self.stage2 = nn.Sequential(_Block(8, 16, 2), _Block(16, 16))
        self.plain = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.Conv2d(16, 16, 3, 1, 1))  # equal shape, no shortcut
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.plain(self.stage2(self.stage1(self.stem(x)))).mean((2, 3)))


def test_slim_makes_runs_of_residual_blocks_elastic_in_a_hand_written_network():
    torch.manual_seed(0)
    net = _ResNet().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = net(x)
    shallow_ref = copy.deepcopy(net)  # depth 1 by hand: each stage keeps its first block
    shallow_ref.stage1, shallow_ref.stage2 = shallow_ref.stage1[:1], shallow_ref.stage2[:1]
    with torch.no_grad():
        shallow = shallow_ref(x)
    keys = list(net.state_dict())
    model = mn.slim(net, (0.5, 1.0), input_size=16, depth_range=(1, 3)).eval()
    assert model.depth_range == (1, 3) and list(model.state_dict()) == keys
    assert isinstance(model.stage1, ElasticSequential) and isinstance(model.stage2, ElasticSequential)
    assert type(model.plain) is nn.Sequential and type(model.stem) is nn.Sequential  # no residual run: as it was
    assert [b.elastic_index for b in model.stage1] == [0, 1, 2] and [b.elastic_index for b in model.stage2] == [0, 1]
    with torch.no_grad():
        assert torch.equal(model(x), before)  # full depth: the network's own computation
        with mn.allow_uncalibrated(model), mn.use_config(model, 1.0, 16, 1):
            assert torch.equal(model(x), shallow)  # depth 1: the first block of each stage, nothing else
            assert len(skipped_blocks(model)) == 3
    with mn.allow_uncalibrated(model):
        macs = [mn.profile(model, 0.5, 16, depth=d).macs for d in (1, 2, 3)]
        dense = mn.materialize(model, 0.5, 16, 2)
        with mn.use_config(model, 0.5, 16, 2), torch.no_grad():
            y, n = model(x), active_num_params(model)
    assert macs[0] < macs[1] < macs[2]
    assert not any(isinstance(m, ElasticSequential) for m in dense.modules())
    assert sum(p.numel() for p in dense.parameters()) == n
    torch.testing.assert_close(dense(x), y, rtol=1e-4, atol=1e-5)
    losses = train_step(model.train(), x, torch.tensor([0, 1]), [SubNet(1.0, 16, "labels"),
                                                                  SubNet(0.5, 16, "teacher", 1)])
    assert torch.isfinite(losses).all()
    with pytest.raises(MutualNetError, match=r"\(lo, 3\)"):
        mn.slim(_ResNet(), (0.5, 1.0), input_size=16, depth_range=(1, 2))  # the full depth is 3
    plain = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(MutualNetError, match="no nn.Sequential of it holds a run of residual blocks"):
        mn.slim(nn.Sequential(plain[0], nn.ReLU(), plain[1]), (0.5, 1.0), input_size=8, depth_range=(1, 2))
    assert mn.slim(_ResNet(), (0.5, 1.0), input_size=16).depth_range is None  # opt-in


def test_torchvision_resnet_through_tv_gets_elastic_depth():
    torch.manual_seed(0)
    model = mn.create_model("tv/resnet18", num_classes=4, width_range=(0.5, 1.0), small_input=True,
                            depth_range=(1, 2)).eval()
    assert model.depth_range == (1, 2) and model.model_args["depth_range"] == [1, 2]
    torch.manual_seed(0)
    flat = mn.create_model("tv/resnet18", num_classes=4, width_range=(0.5, 1.0), small_input=True).eval()
    assert flat.depth_range is None and list(flat.state_dict()) == list(model.state_dict())
    flat.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), flat(x))
        for layer in ("layer1", "layer2", "layer3", "layer4"):  # depth 1 by hand
            getattr(flat, layer)[1] = nn.Identity()
        with mn.allow_uncalibrated(model), mn.use_config(model, 1.0, 32, 1):
            assert torch.equal(model(x), flat(x))
    rebuilt = mn.create_model("tv/resnet18", **{k: v for k, v in model.model_args.items()})  # a checkpoint's way
    assert rebuilt.depth_range == (1, 2)
    with pytest.raises(MutualNetError, match="full depth only"), mn.use_config(model, 1.0, 32, 1):
        model.forward_stages(x)
