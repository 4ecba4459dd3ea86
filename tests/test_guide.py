"""docs/guide.md, walked as written: every ``bash`` and ``python`` block, in order, on a tiny ImageFolder.

The commands are read from the guide itself, so a guide that drifts from the code fails here. Only the size
of the run is changed, by appending options (later ``--set`` values win), listed in ``SCALE``; latency
budgets depend on the machine and are widened in ``MACHINE``. Commands that install software or run for
minutes are listed in ``ELSEWHERE`` with the test or CI step that runs them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mutualnet.checkpoint import load_checkpoint, save_checkpoint
from mutualnet.cli import main
from mutualnet.models import create_model
from mutualnet.search import QueryTable

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guide.md"
CLASSES = ("cat", "dog", "fox")

# appended to a command (by subcommand) to make it a seconds-long run on the tiny data
_TRAIN = ["--set", "data.batch_size=4", "--set", "data.workers=0", "--set", "train.resolutions=[128, 96]",
          "--set", "run.max_steps=2", "--set", "run.amp=none", "--set", "run.channels_last=false",
          "--set", "run.tensorboard=false", "--set", "run.progress=false", "--set", "run.calib_batches=1"]
SCALE = {
    "train": _TRAIN,
    "train --resume": ["--set", "run.max_steps=3"],
    "search": ["--width-step", "0.25", "--eval-batch-size", "8", "--workers", "0", "--no-progress"],
    "eval": ["--batch-size", "8", "--workers", "0"],
    "latency": ["--repeats", "3", "--warmup", "1", "--no-progress"],
}
MACHINE = {"--max-latency-ms 12": "--max-latency-ms 1000", "latency_ms=5)": "latency_ms=1000)"}
ELSEWHERE = {  # command prefix -> what runs it
    "pip install": "scripts/setup.sh (CI) installs the clone the same way, with every extra",
    "bash scripts/setup.sh": "CI (.ci/run) starts with it",
    "mutualnet demo": "tests/test_demo.py (shrunk) and docs/results.md (measured run)",
}


def guide_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced ``bash`` / ``python`` block of the guide, in order."""
    return [(m[1], m[2]) for m in re.finditer(r"```(bash|python)\n(.*?)```", GUIDE.read_text(), re.S)]


def bash_commands(text: str) -> list[str]:
    """Commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    cmds = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            cmds.append(line)
    return cmds


def make_imagefolder(root: Path, per_class: int = 4, size: int = 40) -> None:
    """root/{train,val}/<class>/*.jpg: one hue per class plus noise (learnable, but it does not matter here)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                img = np.clip(np.eye(3)[c] * 170 + rng.integers(0, 80, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.jpg")


def _scaled(argv: list[str]) -> list[str]:
    sub = argv[0] + (" --resume" if "--resume" in argv else "") + (" --latency" if "--latency" in argv else "")
    return argv + SCALE.get(sub, SCALE.get(argv[0], []))


@pytest.mark.slow
def test_the_guide_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    make_imagefolder(tmp_path / "mydata")
    save_checkpoint("mobilenet_v1_imagenet.pt", create_model("mobilenet_v1", width_range=(0.25, 1.0)), {})
    for name in ("a.jpg", "b.jpg"):
        Image.open(tmp_path / "mydata" / "val" / "dog" / "0.jpg").save(name)

    ran, skipped, used, outputs = [], [], set(), {}
    for lang, text in guide_blocks():
        for old, new in MACHINE.items():
            if old in text:
                text, _ = text.replace(old, new), used.add(old)
        if lang == "python":
            exec(compile(text, str(GUIDE), "exec"), {})
            ran.append("python block")
            continue
        for cmd in bash_commands(text):
            reason = next((why for prefix, why in ELSEWHERE.items() if cmd.startswith(prefix)), None)
            if reason:
                skipped.append(cmd)
                continue
            assert cmd.startswith("mutualnet "), f"the guide runs a command this test cannot: {cmd}"
            argv = _scaled(shlex.split(cmd)[1:])
            capsys.readouterr()
            rc = main(argv)
            out = capsys.readouterr()
            assert rc == 0, f"`{cmd}` failed: {out.err.strip()}"
            ran.append(cmd)
            outputs[argv[0]] = outputs.get(argv[0], "") + out.out
    assert used == set(MACHINE), f"the guide no longer holds {set(MACHINE) - used}: update MACHINE"
    assert len(skipped) == 3 and len(ran) >= 17, (ran, skipped)

    # what the guide promises of the results
    assert re.search(r"^epoch 1/30 \(stopped by run.max_steps at iteration 2\): loss [\d.]+, top-1 widest",
                     outputs["train"], re.M)
    assert "model.init: loaded" in outputs["train"] and "new classifier: classifier.weight" in outputs["train"]
    predicted = [ln.split("\t")[1].split(" ")[0] for ln in outputs["predict"].splitlines()[1:]]
    assert len(predicted) == 2 and set(predicted) <= set(CLASSES)  # class names, not indices
    assert "on the accuracy-latency frontier" in outputs["select"]
    best = load_checkpoint("runs/mine/best.pt")
    assert best["meta"]["class_names"] == list(CLASSES) and best["model_args"]["num_classes"] == 3
    assert best["meta"]["dataset"]["root"] == str(tmp_path / "mydata")  # absolute
    assert load_checkpoint("runs/mine/last.pt")["train_state"]["step"] == 3  # resumed
    calibrated = load_checkpoint("runs/mine/search/calibrated.pt")
    inside = QueryTable.from_dict(calibrated["query_table"])
    beside = QueryTable.load("runs/mine/search/query_table.json")
    assert inside.has_latency and inside.rows == beside.rows  # `latency` updated both copies
    assert beside.meta["calibration"]["images"] == 12  # the images that existed, not the 2,000 asked for
    for f in ("model.onnx", "model.ts", "runs/mine/frontier.png"):
        assert Path(f).stat().st_size > 0
    ts = torch.jit.load("model.ts")
    assert ts(torch.rand(1, 3, 96, 96)).shape == (1, 3)


def test_the_cpu_cost_script_runs_shrunk(tmp_path, capsys):
    """scripts/guide_cpu_cost.py (the guide's measured CPU cost), on 20 tiny images and a 2-configuration search."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("guide_cpu_cost", REPO / "scripts" / "guide_cpu_cost.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    shrink = ["data.batch_size=5", "data.workers=0", "train.resolutions=[40,32]", "run.tensorboard=false"]
    assert script.main(["--out", str(tmp_path), "--per-class", "2", "--val-per-class", "1", "--size", "48x40",
                        *[a for s in shrink for a in ("--set", s)],
                        "--search-args", "--width-step 0.65 --calib-images 5 --resolutions 32 --workers 0"]) == 0
    out = capsys.readouterr().out
    assert "train (1 epoch):" in out and "search:" in out and "images per CPU-second" in out
    assert (tmp_path / "runs" / "mine" / "search" / "query_table.json").exists()
    assert len(list((tmp_path / "mydata" / "train").glob("*/*.jpg"))) == 20
