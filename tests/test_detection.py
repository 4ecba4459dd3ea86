"""Detection: slimmable Mask R-CNN + FPN on a tiny synthetic COCO-format dataset built here."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

import mutualnet as mn
from conftest import read_metrics
from mutualnet.checkpoint import load_checkpoint
from mutualnet.cli import main
from mutualnet.detection import (
    CocoDetection,
    DetectionConfig,
    build_detector,
    calibrate_detector,
    coco_eval,
    coco_results,
    detection_step,
    detector_from_checkpoint,
    detector_macs,
    evaluate_coco,
    load_backbone_weights,
    train_detector,
)
from mutualnet.train import load_config as _load_config
from mutualnet.train.step import SubNet


def load_config(path, overrides, **values):
    """The one config loader, for detection's settings."""
    return _load_config(path, overrides, schema=DetectionConfig, **values)


CATS = {3: "box", 7: "blob"}  # non-contiguous COCO ids on purpose
SMALL = dict(width_range=(0.125, 0.25), scales=(96, 64), max_size=128, fpn_channels=32, representation_size=64,
             mask_layers=(32, 32), anchor_sizes=(8, 16, 32, 64, 128), rpn_batch_size_per_image=32,
             box_batch_size_per_image=32, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
             rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100)


def make_coco(root, n=10, seed=0):
    """n images of 64-96 px with 1-3 shapes: rectangles (polygon segmentations) and ellipses (RLE)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(64, 97, size=2))
        img = np.full((h, w, 3), rng.integers(0, 60, size=3), dtype=np.uint8)
        img = np.clip(img + rng.integers(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cat = int(rng.choice(list(CATS)))
            bw, bh = (int(v) for v in rng.integers(16, 33, size=2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            m = np.zeros((h, w), dtype=np.uint8)
            if cat == 3:
                m[y0:y0 + bh, x0:x0 + bw] = 1
                seg = [[x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]]
            else:
                yy, xx = np.mgrid[:h, :w]
                m[((xx - x0 - bw / 2) / (bw / 2)) ** 2 + ((yy - y0 - bh / 2) / (bh / 2)) ** 2 <= 1] = 1
                rle = mask_util.encode(np.asfortranarray(m))
                seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            img[m.astype(bool)] = (220, 40, 40) if cat == 3 else (40, 90, 230)
            ys, xs = np.nonzero(m)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": bbox,
                         "area": float(m.sum()), "iscrowd": 0, "segmentation": seg})
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        images.append({"id": i + 1, "file_name": f"{i:03d}.png", "height": h, "width": w})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": k, "name": v, "supercategory": "shape"} for k, v in CATS.items()]}
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json", root / "images"


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco(tmp_path_factory.mktemp("coco"))


def test_dataset_targets(coco):
    ds = CocoDetection(*coco)
    assert len(ds) == 10 and ds.num_classes == 3 and ds.cat_ids == [3, 7]
    img, t = ds[0]
    assert img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    n = len(t["labels"])
    assert t["boxes"].shape == (n, 4) and t["masks"].shape == (n, *img.shape[-2:]) and n >= 1
    assert set(t["labels"].tolist()) <= {1, 2}
    # every mask lies inside its box and fills it (rectangles) or most of it (ellipses)
    for box, m, lab in zip(t["boxes"], t["masks"], t["labels"]):
        x0, y0, x1, y1 = box.int().tolist()
        inside = m[y0:y1, x0:x1].sum().item()
        assert inside == m.sum().item() and inside >= (0.99 if lab == 1 else 0.7) * (x1 - x0) * (y1 - y0)


def test_bad_annotations_are_one_line_errors(tmp_path, coco, capsys):
    with pytest.raises(mn.MutualNetError, match="annotation file not found"):
        CocoDetection(tmp_path / "nope.json", coco[1])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(mn.MutualNetError, match="not valid JSON"):
        CocoDetection(tmp_path / "bad.json", coco[1])
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(mn.MutualNetError, match="not COCO format"):
        CocoDetection(tmp_path / "list.json", coco[1])
    (tmp_path / "nobbox.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "height": 9,
                                                                  "width": 9}], "categories": [{"id": 1}],
                                                      "annotations": [{"image_id": 1, "category_id": 1}]}))
    with pytest.raises(mn.MutualNetError, match="malformed entry"):
        CocoDetection(tmp_path / "nobbox.json", coco[1])
    with pytest.raises(mn.MutualNetError, match="image folder not found"):
        CocoDetection(coco[0], tmp_path / "missing")
    rc = main(["detect", "eval", "--checkpoint", str(tmp_path / "x.pt"), "--annotations", str(tmp_path / "bad.json"),
               "--images", str(coco[1]), "--out", str(tmp_path / "ev")])
    assert rc == 2 and capsys.readouterr().err.count("\n") == 1
    from mutualnet.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "cls.pt", mn.create_model("resnet20_cifar"), {})
    rc = main(["detect", "eval", "--checkpoint", str(tmp_path / "cls.pt"), "--annotations", str(coco[0]),
               "--images", str(coco[1]), "--out", str(tmp_path / "ev")])
    assert rc == 2 and "holds a classifier" in capsys.readouterr().err
    rc = main(["detect", "train", "--annotations", str(tmp_path / "nope.json"), "--images", str(coco[1]),
               "--out", str(tmp_path / "run"), "--set", "device=cpu"])
    assert rc == 2 and "annotation file not found" in capsys.readouterr().err
    recipe_path = Path(__file__).parents[1] / "configs" / "detection" / "maskrcnn_vgg16_coco.yaml"
    recipe = load_config(recipe_path, ["batch_size=2"], annotations="a", images="b")
    assert recipe.scales == [600, 480, 360, 240] and recipe.width_range == (0.25, 1.0) and recipe.batch_size == 2
    with pytest.raises(mn.MutualNetError, match="unknown config key lerning_rate"):
        load_config(None, ["lerning_rate=0.1"], annotations="a", images="b")
    assert not (tmp_path / "ev").exists() and not (tmp_path / "run" / "last.pt").exists()


def test_ground_truth_scores_perfect_ap(coco):
    """The COCO conversion path (XYWH boxes, RLE masks, category ids) gives AP 1 for the ground truth."""
    ds = CocoDetection(*coco)
    outputs, ids = [], []
    for i in range(len(ds)):
        _, t = ds[i]
        outputs.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
                        "masks": t["masks"][:, None].float()})
        ids.append(t["image_id"])
    stats = coco_eval(ds.coco, coco_results(outputs, ids, ds.cat_ids), ids)
    assert stats["bbox"][0] == pytest.approx(1.0) and stats["segm"][0] == pytest.approx(1.0)
    shifted = [dict(o, boxes=o["boxes"] + 6) for o in outputs]
    assert coco_eval(ds.coco, coco_results(shifted, ids, ds.cat_ids), ids, ("bbox",))["bbox"][0] < 0.9


def test_width_switches_backbone_and_fpn_laterals():
    model = build_detector("vgg16_bn", 3, **SMALL).eval()
    mn.allow_uncalibrated(model)  # shapes, not accuracy
    laterals = [b[0] for b in model.backbone.fpn.inner_blocks]
    assert all(isinstance(c, mn.layers.SlimmableConv2d) and c.slim_in and not c.slim_out for c in laterals)
    assert all(c.slim_state is model.backbone.body.slim_state is model.slim_state for c in laterals)
    x = torch.rand(1, 3, 64, 96)
    for w in (0.125, 0.25):
        mn.set_width(model, w)
        feats = model.backbone.body.forward_stages(x)
        chans = [feats[i].shape[1] for i in model.backbone.return_stages]
        assert chans == [f["num_chs"] for f in model.backbone.feature_info]
        assert chans == [c.active_channels()[0] for c in laterals]
        out = model.backbone(x)
        assert list(out) == ["0", "1", "2", "3", "pool"] and all(v.shape[1] == 32 for v in out.values())
    with pytest.raises(mn.MutualNetError, match="outside"):
        model.set_config(0.5, 64)
    big = build_detector("resnet50", 5, width_range=(0.9, 1.0), scales=(64,), max_size=96, fpn_channels=32,
                         representation_size=32, mask_layers=(16,), anchor_sizes=(8, 16, 32, 64, 128))
    assert [c.weight.shape[1] for c in (b[0] for b in big.backbone.fpn.inner_blocks)] == [256, 512, 1024, 2048]
    mn.set_width(big, 0.9)
    feats = big.backbone.body.forward_stages(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [b[0].active_channels()[0] for b in big.backbone.fpn.inner_blocks]
    assert big.backbone(torch.rand(1, 3, 64, 64))["0"].shape == (1, 32, 16, 16)


def test_macs_follow_width_and_scale():
    model = build_detector("vgg16_bn", 3, **SMALL)
    m = {(w, s): detector_macs(model, w, s, (72, 96)) for w in (0.125, 0.25) for s in (96, 64)}
    assert m[(0.25, 96)]["input_size"] == [96, 128] and m[(0.25, 64)]["input_size"] == [64, 96]
    assert m[(0.125, 96)]["backbone_macs"] < m[(0.25, 96)]["backbone_macs"]
    assert m[(0.25, 64)]["macs"] < m[(0.25, 96)]["macs"] and m[(0.125, 64)]["macs"] == min(v["macs"]
                                                                                           for v in m.values())
    assert m[(0.125, 96)]["params"] < m[(0.25, 96)]["params"]
    # the backbone + FPN part equals a direct count on the padded input
    from torch.utils.flop_counter import FlopCounterMode

    model.eval().set_config(0.25, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.backbone(torch.zeros(1, 3, 64, 96))
    assert m[(0.25, 64)]["backbone_macs"] == fc.get_total_flops() // 2


def test_calibration_is_keyed_by_width_and_scale(coco):
    model = build_detector("vgg16_bn", 3, **SMALL)
    ds = CocoDetection(*coco)
    key = calibrate_detector(model, ds, 0.125, 64, num_images=4)
    assert key == "w0.125_r64"
    bn = model.backbone.body.features[1]
    assert key in bn.calibrated and bn.calibrated[key][0].shape == (8,)
    out = evaluate_coco(model, ds, 0.125, 64)
    assert 0.0 <= out["box_ap"] <= 1.0 and 0.0 <= out["mask_ap"] <= 1.0 and out["num_detections"] > 0
    assert (model.width, model.scale) == (0.25, 96)  # calibration and evaluation restore the configuration

    class Broken(torch.utils.data.Dataset):  # the third image cannot be read
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            if i == 2:
                raise OSError("truncated image")
            return ds[i]

    with pytest.raises(OSError):  # the classifier's calibration loop: nothing kept of a partial pass
        calibrate_detector(model, Broken(), 0.25, 64, num_images=4, batch_size=1)
    assert "w0.250_r64" not in bn.calibrated and not bn.calibrating


def test_backbone_init_from_classification_checkpoint(tmp_path):
    from mutualnet.checkpoint import save_checkpoint

    cls = mn.create_model("vgg16_bn", width_range=(0.125, 0.25), num_classes=10)
    save_checkpoint(tmp_path / "cls.pt", cls, {"mode": "mutual", "resolutions": [224]})
    det = build_detector("vgg16_bn", 3, **SMALL)
    assert load_backbone_weights(det, tmp_path / "cls.pt") == []
    torch.testing.assert_close(det.backbone.body.features[0].weight, cls.features[0].weight)
    torch.save(cls.state_dict(), tmp_path / "plain.pt")  # a torchvision-style state dict
    assert load_backbone_weights(build_detector("vgg16_bn", 3, **SMALL), tmp_path / "plain.pt") == []
    other = mn.create_model("resnet18", width_range=(0.125, 0.25))
    save_checkpoint(tmp_path / "r18.pt", other, {})
    with pytest.raises(mn.MutualNetError, match="holds a resnet18"):
        load_backbone_weights(det, tmp_path / "r18.pt")


def _dataset_loss(model, ds, width, scale):
    """Mean summed loss over the dataset at one configuration (fixed sampling seed, BN batch stats)."""
    torch.manual_seed(123)
    model.train().set_config(width, scale)
    with torch.no_grad():
        return sum(sum(model([ds[i][0]], [ds[i][1]]).values()).item() for i in range(len(ds))) / len(ds)


@pytest.mark.slow
def test_train_lowers_loss_then_cli_eval_reports_ap(coco, tmp_path, capsys):
    ann, images = coco
    t0 = time.time()
    sets = [f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in SMALL.items()]
    sets += ["batch_size=2", "epochs=20", "max_iterations=100", "lr=0.01", "warmup_iters=5", "lr_steps=[15]",
             "clip_grad_norm=10", "num_subnets=3", "num_workers=0", "log_every=5", "device=cpu"]
    cfg = load_config(None, sets, annotations=str(ann), images=str(images), out=str(tmp_path / "run"))
    ds = CocoDetection(ann, images)
    torch.manual_seed(cfg.seed)  # train_detector builds the same initial weights from the same seed
    before = build_detector("vgg16_bn", ds.num_classes, **cfg.model_kwargs())
    loss_before = {c: _dataset_loss(before, ds, *c) for c in ((0.25, 96), (0.125, 64))}
    run = train_detector(cfg, progress=False)
    model = detector_from_checkpoint(run / "last.pt")
    loss_after = {c: _dataset_loss(model, ds, *c) for c in loss_before}
    print(f"loss before {loss_before} after {loss_after} ({time.time() - t0:.1f}s)")
    for c in loss_before:
        assert loss_after[c] < 0.8 * loss_before[c]
    logs = read_metrics(run)
    assert logs[-1]["step"] == 100 and len([k for k in logs[0] if k.startswith("loss_w")]) == 3

    rc = main(["detect", "eval", "--checkpoint", str(run / "last.pt"), "--annotations", str(ann), "--images",
               str(images), "--out", str(tmp_path / "eval"), "--widths", "0.125,0.25", "--calib-images", "10",
               "--mac-size", "72x96"])
    assert rc == 0
    table = json.loads((tmp_path / "eval" / "detection_table.json").read_text())
    rows = table["rows"]
    out = capsys.readouterr().out
    print(out)
    assert "box AP (%)" in out and "mask AP (%)" in out  # AP as a percent, with its unit
    assert {(r["width"], r["resolution"]) for r in rows} == {(0.125, 96), (0.25, 96), (0.125, 64), (0.25, 64)}
    assert all(0.0 <= r["box_ap"] <= 1.0 and 0.0 <= r["mask_ap"] <= 1.0 and r["calibrated"] for r in rows)
    assert max(r["box_ap"] for r in rows) > 0.15  # it learned to find the shapes it was trained on
    assert any(r["pareto"] for r in rows)
    # the shared running statistics (updated at full width only) are wrong for the narrowest sub-network
    with mn.allow_uncalibrated(model):
        uncalibrated = evaluate_coco(model, ds, 0.125, 96)["box_ap"]
    calibrated = next(r["box_ap"] for r in rows if (r["width"], r["resolution"]) == (0.125, 96))
    print(f"box AP at 0.125x96: uncalibrated {uncalibrated:.3f}, calibrated {calibrated:.3f}")
    assert calibrated > uncalibrated + 0.05
    assert (tmp_path / "eval" / "ap_mflops.png").stat().st_size > 0
    assert (tmp_path / "eval" / "ap_backbone_mflops.png").stat().st_size > 0  # the axis the width scales
    assert all(r["backbone_mflops"] == r["backbone_macs"] / 1e6 < r["mflops"] for r in rows)
    assert any(r["pareto_backbone"] for r in rows)
    assert (tmp_path / "eval" / "detection_table.csv").exists()
    # a detection table is a query table ranked by box AP: select and plot read it
    assert table["metric"] == "box_ap"
    budget = sorted(r["mflops"] for r in rows)[1] + 1e-6
    capsys.readouterr()
    assert main(["select", "--table", str(tmp_path / "eval" / "detection_table.json"), "--max-mflops", str(budget),
                 "--json"]) == 0
    best = max((r for r in rows if r["mflops"] <= budget), key=lambda r: (r["box_ap"], -r["macs"]))
    assert json.loads(capsys.readouterr().out)["box_ap"] == best["box_ap"]
    assert main(["select", "--table", str(tmp_path / "eval" / "detection_table.json"), "--max-mflops",
                 str(budget)]) == 0
    assert f"box AP {100 * best['box_ap']:.2f}%" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "eval" / "detection_table.json"), "--out", str(tmp_path / "d.png")]) == 0
    assert (tmp_path / "d.png").stat().st_size > 0


def test_detection_step_accumulates_over_subnets(coco):
    ds = CocoDetection(*coco)
    model = build_detector("vgg16_bn", ds.num_classes, **SMALL).train()
    images, targets = zip(*(ds[i] for i in range(2)))
    lateral = model.backbone.fpn.inner_blocks[0][0]
    narrow_in = (mn.set_width(model, 0.125), lateral.active_channels()[0])[1]
    logs = detection_step(model, list(images), list(targets), [SubNet(0.125, 64, "labels")])
    assert set(logs) == {"loss", "loss_w0.125_s64"}
    assert lateral.weight.grad[:, :narrow_in].abs().sum() > 0 and lateral.weight.grad[:, narrow_in:].abs().sum() == 0
    narrow_grad = lateral.weight.grad.clone()
    logs = detection_step(model, list(images), list(targets), [SubNet(0.25, 96, "labels")])  # no zero_grad: accumulates
    assert lateral.weight.grad[:, narrow_in:].abs().sum() > 0
    assert not torch.equal(lateral.weight.grad[:, :narrow_in], narrow_grad[:, :narrow_in])
    assert logs["loss"] == pytest.approx(logs["loss_w0.250_s96"])


def test_resume_continues_exactly_and_runs_are_never_overwritten(coco, tmp_path, capsys):
    ann, images = coco
    sets = [f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in SMALL.items()]
    sets += ["batch_size=4", "lr=0.01", "warmup_iters=2", "clip_grad_norm=10", "num_subnets=2", "num_workers=0",
             "log_every=1", "device=cpu"]
    straight = train_detector(load_config(None, [*sets, "epochs=2"], annotations=str(ann), images=str(images),
                                          out=str(tmp_path / "a")), progress=False)
    half = train_detector(load_config(None, [*sets, "epochs=1"], annotations=str(ann), images=str(images),
                                      out=str(tmp_path / "b")), progress=False)
    before = (half / "last.pt").read_bytes()
    rc = main(["detect", "train", "--annotations", str(ann), "--images", str(images), "--out", str(half),
               "--set", "device=cpu", *sum((["--set", s] for s in sets), [])])
    assert rc == 2 and "already holds a run" in capsys.readouterr().err
    assert (half / "last.pt").read_bytes() == before
    assert main(["detect", "train", "--resume", str(half / "last.pt"), "--set", "epochs=2"]) == 0
    a, b = detector_from_checkpoint(straight / "last.pt"), detector_from_checkpoint(half / "last.pt")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)
    rows = read_metrics(half)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert load_checkpoint(half / "last.pt")["train_state"]["step"] == 4
    from mutualnet.checkpoint import model_from_checkpoint

    with pytest.raises(mn.MutualNetError, match="holds a detection model"):
        model_from_checkpoint(half / "last.pt")


def test_lr_follows_the_linear_scaling_rule_and_a_diverging_loss_stops_the_run(coco, tmp_path, monkeypatch):
    """0.02 per 16 images becomes 0.0025 at 2 (config.yaml records it); a finite loss that explodes (the issue's
    4.4 -> 499,355) stops the run with one error, as a NaN does, through the classification trainer's guard."""
    import yaml

    import mutualnet.detection.train as dtrain

    assert load_config(None, ["batch_size=2"], annotations="a", images="b").scaled_lr() == pytest.approx(0.0025)
    assert load_config(None, ["batch_size=2", "lr=0.1"], annotations="a", images="b").scaled_lr() == 0.1
    losses = iter([4.4] * 25 + [499_355.0] + [4.4] * 100)

    def fake_step(model, images, targets, subnets, **kwargs):  # the loss a too-high learning rate produced
        return {"loss": next(losses)}

    monkeypatch.setattr(dtrain, "detection_step", fake_step)
    ann, images = coco
    sets = [f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in SMALL.items()]
    cfg = load_config(None, [*sets, "batch_size=2", "epochs=10", "warmup_iters=0", "num_workers=0", "device=cpu"],
                      annotations=str(ann), images=str(images), out=str(tmp_path / "run"))
    with pytest.raises(mn.MutualNetError, match=r"loss diverged to 4.994e\+05, \d+x its lowest running mean .* "
                                                r"at iteration 26 \(epoch 6, lr 0.0025\).*last.pt .* untouched"):
        train_detector(cfg, progress=False)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["lr"] == pytest.approx(0.0025)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_state"]["step"] == 25


def test_divergence_guard():
    from mutualnet.train.guard import DivergenceGuard

    g = DivergenceGuard(factor=5, warmup=3)
    assert [g.check(v) for v in (5.0, 4.0, 3.0, 2.0, 19.0)] == [None] * 5  # noisy but healthy
    assert "diverged to 40" in g.check(40.0)
    assert DivergenceGuard().check(float("inf")) == "loss became inf"


def test_ap_plot_legend_lists_only_what_is_drawn(tmp_path, monkeypatch):
    """No frontier flagged for an axis: no "Pareto" entry in the legend (it would name a line that is not there)."""
    import matplotlib.figure

    from mutualnet.search.plot import plot_detection_table as plot_table

    legends = []
    real = matplotlib.figure.Figure.savefig

    def record(fig, *a, **kw):
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        return real(fig, *a, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    rows = [{"width": w, "resolution": 64, "box_ap": 0.1 * w, "mask_ap": 0.05 * w, "mflops": 10 * w,
             "backbone_mflops": 5 * w, "pareto": w == 1.0, "pareto_backbone": False} for w in (0.5, 1.0)]
    plot_table(rows, tmp_path / "a.png")
    plot_table(rows, tmp_path / "b.png", cost="backbone_mflops")
    assert legends == [["0.5x", "1x", "Pareto (box AP)"], ["0.5x", "1x"]]
