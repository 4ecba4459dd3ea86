import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mutualnet as mn
from mutualnet.data import FASHION_MNIST_ROOT, build_dataset, dataset_info


def _write_imagefolder(root: Path, classes=("cat", "dog", "fox"), per_class=3, size=(40, 30)):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    return root


def _write_cifar(root: Path, n_per_batch=4, hundred=False):
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    labels_key = "fine_labels" if hundred else "labels"
    n_cls = 100 if hundred else 10
    written = {}
    for name in names:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, n_cls, n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, labels_key: labels}, f)
        written[name] = (data, labels)
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]} if hundred else \
        {"label_names": [f"c{i}" for i in range(10)]}
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f)
    return written


def test_imagefolder_train_and_val_transforms(tmp_path):
    root = _write_imagefolder(tmp_path / "imgs")
    assert dataset_info("imagefolder", root) == mn.data.DatasetInfo("imagefolder", 3, 3, 224)
    train = build_dataset("imagefolder", "train", root=root, input_size=24, color_jitter=0.4)
    val = build_dataset("imagefolder", "val", root=root, input_size=24)
    assert len(train) == 9 and train.classes == ["cat", "dog", "fox"]
    x, y = train[4]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and y == 1
    a, b = val[0][0], val[0][0]
    torch.testing.assert_close(a, b)  # evaluation transform is deterministic
    # Resize(24 / 0.875 = 27) of a 40x30 image -> 36x27, then centre crop 24: check against a manual recipe
    img = Image.open(root / "val" / "cat" / "0.png").convert("RGB").resize((36, 27), Image.BILINEAR)
    arr = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    crop = arr[:, 2:26, 6:30]
    mean, std = torch.tensor(mn.data.IMAGENET_MEAN).view(3, 1, 1), torch.tensor(mn.data.IMAGENET_STD).view(3, 1, 1)
    assert ((a - (crop - mean) / std).abs().mean()) < 0.05


def test_imagefolder_errors(tmp_path):
    with pytest.raises(mn.MutualNetError, match="needs a root"):
        build_dataset("imagefolder", "train", input_size=32)
    with pytest.raises(mn.MutualNetError, match="not found"):
        build_dataset("imagefolder", "train", root=tmp_path / "nope", input_size=32)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(mn.MutualNetError, match="no class folders"):
        dataset_info("imagefolder", tmp_path / "empty")
    root = _write_imagefolder(tmp_path / "imgs", per_class=1)
    (root / "val" / "cat" / "0.png").write_bytes(b"not a png")
    ds = build_dataset("imagefolder", "val", root=root, input_size=16)
    with pytest.raises(mn.MutualNetError, match="cannot read image .*0.png"):
        ds[0]
    with pytest.raises(mn.MutualNetError, match="unknown dataset"):
        build_dataset("mnist3d", "train", input_size=32)
    with pytest.raises(mn.MutualNetError, match="unknown split"):
        build_dataset("synthetic", "test", input_size=32)


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_reads_pickle_batches(tmp_path, hundred):
    written = _write_cifar(tmp_path, hundred=hundred)
    name = "cifar100" if hundred else "cifar10"
    val = build_dataset(name, "val", root=tmp_path)
    data, labels = written["test" if hundred else "test_batch"]
    assert len(val) == 4 and val.targets == labels
    x, y = val[2]
    assert x.shape == (3, 32, 32) and y == labels[2]
    mean, std = mn.data.preprocess.DATASET_STATS[name]
    raw = torch.from_numpy(data[2].reshape(3, 32, 32)).float() / 255
    torch.testing.assert_close(x, (raw - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))
    train = build_dataset(name, "train", root=tmp_path / ("cifar-100-python" if hundred else "cifar-10-batches-py"))
    assert len(train) == (4 if hundred else 20)
    assert train[0][0].shape == (3, 32, 32)
    assert build_dataset(name, "val", root=tmp_path, input_size=24)[0][0].shape == (3, 24, 24)


def test_cifar_errors(tmp_path):
    with pytest.raises(mn.MutualNetError, match="needs --data-root"):
        build_dataset("cifar10", "train")
    with pytest.raises(mn.MutualNetError, match="files missing.*data_batch_1"):
        build_dataset("cifar10", "train", root=tmp_path)
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(mn.MutualNetError, match="not a valid cifar10 batch"):
        build_dataset("cifar10", "val", root=tmp_path)


def test_small_image_augmentation_is_crop_and_flip():
    images = torch.arange(2 * 1 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8)
    ds = mn.data.TensorImages(images, torch.tensor([0, 1]), mean=(0.0,), std=(1 / 255,), train=True, padding=2)
    seen = set()
    for _ in range(60):
        x, _ = ds[1]
        assert x.shape == (1, 8, 8)
        # every output is a shifted (and possibly mirrored) window of the zero-padded image
        padded = torch.nn.functional.pad(images[1].float(), [2] * 4)
        windows = {(dy, dx): padded[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)}
        ok = [(dy, dx, f) for (dy, dx), w in windows.items() for f in (False, True)
              if torch.equal(x, w.flip(-1) if f else w)]
        assert ok
        seen.add(ok[0])
    assert len(seen) > 10 and {f for *_, f in seen} == {False, True}
    plain = mn.data.TensorImages(images, torch.tensor([0, 1]), mean=(0.0,), std=(1 / 255,), train=False)
    assert torch.equal(plain[1][0], images[1].float())


def test_batched_augmentation_cuts_the_same_windows_as_one_at_a_time():
    images = torch.arange(3 * 2 * 6 * 7, dtype=torch.uint8).view(3, 2, 6, 7)
    ds = mn.data.TensorImages(images, torch.tensor([4, 5, 6]), mean=(0.0, 0.0), std=(1 / 255, 1 / 255),
                              train=True, padding=2)
    batch = ds.__getitems__([2, 0, 2] * 40)
    assert [y for _, y in batch] == [6, 4, 6] * 40
    seen = set()
    for (x, _), i in zip(batch, [2, 0, 2] * 40):
        assert x.shape == (2, 6, 7)
        padded = torch.nn.functional.pad(images[i].float(), [2] * 4)
        ok = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
              if torch.equal(x, padded[:, dy:dy + 6, dx:dx + 7].flip(-1) if f else padded[:, dy:dy + 6, dx:dx + 7])]
        assert ok
        seen.add(ok[0])
    assert len(seen) > 20 and {f for *_, f in seen} == {False, True}
    plain = mn.data.TensorImages(images, torch.tensor([4, 5, 6]), mean=(0.0, 0.0), std=(1 / 255, 1 / 255))
    assert all(torch.equal(x, images[i].float()) for (x, _), i in zip(plain.__getitems__([1, 2]), [1, 2]))


def test_synthetic_splits_share_classes_not_samples():
    train = build_dataset("synthetic", "train", input_size=16, synthetic_length=8, num_classes=3)
    val = build_dataset("synthetic", "val", input_size=16, synthetic_length=8, num_classes=3)
    assert len(train) == len(val) == 8 and train[0][0].shape == (3, 16, 16)
    torch.testing.assert_close(train.templates, val.templates)
    assert not torch.equal(train[0][0], val[0][0])
    assert dataset_info("synthetic").num_classes == 10


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="Debian package fashion-mnist not installed")
def test_real_fashion_mnist():
    assert dataset_info("fashion_mnist") == mn.data.DatasetInfo("fashion_mnist", 10, 1, 28)
    val = build_dataset("fashion_mnist", "val")
    assert len(val) == 10_000 and sorted(set(val.targets)) == list(range(10))
    xs = torch.stack([val[i][0] for i in range(0, 10_000, 10)])
    assert xs.shape == (1000, 1, 28, 28)
    assert abs(float(xs.mean())) < 0.1 and abs(float(xs.std()) - 1) < 0.1  # normalised with the train stats
    train = build_dataset("fashion_mnist", "train")
    assert len(train) == 60_000 and train[0][0].shape == (1, 28, 28)


def test_fashion_mnist_from_a_given_path(tmp_path):
    import gzip
    import struct
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "raw").mkdir()
    with gzip.open(tmp_path / "raw" / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBB3I", 0, 8, 3, 5, 28, 28) + imgs.tobytes())
    (tmp_path / "raw" / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">HBB1I", 0, 8, 1, 5) + bytes([3] * 5))
    val = build_dataset("fashion_mnist", "val", root=tmp_path, input_size=32)
    assert len(val) == 5 and val[0][0].shape == (1, 32, 32) and val[0][1] == 3
    with pytest.raises(mn.MutualNetError, match="train-images-idx3-ubyte.* not found"):
        build_dataset("fashion_mnist", "train", root=tmp_path)
    (tmp_path / "raw" / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">HBB1I", 0, 8, 1, 9) + bytes(5))
    with pytest.raises(mn.MutualNetError, match="truncated or malformed"):
        build_dataset("fashion_mnist", "val", root=tmp_path)
    with pytest.raises(mn.MutualNetError, match="directory .* not found"):
        build_dataset("fashion_mnist", "val", root=tmp_path / "nope")


def test_imagefolder_decoders_give_the_same_pipeline(tmp_path):
    """torchvision.io (the default) and PIL decode to the same pixels; the transforms then run on either."""
    from PIL import Image

    from mutualnet.data import datasets

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(2):
            d = tmp_path / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(2):
                arr = (torch.rand(40, 52, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.jpg", quality=95)
    Image.fromarray((torch.rand(30, 30, generator=g) * 255).to(torch.uint8).numpy()).save(tmp_path / "val/c0/g.png")
    sets = {dec: datasets.build_dataset("imagefolder", "val", root=tmp_path, input_size=32, decoder=dec)
            for dec in ("torchvision", "pil")}
    assert len(sets["pil"]) == len(sets["torchvision"]) == 5
    for i in range(5):  # libjpeg-turbo in both: same pixels; resizing tensors vs PIL differs by rounding only
        a, b = sets["torchvision"][i][0], sets["pil"][i][0]
        assert a.shape == b.shape == (3, 32, 32) and (a - b).abs().mean() < 0.05
    train = datasets.build_dataset("imagefolder", "train", root=tmp_path, input_size=24, color_jitter=0.4)
    assert train[0][0].shape == (3, 24, 24) and train[0][0].dtype == torch.float32
    (tmp_path / "val/c1/bad.jpg").write_bytes((tmp_path / "val/c1/0.jpg").read_bytes()[:200])  # truncated
    with pytest.raises(mn.MutualNetError, match="cannot read image .*bad.jpg"):
        [x for x in datasets.build_dataset("imagefolder", "val", root=tmp_path, input_size=32)]
    with pytest.raises(mn.MutualNetError, match="unknown image decoder"):
        datasets.build_dataset("imagefolder", "val", root=tmp_path, decoder="cv2")
