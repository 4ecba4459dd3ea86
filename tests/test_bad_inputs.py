"""The hostile-user matrix (issue 13): every bad input is one ``error:`` line and exit status 2, no crafted file
runs code, and no file that existed before is changed.

Each case runs ``mutualnet.cli.main`` in-process on a shared folder of small assets (a checkpoint, a query table,
a recipe, and crafted bad files) and compares a hash of every file in it before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from deploy_helpers import table_rows, trained_like
from mutualnet.checkpoint import checkpoint_dict, save_checkpoint
from mutualnet.cli import main
from mutualnet.search import QueryTable

MODEL = "resnet20_cifar"


class Payload:
    """Unpickling this creates the file ``MARKER`` names: proof that a reader ran code from data."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (no pixel data: a reader must refuse it before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _coco(images_ok: bool = True, **ann) -> dict:
    base = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0,
            "segmentation": [[1, 1, 5, 1, 5, 5]]}
    return {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}],
            "categories": [{"id": 1, "name": "thing"}], "annotations": [base | ann]}


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    a = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    model = trained_like(MODEL, width_range=(0.5, 1.0), num_classes=4)
    meta = {"resolutions": [16, 12], "mode": "mutual", "dataset": {"name": "synthetic", "synthetic_length": 16}}
    save_checkpoint(a / "ckpt.pt", model, meta)
    rows = table_rows(model, [(0.5, 12), (1.0, 16)])
    QueryTable(rows=rows).save(a / "table.json")
    good = checkpoint_dict(model, meta)
    torch.save(good | {"model_args": [1, 2]}, a / "ckpt_args_list.pt")
    torch.save(good | {"model_name": 7}, a / "ckpt_name_int.pt")
    torch.save(good | {"model_args": good["model_args"] | {"num_classes": 1e10}}, a / "ckpt_classes_huge.pt")
    torch.save(good | {"meta": meta | {"resolutions": [10**6]}}, a / "ckpt_res_huge.pt")
    recipe = {"model": {"name": MODEL, "width_range": [0.5, 1.0]},
              "data": {"name": "synthetic", "synthetic_length": 16, "batch_size": 8, "workers": 0},
              "train": {"resolutions": [16, 12], "epochs": 1},
              "run": {"out": str(a / "run"), "device": "cpu", "threads": 1, "progress": False, "tensorboard": False}}
    (a / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (a / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    nan_rows = [dict(r) for r in rows]
    nan_rows[0]["top1"] = float("nan")
    (a / "nan_top1.json").write_text(json.dumps({"format": "mutualnet-query-table", "version": 1, "meta": {},
                                                 "rows": nan_rows}))
    all_nan = [dict(r, top1=float("nan"), top5=float("nan")) for r in rows]
    (a / "all_nan.json").write_text(json.dumps({"format": "mutualnet-query-table", "version": 1, "meta": {},
                                                "rows": all_nan}))
    out_of_range = [dict(r) for r in rows] + [dict(rows[-1], width=7.0, top1=99.0)]
    (a / "width_out_of_range.json").write_text(json.dumps({"format": "mutualnet-query-table", "version": 1,
                                                           "meta": {"model_args": {"width_range": [0.5, 1.0]}},
                                                           "rows": out_of_range}))
    (a / "inf_macs.json").write_text(json.dumps({"format": "mutualnet-query-table", "version": 1, "meta": {},
                                                 "rows": [dict(rows[0], macs=float("inf"))]}))
    (a / "unknown_field.json").write_text(json.dumps({"format": "mutualnet-query-table", "version": 1, "meta": {},
                                                      "rows": [dict(rows[0], evil=1)]}))
    depth = 200_000
    (a / "deep.json").write_text('{"format": "mutualnet-query-table", "rows": [], "meta": ' + "[" * depth
                                 + "]" * depth + "}")
    fm = a / "fmnist_bad"
    fm.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (fm / f"{stem}.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(64))  # a gzip header, then garbage
    coco = a / "coco"
    coco.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(coco / "a.png")
    (coco / "unknown_cat.json").write_text(json.dumps(_coco(category_id=99)))
    (coco / "string_bbox.json").write_text(json.dumps(_coco(bbox="1,1,4,4")))
    (coco / "bad_seg.json").write_text(json.dumps(_coco(segmentation=[[1, "x", 3]])))
    (coco / "nan_bbox.json").write_text(json.dumps(_coco(bbox=[1, 1, float("nan"), 4])))
    bad_image = _coco()
    bad_image["images"][0]["file_name"] = "../../etc/passwd"
    (coco / "escape.json").write_text(json.dumps(bad_image))
    (a / "huge.png").write_bytes(_png_header(20000, 20000))
    os.mkfifo(a / "pipe.png")  # predict must refuse it, not block reading it forever
    (a / "text.png").write_text("not an image")
    return a


ck, tb, rc = "{a}/ckpt.pt", "{a}/table.json", "{a}/recipe.yaml"
TRAIN = ["train", "--config", rc]
BAD_INPUTS = {
    # numbers at the command line
    "profile-huge-resolution": ["profile", "--model", MODEL, "--resolution", "1000000"],
    "calibrate-huge-resolution": ["calibrate", "--checkpoint", ck, "--width", "1", "--resolution", "1000000",
                                  "--out", "{a}/new.pt"],
    "eval-huge-resolution": ["eval", "--checkpoint", ck, "--config", "1.0,1000000"],
    "eval-nan-width": ["eval", "--checkpoint", ck, "--config", "nan,16"],
    "export-huge-resolution": ["export", "--checkpoint", ck, "--resolution", "1000000", "--out", "{a}/x.pt"],
    "profile-inf-width-range": ["profile", "--model", MODEL, "--width-range", "0.5,inf"],
    "profile-nan-width-range": ["profile", "--model", MODEL, "--width-range", "nan,1"],
    "profile-nan-width": ["profile", "--model", MODEL, "--width", "nan"],
    "search-nan-width-step": ["search", "--checkpoint", ck, "--out", "{a}/s", "--width-step", "nan"],
    "search-zero-width-step": ["search", "--checkpoint", ck, "--out", "{a}/s", "--width-step", "0"],
    "profile-threads-0": ["profile", "--model", MODEL, "--latency", "--threads", "0"],
    "profile-batch-size-negative": ["profile", "--model", MODEL, "--latency", "--batch-size", "-1"],
    "latency-repeats-0": ["latency", "--table", tb, "--checkpoint", ck, "--repeats", "0"],
    "select-nan-budget": ["select", "--table", tb, "--max-mflops", "nan"],
    "predict-topk-0": ["predict", "--checkpoint", ck, "--topk", "0", "{a}/huge.png"],
    "profile-in-chans-abc": ["profile", "--model", MODEL, "--in-chans", "abc"],
    "profile-num-classes-huge": ["profile", "--model", MODEL, "--num-classes", "10000000000"],
    "search-seed-negative": ["search", "--checkpoint", ck, "--out", "{a}/s", "--seed", "-1"],
    "compare-bad-singles": ["compare", "--singles", "1.0@inf"],
    "detect-eval-bad-mac-size": ["detect", "eval", "--checkpoint", ck, "--annotations", "x", "--images", "x",
                                 "--out", "x", "--mac-size", "0x0"],
    # config files and --set values
    "train-binary-yaml": ["train", "--config", "{a}/binary.yaml"],
    "train-momentum-negative": [*TRAIN, "--set", "optim.momentum=-1"],
    "train-lr-negative": [*TRAIN, "--set", "optim.lr=-1"],
    "train-lr-nan": [*TRAIN, "--set", "optim.lr=.nan"],
    "train-lr-inf": [*TRAIN, "--set", "optim.lr=.inf"],
    "train-workers-negative": [*TRAIN, "--set", "data.workers=-1"],
    "train-threads-negative": [*TRAIN, "--set", "run.threads=-1"],
    "train-calib-batches-0": [*TRAIN, "--set", "run.calib_batches=0"],
    "train-in-chans-abc": [*TRAIN, "--set", "model.args.in_chans=abc"],
    "train-width-range-inf": [*TRAIN, "--set", "model.width_range=[0.5,.inf]"],
    "train-resolution-huge": [*TRAIN, "--set", "train.resolutions=[1000000]"],
    "train-batch-size-string": [*TRAIN, "--set", "data.batch_size=abc"],
    "train-seed-negative": [*TRAIN, "--set", "run.seed=-1"],
    "train-corrupt-gz-idx": [*TRAIN, "--set", "data.name=fashion_mnist", "--set", "data.root={a}/fmnist_bad",
                             "--set", "model.args.in_chans=1"],
    "detect-epochs-abc": ["detect", "train", "--annotations", "{a}/coco/unknown_cat.json", "--images", "{a}/coco",
                          "--out", "{a}/det", "--set", "epochs=abc"],
    "detect-lr-negative": ["detect", "train", "--annotations", "x", "--images", "x", "--lr", "-1"],
    "detect-set-lr-negative": ["detect", "train", "--annotations", "x", "--images", "x", "--set", "lr=-1"],
    # COCO annotations, validated before anything is built
    "detect-unknown-category": ["detect", "eval", "--checkpoint", ck, "--annotations", "{a}/coco/unknown_cat.json",
                                "--images", "{a}/coco", "--out", "{a}/det"],
    "detect-string-bbox": ["detect", "eval", "--checkpoint", ck, "--annotations", "{a}/coco/string_bbox.json",
                           "--images", "{a}/coco", "--out", "{a}/det"],
    "detect-bad-segmentation": ["detect", "eval", "--checkpoint", ck, "--annotations", "{a}/coco/bad_seg.json",
                                "--images", "{a}/coco", "--out", "{a}/det"],
    "detect-nan-bbox": ["detect", "eval", "--checkpoint", ck, "--annotations", "{a}/coco/nan_bbox.json",
                        "--images", "{a}/coco", "--out", "{a}/det"],
    "detect-path-escape": ["detect", "eval", "--checkpoint", ck, "--annotations", "{a}/coco/escape.json",
                           "--images", "{a}/coco", "--out", "{a}/det"],
    # checkpoints that unpickle safely but hold the wrong types
    "export-model-args-list": ["export", "--checkpoint", "{a}/ckpt_args_list.pt", "--out", "{a}/x.pt"],
    "export-model-name-int": ["export", "--checkpoint", "{a}/ckpt_name_int.pt", "--out", "{a}/x.pt"],
    "export-num-classes-1e10": ["export", "--checkpoint", "{a}/ckpt_classes_huge.pt", "--out", "{a}/x.pt"],
    "search-meta-resolution-huge": ["search", "--checkpoint", "{a}/ckpt_res_huge.pt", "--out", "{a}/s"],
    # images, tables
    "predict-20000x20000-png": ["predict", "--checkpoint", ck, "--table", tb, "{a}/huge.png"],
    "predict-fifo": ["predict", "--checkpoint", ck, "--table", tb, "{a}/pipe.png"],
    "predict-text-as-png": ["predict", "--checkpoint", ck, "--table", tb, "{a}/text.png"],
    "select-deep-json": ["select", "--table", "{a}/deep.json", "--max-mflops", "100"],
    "select-nan-top1": ["select", "--table", "{a}/nan_top1.json", "--max-mflops", "100"],
    "select-all-nan": ["select", "--table", "{a}/all_nan.json", "--max-mflops", "100"],
    "plot-nan-table": ["plot", "{a}/nan_top1.json", "--out", "{a}/p.png"],
    "select-width-outside-model-range": ["select", "--table", "{a}/width_out_of_range.json", "--max-mflops", "100"],
    "select-inf-macs": ["select", "--table", "{a}/inf_macs.json", "--max-mflops", "100"],
    "select-unknown-field": ["select", "--table", "{a}/unknown_field.json", "--max-mflops", "100"],
    "export-nan-table": ["export", "--checkpoint", ck, "--table", "{a}/nan_top1.json", "--max-mflops", "100",
                         "--out", "{a}/x.pt"],
}


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".mutualnet.lock"}


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    # progress bars (tqdm, on stderr) of work done before the failure are not error output
    return code, [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]


def assert_one_error_line(code: int, lines: list[str]) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0]


@pytest.mark.parametrize("argv", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_error_line_and_changes_nothing(assets, argv, capsys):
    before = snapshot(assets)
    code, lines = run_cli([x.format(a=assets) for x in argv], capsys)
    assert_one_error_line(code, lines)
    assert snapshot(assets) == before


# -- crafted pickles: no surface that reads a file runs code from it ---------------------------------------
def _cifar(folder: Path, evil_in: str, marker: Path) -> Path:
    Payload.marker = str(marker)
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), "labels": [0, 1] * 4}
        if name == evil_in:
            batch["data"] = Payload()
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    if evil_in == "batches.meta":
        meta["label_names"] = Payload()
    (root / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


SURFACES = {
    "export": ["export", "--checkpoint", "{evil}", "--out", "{a}/x.pt"],
    "calibrate": ["calibrate", "--checkpoint", "{evil}", "--width", "1", "--resolution", "16", "--out", "{a}/c.pt"],
    "search": ["search", "--checkpoint", "{evil}", "--out", "{a}/s"],
    "latency": ["latency", "--table", tb, "--checkpoint", "{evil}"],
    "predict": ["predict", "--checkpoint", "{evil}", "{a}/huge.png"],
    "train-resume": ["train", "--resume", "{evil}"],
    "train-init": [*TRAIN, "--set", "model.init={evil}", "--set", "run.out={a}/init_run"],
    "convert-released": ["convert", "--released", "{evil}", "--out", "{a}/c.pt"],
    "convert-torchvision": ["convert", "--torchvision", "{evil}", "--model", MODEL, "--out", "{a}/c.pt"],
    "detect-eval": ["detect", "eval", "--checkpoint", "{evil}", "--annotations", "{a}/coco/ok.json", "--images",
                    "{a}/coco", "--out", "{a}/det"],
    "detect-resume": ["detect", "train", "--resume", "{evil}"],
    "train-cifar-batch": [*TRAIN, "--set", "data.name=cifar10", "--set", "data.root={cifar}/batch",
                          "--set", "run.out={a}/cifar_run"],
    "train-cifar-meta": [*TRAIN, "--set", "data.name=cifar10", "--set", "data.root={cifar}/meta",
                         "--set", "run.out={a}/cifar_run"],
    "search-cifar-batch": ["search", "--checkpoint", ck, "--out", "{a}/s", "--dataset", "cifar10", "--data-root",
                           "{cifar}/batch"],
}


@pytest.fixture(scope="module")
def evil(assets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evil")
    marker = folder / "PWNED"
    Payload.marker = str(marker)
    torch.save({"format": "mutualnet", "version": 1, "model_name": MODEL, "model_args": {}, "model": {},
                "meta": Payload()}, folder / "evil.pt")
    (assets / "coco" / "ok.json").write_text(json.dumps(_coco()))
    _cifar(folder / "batch", "data_batch_1", marker)
    _cifar(folder / "meta", "batches.meta", marker)
    return folder, marker


@pytest.mark.parametrize("argv", SURFACES.values(), ids=SURFACES.keys())
def test_crafted_pickle_never_runs(assets, evil, argv, capsys):
    folder, marker = evil
    code, lines = run_cli([x.format(a=assets, evil=folder / "evil.pt", cifar=folder) for x in argv], capsys)
    assert not marker.exists(), "a crafted file ran code"
    assert_one_error_line(code, lines)


def test_crafted_search_statistics_are_recomputed_not_run(evil):
    from mutualnet.search.build import _read_stats

    folder, marker = evil
    assert _read_stats(folder / "evil.pt") == {}
    assert not marker.exists()


def test_crafted_export_never_runs(evil):
    from mutualnet.deploy.export import load_exported
    from mutualnet.errors import MutualNetError

    folder, marker = evil
    with pytest.raises(MutualNetError, match="corrupt or not a PyTorch file"):
        load_exported(folder / "evil.pt")
    assert not marker.exists()


# -- read-only and full disks: one line naming the path, nothing left behind ----------------------------
def _mount(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    """A read-only folder and a full one (tmpfs mounts; needs root, else the tests skip)."""
    base = tmp_path_factory.mktemp("disks")
    ro, full = base / "ro", base / "full"
    if not _mount(ro, "ro,size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        if not _mount(full, "size=256k"):
            pytest.skip("cannot mount a tmpfs here (needs root)")
        try:
            with open(full / "filler", "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 4096)
        except OSError:  # full
            pass
        yield {"ro": ro, "full": full}
    finally:
        for m in (ro, full):
            subprocess.run(["umount", str(m)], capture_output=True)


OUTPUTS = {
    "export-pt": ["export", "--checkpoint", ck, "--out", "{d}/x.pt"],
    "export-torchscript": ["export", "--checkpoint", ck, "--format", "torchscript", "--out", "{d}/x.ts"],
    "export-onnx": ["export", "--checkpoint", ck, "--format", "onnx", "--out", "{d}/x.onnx"],
    "calibrate": ["calibrate", "--checkpoint", ck, "--width", "0.5", "--resolution", "12", "--calib-images", "8",
                  "--batch-size", "8", "--out", "{d}/c.pt"],
    "latency": ["latency", "--table", tb, "--checkpoint", ck, "--warmup", "0", "--repeats", "1",
                "--out", "{d}/t.json"],
    "convert": ["convert", "--torchvision", "{a}/sd.pt", "--model", MODEL, "--out", "{d}/c.pt"],
    "plot": ["plot", tb, "--out", "{d}/p.png"],
    "search": ["search", "--checkpoint", ck, "--out", "{d}/s", "--widths", "1,1", "--resolutions", "16",
               "--calib-images", "8", "--val-images", "8", "--eval-batch-size", "8", "--no-progress"],
    "train": [*TRAIN, "--set", "run.out={d}/run"],
}


@pytest.mark.parametrize("kind", ["ro", "full"])
@pytest.mark.parametrize("argv", OUTPUTS.values(), ids=OUTPUTS.keys())
def test_unwritable_output_is_one_line_naming_the_path(assets, disks, kind, argv, capsys):
    d = disks[kind]
    if not (assets / "sd.pt").exists():
        torch.save(trained_like(MODEL, steps=0).state_dict(), assets / "sd.pt")
    before, inside = snapshot(assets), snapshot(d)
    code, lines = run_cli([x.format(a=assets, d=d) for x in argv], capsys)
    assert_one_error_line(code, lines)
    assert str(d) in lines[0] and ("Read-only" in lines[0] or "No space" in lines[0]), lines
    assert snapshot(assets) == before and snapshot(d) == inside  # no temp file left, nothing changed


def test_query_table_json_is_written_first_and_no_csv_outlives_it(assets, tmp_path, monkeypatch):
    """A disk filling while a table is saved never leaves a CSV without (or newer than) its JSON."""
    import mutualnet.search.table as table_mod
    from mutualnet.errors import MutualNetError

    table = QueryTable.load(assets / "table.json")
    real = table_mod.atomic_write_text
    fail_on = {"suffix": ".json"}

    def full_disk(path, text):
        if Path(path).suffix == fail_on["suffix"]:
            raise MutualNetError(f"cannot write {path}: No space left on device")
        return real(path, text)

    monkeypatch.setattr(table_mod, "atomic_write_text", full_disk)
    with pytest.raises(MutualNetError, match="No space"):
        table.save(tmp_path / "query_table.json")
    assert not (tmp_path / "query_table.csv").exists()  # the CSV was not written before its JSON
    (tmp_path / "query_table.csv").write_text("stale\n")
    fail_on["suffix"] = ".csv"
    with pytest.raises(MutualNetError, match="No space"):
        table.save(tmp_path / "query_table.json")
    assert QueryTable.load(tmp_path / "query_table.json").rows == table.rows  # the source of truth is complete
    assert not (tmp_path / "query_table.csv").exists()  # and no stale CSV disagrees with it


def _png16(arr: np.ndarray, path: Path) -> Path:
    """A 16-bit PNG of ``arr`` (H x W grey or H x W x 3 colour, uint16), written by hand (PIL writes 16-bit grey
    only)."""
    h, w = arr.shape[:2]
    colour = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\0" + arr[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_is_scaled_not_clipped(tmp_path, channels, capsys):
    """A 16-bit PNG predicts as its 8-bit twin (its high byte) for 1- and 3-channel models; clipping to 0/255
    would make it a different, nearly black-and-white image."""
    from mutualnet.data import preprocessing_for
    from mutualnet.io import read_image, read_image_tensor

    rng = np.random.default_rng(0)
    shape = (16, 16) if channels == 1 else (16, 16, 3)
    high = rng.integers(0, 256, shape).astype(np.uint16)
    deep = _png16(high * 256 + rng.integers(0, 256, shape).astype(np.uint16), tmp_path / "deep.png")
    Image.fromarray(high.astype(np.uint8)).save(tmp_path / "twin.png")
    mode = "L" if channels == 1 else "RGB"
    assert np.array_equal(np.asarray(read_image(deep, mode)), np.asarray(read_image(tmp_path / "twin.png", mode)))
    assert torch.equal(read_image_tensor(deep), read_image_tensor(tmp_path / "twin.png"))
    model = trained_like(MODEL, width_range=(0.5, 1.0), num_classes=4, in_chans=channels)
    model.preprocessing = preprocessing_for("fashion_mnist" if channels == 1 else "imagefolder", 16)
    save_checkpoint(tmp_path / "ckpt.pt", model, {"resolutions": [16], "mode": "mutual"})
    QueryTable(rows=table_rows(model, [(1.0, 16)])).save(tmp_path / "table.json")
    outs = []
    for img in ("deep.png", "twin.png"):
        assert main(["predict", "--checkpoint", str(tmp_path / "ckpt.pt"), "--table", str(tmp_path / "table.json"),
                     "--topk", "4", "--json", str(tmp_path / img)]) == 0
        outs.append(json.loads(capsys.readouterr().out)["predictions"][0]["top"])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("loop", ["self", "pair"])
def test_imagefolder_symlink_loop_is_refused_naming_the_link(assets, tmp_path, loop, capsys):
    """A folder symlink back to an ancestor (directly, or through a second link) would list one class over and
    over; training refuses the tree, naming the link, before reading an image."""
    root = tmp_path / "folder"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / split / c / "x.png")
    if loop == "self":
        (root / "train" / "a" / "again").symlink_to("..", target_is_directory=True)
    else:
        (root / "train" / "a" / "to_b").symlink_to("../b", target_is_directory=True)
        (root / "train" / "b" / "to_a").symlink_to("../a", target_is_directory=True)
    code, lines = run_cli([*TRAIN[:1], "--config", str(assets / "recipe.yaml"), "--set", "data.name=imagefolder",
                           "--set", f"data.root={root}", "--set", f"run.out={tmp_path / 'run'}"], capsys)
    assert_one_error_line(code, lines)
    assert "symlink loop" in lines[0] and str(root / "train") in lines[0], lines
