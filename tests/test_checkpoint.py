import pytest
import torch

import mutualnet as mn
from mutualnet.checkpoint import atomic_save, load_checkpoint, model_from_checkpoint, save_checkpoint


def test_roundtrip_rebuilds_model_with_calibrated_stats(tmp_path):
    model = mn.create_model("resnet20_cifar", width_range=(0.5, 1.0), num_classes=4).eval()
    bn = model.bn1
    bn.calibrated["w0.500_r32"] = (torch.ones(8), torch.full((8,), 2.0))
    path = save_checkpoint(tmp_path / "c.pt", model, {"mode": "mutual", "resolutions": [32, 24]})
    ckpt = load_checkpoint(path)
    assert ckpt["meta"]["mode"] == "mutual" and ckpt["model_args"]["width_range"] == [0.5, 1.0]
    again = model_from_checkpoint(ckpt).eval()
    assert again.width_range == (0.5, 1.0) and again.num_classes == 4
    assert "w0.500_r32" in again.bn1.calibrated
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again(x), model(x))


def test_refuses_foreign_corrupt_and_missing(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(mn.MutualNetError, match="not a mutualnet checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    with pytest.raises(mn.MutualNetError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.pt")
    (tmp_path / "text.pt").write_text("root:x:0:0:root:/root:/bin/bash\n")  # any text file
    with pytest.raises(mn.MutualNetError, match="corrupt"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(mn.MutualNetError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "mutualnet", "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(mn.MutualNetError, match="corrupt or not a PyTorch file"):
        load_checkpoint(tmp_path / "evil.pt")


def test_mismatched_weights_are_named(tmp_path):
    model = mn.create_model("resnet20_cifar")
    path = save_checkpoint(tmp_path / "c.pt", model)
    ckpt = load_checkpoint(path)
    ckpt["model"]["fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(mn.MutualNetError, match="fc.weight"):
        model_from_checkpoint(ckpt)


def test_atomic_save_keeps_old_file_when_save_fails(tmp_path):
    path = tmp_path / "c.pt"
    atomic_save({"v": 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save({"v": Boom()}, path)
    assert torch.load(path, weights_only=True) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = atomic_save({"v": 1}, tmp_path / "c.pt")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
