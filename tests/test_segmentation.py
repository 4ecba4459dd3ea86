"""Segmentation: mean IoU, its query table, and torchvision's segmentation models end to end (train, search, ONNX)."""

import json

import onnxruntime
import pytest
import torch
from torchvision.models import segmentation

import mutualnet as mn
from mutualnet.calibrate import calibrate
from mutualnet.cli import main
from mutualnet.data import resize_batch
from mutualnet.data.preprocess import model_preprocessing
from mutualnet.deploy.export import export_subnet, save_exported
from mutualnet.search import QueryTable
from mutualnet.segmentation import (
    IGNORE_INDEX,
    confusion_matrix,
    evaluate_segmentation,
    search_segmentation,
    segmentation_scores,
)
from mutualnet.train.step import SubNet, train_step


def shapes(n: int, size: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of a bright square (class 1) and a dark disc (class 2) on noise (class 0), each shape outlined
    by a 1 px border labelled 255 (ignored, as VOC's object borders are)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * 0.3
    y = torch.zeros(n, size, size, dtype=torch.long)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):
        s = int(torch.randint(size // 4, size // 2, (1,), generator=g))
        a, b = (int(v) for v in torch.randint(0, size - s, (2,), generator=g))
        square = (rows >= a) & (rows < a + s) & (cols >= b) & (cols < b + s)
        cy, cx = (float(v) for v in torch.randint(size // 4, 3 * size // 4, (2,), generator=g))
        radius = float(torch.randint(size // 8, size // 4, (1,), generator=g))
        dist = ((rows - cy) ** 2 + (cols - cx) ** 2).float().sqrt()
        disc = dist < radius
        x[i, :, square] += 1.5
        x[i, :, disc] -= 1.5
        y[i][square], y[i][disc] = 1, 2
        y[i][(dist - radius).abs() < 1] = IGNORE_INDEX
    return x, y


def test_mean_iou_counts_labelled_pixels_and_skips_absent_classes():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 1]])
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]  # 255 pixels: nowhere
    scores = segmentation_scores(cm)
    # IoU: class 0 1/(2+2-1), class 1 2/(2+3-2), class 2 1/(2+1-1); class 3 predicted only on ignored pixels
    assert scores["iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2, None])
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores["pixel_acc"] == pytest.approx(4 / 6)
    with pytest.raises(mn.MutualNetError, match=r"^a pixel is labelled 7, the network predicts 4 classes \(0..3; "
                                                r"255 marks pixels to ignore\)$"):
        confusion_matrix(pred, torch.full_like(target, 7), 4)
    with pytest.raises(mn.MutualNetError, match="no labelled pixels"):
        segmentation_scores(confusion_matrix(pred, torch.full_like(target, 255), 4))


def test_torchvision_segmentation_model_trains_searches_and_exports(tmp_path, capsys):
    torch.manual_seed(0)
    net = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    model = mn.slim(net, (0.5, 1.0), input_size=48, output="out")
    x, y = shapes(48)
    val = shapes(16, seed=1)
    subnets = [SubNet(1.0, 48, "labels"), SubNet(0.5, 32, "teacher"), SubNet(0.75, 40, "teacher")]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for step in range(12):
        i = (step * 16) % len(x)
        opt.zero_grad()
        losses = train_step(model, x[i:i + 16], y[i:i + 16], subnets)  # 255 borders: no loss
        opt.step()
        assert torch.isfinite(losses).all()
        first = losses if first is None else first
    assert losses[0] < 0.7 * first[0]

    table = search_segmentation(model, val, x, resolutions=[48, 32], widths=[0.5, 0.75, 1.0], calib_images=32,
                                batch_size=16, out=tmp_path, meta={"model": "lraspp_mobilenet_v3_large"})
    assert table.metric == "miou" and len(table) == 6
    for r in table.rows:  # each configuration's own calibrated statistics, its own score
        assert 0 <= r["miou"] <= 1 and 0 <= r["pixel_acc"] <= 1
        assert r["miou"] == pytest.approx(evaluate_segmentation(model, *val, r["width"], r["resolution"])["miou"])
    assert table.find(1.0, 48)["macs"] > table.find(0.5, 48)["macs"] > table.find(0.5, 32)["macs"]
    assert max(r["miou"] for r in table.rows) > 0.4  # squares and discs found (classes 0/1/2 at chance: ~0.2)
    saved = QueryTable.load(tmp_path / "query_table.json")
    assert saved.metric == "miou" and [r["miou"] for r in saved.rows] == [r["miou"] for r in table.rows]
    assert json.loads((tmp_path / "query_table.json").read_text())["metric"] == "miou"
    assert (tmp_path / "miou_mflops.png").stat().st_size > 0
    budget = table.find(0.75, 32)["mflops"]
    best = table.select(max_mflops=budget)
    assert best["mflops"] <= budget and best["miou"] == max(r["miou"] for r in table.rows if r["mflops"] <= budget)
    assert main(["select", "--table", str(tmp_path), "--max-mflops", f"{budget:.2f}"]) == 0  # the commands read it
    assert capsys.readouterr().out.startswith(f"width {best['width']:g} at {best['resolution']} px: mean IoU "
                                              f"{100 * best['miou']:.2f}%")
    assert main(["plot", str(tmp_path / "query_table.json"), "--out", str(tmp_path / "again.png")]) == 0

    net_, check = export_subnet(model, 0.5, 32)  # calibrated by the search; checked against the slimmable model
    assert check["folded"] > 0
    checks = save_exported(net_, tmp_path / "seg.onnx", "onnx")  # compared with onnxruntime before it is written
    assert checks["onnx_max_abs_diff"] < 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "seg.onnx"), providers=["CPUExecutionProvider"])
    probe = resize_batch(val[0][:1], 32, model_preprocessing(model).resize)  # a real image, as the search saw it
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: probe.numpy()})[0])
    with torch.no_grad():
        want = net_(probe)
    assert got.shape == (1, 3, 32, 32)
    torch.testing.assert_close(got, want, atol=1e-5 * max(1.0, float(want.abs().max())), rtol=0)
    assert torch.equal(got.argmax(1), want.argmax(1))


def test_segmentation_search_refuses_bad_data_in_one_line():
    net = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    model = mn.slim(net, (0.5, 1.0), input_size=32, output="out")
    x, y = shapes(4, size=32)
    with pytest.raises(mn.MutualNetError, match=r"^validation labels must be an integer tensor \(N, H, W\)"):
        search_segmentation(model, (x, y.float()), x, resolutions=[32], widths=[1.0])
    with pytest.raises(mn.MutualNetError, match="successive halving"):
        search_segmentation(model, (x, y), x, resolutions=[32], widths=[1.0], halving=0.5)
    with pytest.raises(mn.MutualNetError, match=r"a pixel is labelled 9"):
        search_segmentation(model, (x, y.masked_fill(y == 1, 9)), x, resolutions=[32], widths=[1.0],
                            calib_images=4)


@pytest.mark.parametrize("name", ["deeplabv3_mobilenet_v3_large", "fcn_resnet50", "deeplabv3_resnet50"])
def test_torchvision_segmentation_models_convert_train_calibrate_and_export(name):
    """The other torchvision segmentation families (ASPP, dilated ResNet-50, auxiliary heads): the converted network
    is the original at the top width, a sandwich step trains it, and a narrow configuration is scored and exported."""
    torch.manual_seed(0)
    net = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=3, aux_loss=True).eval()
    x, y = shapes(8, size=32)
    with torch.no_grad():
        want = net(x)["out"]
    model = mn.slim(net, (0.5, 1.0), input_size=32, output="out")
    with torch.no_grad():
        assert torch.equal(model.eval()(x), want)
    losses = train_step(model.train(), x, y, [SubNet(1.0, 32, "labels"), SubNet(0.5, 24, "teacher")])
    assert torch.isfinite(losses).all() and losses[1] < 10  # the distillation is a per-pixel mean
    model.zero_grad()
    calibrate(model, x, 0.5, 24, num_images=8, batch_size=8)
    scores = evaluate_segmentation(model, x, y, 0.5, 24, batch_size=8)
    assert 0 <= scores["miou"] <= 1 and int(scores["confusion"].sum()) == int((y != IGNORE_INDEX).sum())
    export_subnet(model, 0.5, 24)  # materialised and BN folded, checked against the slimmable model
