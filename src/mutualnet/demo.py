"""The main job: MutualNet on real data (Fashion-MNIST), from training to a query table and a plot.

``mutualnet demo`` trains a small slimmable ResNet over widths [0.5, 1.0] x resolutions {28, 24, 20, 16}
with width-resolution mutual learning, re-estimates BatchNorm statistics for every configuration, builds
the query table (top-1 and MFLOPs of every width in steps of 0.05 x every resolution), prints it and draws
the accuracy-MFLOPs frontier. It took 24.7 min on the 2 CPU cores of the CI machine (docs/results.md).

Nothing is lost when it is interrupted: run it again with the same ``--out`` and training resumes from
its last checkpoint, the search continues where it stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .errors import MutualNetError
from .search import QueryTable, search_checkpoint
from .search.plot import plot_tables
from .train import train
from .train.config import load_config

__all__ = ["DEMO_RECIPE", "DemoResult", "run_demo", "run_pipeline", "make_recipe", "format_table",
           "training_finished"]

# The demo's recipe (also usable as a YAML file: `mutualnet train --config` with these sections).
DEMO_RECIPE: dict = {
    "model": {"name": "resnet20_cifar", "width_range": [0.5, 1.0], "num_classes": 10, "args": {"in_chans": 1}},
    # 5,000 of the 60,000 training images held out: validation and the query table (selection) use them,
    # the test set is only reported (mutualnet.data.splits); --set data.holdout=0 selects on the test set
    "data": {"name": "fashion_mnist", "batch_size": 128, "workers": 0, "crop_padding": 0, "holdout": 5000},
    "train": {"mode": "mutual", "num_subnets": 4, "resolutions": [28, 24, 20, 16], "epochs": 3},
    "optim": {"lr": 0.2, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "warmup_epochs": 0.2},
    "run": {"seed": 0, "device": "auto", "save_every": 100, "val_every": 1, "tensorboard": True,
            "channels_last": True},  # ~10% faster convolutions on CPU
}


@dataclass
class DemoResult:
    run_dir: Path
    search_dir: Path
    table: QueryTable
    plot: Path
    seconds: float

    @property
    def full(self) -> dict:
        """The row of the full configuration (widest, highest resolution)."""
        return max(self.table.rows, key=lambda r: (r["width"], r["resolution"]))

    def whole_run_seconds(self) -> tuple[float, float]:
        """Seconds of training and of the search over every invocation of the run (a resumed demo's ``seconds``
        covers only its own part): the trainer's and the search's own clocks, which survive resumes."""
        train_s = float(load_checkpoint(self.run_dir / "last.pt").get("train_state", {}).get("elapsed_s", 0.0))
        timing = self.table.meta.get("timing_s") or {}
        search_s = sum(float(timing.get(k, 0.0)) for k in ("calib_s", "eval_s", "profile_s", "latency_s",
                                                            "test_eval_s"))
        return train_s, search_s

    def describe(self) -> list[str]:
        """What ``mutualnet demo`` prints when it is done: the table as a grid, the full and the cheapest
        configuration, the frontier, where the files are, the next command, and the time."""
        t, full = self.table, self.full
        cheapest = min(t.rows, key=lambda r: r["macs"])
        front = t.frontier()
        split = t.meta.get("split", "test")

        def top1(r: dict) -> str:
            return f"top-1 {r['top1']:.2f}%" + (f" ({r['test_top1']:.2f}% on the test set)" if "test_top1" in r else "")

        train_s, search_s = self.whole_run_seconds()
        return [
            "", format_table(t),
            f"top-1 (MFLOPs): top-1 measured on the "
            f"{'held-out training images (data.holdout)' if split == 'holdout' else 'test set'}"
            + ("; the test set's top-1 is given below, beside the held-out one (reported, never selected on)"
               if any("test_top1" in r for r in t.rows) else ""), "",
            f"full configuration (width {full['width']:g}, {full['resolution']} px): {top1(full)}, "
            f"{full['mflops']:.2f} MFLOPs",
            f"cheapest configuration (width {cheapest['width']:g}, {cheapest['resolution']} px): "
            f"{top1(cheapest)}, {cheapest['mflops']:.2f} MFLOPs",
            f"{len(front)} of {len(t)} configurations are on the frontier; "
            f"{len({r['resolution'] for r in front})} resolutions appear on it",
            f"plot: {self.plot}   table: {self.search_dir / 'query_table.csv'}   "
            f"deployable checkpoint: {self.search_dir / 'calibrated.pt'}",
            f"pick a budget: mutualnet select --table {self.search_dir / 'query_table.json'} --max-mflops 5",
            f"done in {self.seconds / 60:.1f} min; the whole run, resumed parts included: training "
            f"{train_s / 60:.1f} min, search {search_s / 60:.1f} min"]


def training_finished(ckpt_path: Path) -> bool:
    """Whether the run that wrote ``ckpt_path`` (a ``last.pt``) completed all its epochs."""
    ckpt = load_checkpoint(ckpt_path)
    ts = ckpt.get("train_state") or {}
    epochs = int((ckpt.get("meta") or {}).get("epochs") or 0)
    steps = int(ts.get("steps_per_epoch") or 0)
    return bool(epochs and steps and int(ts.get("step", 0)) >= epochs * steps)


def run_pipeline(recipe: dict, out: str | Path, *, overrides: list[str] | None = None, width_step: float = 0.05,
                 calib_images: int = 2000, val_images: int | None = None, search_resolutions: list[int] | None = None,
                 threads: int | None = None, progress: bool = True,
                 search_name: str = "search") -> tuple[Path, Path, QueryTable]:
    """Train (or resume, or reuse a finished run in ``out/train``), then search into ``out/<search_name>``.

    Returns ``(run_dir, search_dir, table)``.
    """
    out = Path(out)
    run_dir, search_dir = out / "train", out / search_name
    cfg = load_config(None, [f"run.out={run_dir}", f"run.progress={str(progress).lower()}"]
                      + ([f"run.threads={threads}"] if threads else []) + list(overrides or []), **_deep_copy(recipe))
    last = run_dir / "last.pt"
    if last.exists():
        if not training_finished(last):
            print(f"resuming the interrupted training run in {run_dir}")
            train(cfg, resume=last)
        else:
            print(f"training already finished in {run_dir}; reusing it")
    else:
        train(cfg)
    table_path = search_dir / "query_table.json"
    if not (table_path.exists() and (search_dir / "calibrated.pt").exists()):
        search_checkpoint(last, search_dir, width_step=width_step, calib_images=calib_images, val_images=val_images,
                          resolutions=search_resolutions, threads=threads, progress=progress)
    return run_dir, search_dir, QueryTable.load(table_path)


def make_recipe(recipe: dict | None = None, *, epochs: int | None = None, data_root: str | None = None) -> dict:
    """A copy of ``recipe`` (default: the demo's) with the epochs and the data folder a user asked for."""
    recipe = _deep_copy(recipe or DEMO_RECIPE)
    if epochs is not None:
        if epochs < 1:
            raise MutualNetError(f"--epochs must be at least 1, got {epochs}")
        recipe["train"]["epochs"] = epochs
    if data_root is not None:
        recipe["data"]["root"] = data_root
    return recipe


def _deep_copy(d: dict) -> dict:
    import copy

    return copy.deepcopy(d)


def format_table(table: QueryTable) -> str:
    """The query table as a grid: one line per width, top-1 (MFLOPs) per resolution; frontier marked ``*``."""
    resolutions = sorted({r["resolution"] for r in table.rows}, reverse=True)
    widths = sorted({r["width"] for r in table.rows})
    lines = ["width " + "".join("{:>24}".format(f"{res} px: top-1 (MFLOPs)") for res in resolutions)]
    for w in widths:
        cells = []
        for res in resolutions:
            row = table.find(w, res)
            text = "" if row is None else "{}{:6.2f} ({:6.2f})".format(
                "*" if row["pareto"] else " ", row["top1"], row["mflops"])
            cells.append(f"{text:>24}")
        lines.append(f"{w:5.2f} " + "".join(cells))
    lines.append("* = on the Pareto frontier (best top-1 for its cost)")
    return "\n".join(lines)


def run_demo(out: str | Path = "runs/demo", *, epochs: int | None = None, data_root: str | None = None,
             overrides: list[str] | None = None, width_step: float = 0.05, calib_images: int = 2000,
             val_images: int | None = None, threads: int | None = None, progress: bool = True,
             recipe: dict | None = None) -> DemoResult:
    """Train, calibrate, search, print and plot; see the module docstring."""
    t0 = time.perf_counter()
    recipe = make_recipe(recipe, epochs=epochs, data_root=data_root)
    if threads is None and not torch.cuda.is_available():
        threads = torch.get_num_threads()
    run_dir, search_dir, table = run_pipeline(recipe, out, overrides=overrides, width_step=width_step,
                                              calib_images=calib_images, val_images=val_images, threads=threads,
                                              progress=progress)
    plot = plot_tables([table], ["MutualNet"], Path(out) / "demo.png",
                       title="MutualNet on Fashion-MNIST: accuracy vs MFLOPs")
    return DemoResult(run_dir, search_dir, table, plot, time.perf_counter() - t0)
