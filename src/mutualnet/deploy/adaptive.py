"""A runtime-adaptive model: one set of weights, every calibrated configuration, and the query table.

This is MutualNet's deployment story in one object. The shared weights hold every sub-network; the
calibrated BatchNorm statistics hold each (width, resolution) configuration; the query table says which
configuration is the most accurate for a budget. :meth:`AdaptiveNet.set_budget` picks it and switches
through :func:`mutualnet.set_config`, the configuration's one writer: all slimmable layers and elastic stages
of a model share one state object, so a switch is a check and three attribute writes and costs microseconds,
with nothing reloaded. :meth:`AdaptiveNet.predict` resizes inputs to the active resolution.

In cascade mode (:meth:`AdaptiveNet.set_cascade`, :mod:`mutualnet.deploy.cascade`) each input instead runs the
cascade's configurations cheapest first and leaves the batch at the first one sure of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..calibrate import is_calibrated
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data.preprocess import model_preprocessing, resize_batch
from ..errors import MutualNetError
from ..io import read_image
from ..layers import config_key, get_depth, set_config, use_config
from .cascade import Cascade, CascadeOutput, run_cascade
from .runtime import build_runner, check_runtime

__all__ = ["AdaptiveNet", "Prediction", "load_query_table", "measure_switch_us", "predict_files",
           "describe_predictions"]


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    confidence: float
    width: float | None = None  # the configuration that gave it (cascade mode: the step the input stopped at)
    resolution: int | None = None


def load_query_table(ckpt: dict, table: str | os.PathLike | None = None):
    """The query table at ``table`` (JSON), else the one embedded in the checkpoint by ``mutualnet search``."""
    from ..search.table import QueryTable

    if table is not None:
        return QueryTable.load(table)
    if isinstance(ckpt.get("query_table"), dict):
        return QueryTable.from_dict(ckpt["query_table"], source="the checkpoint's query table")
    raise MutualNetError("no query table: pass --table query_table.json, or use the calibrated.pt that "
                         "`mutualnet search` writes (it embeds the table)")


class AdaptiveNet:
    """Shared weights + calibrated statistics + query table; switch configuration at run time.

    Args:
        model: A slimmable model holding calibrated statistics.
        table: A :class:`mutualnet.search.QueryTable` of its configurations.
        meta: Checkpoint meta (its class names). How inputs are made (statistics, evaluation crop, resize
            mode) is the model's preprocessing record (``model.preprocessing``, from its checkpoint).
        device: Where to run.
        runtime: ``eager`` runs the slimmable model (a switch is one attribute write); ``torchscript`` or
            ``onnxruntime`` run each configuration's exported sub-network, built on its first use and kept
            (CPU). Latency budgets are checked against that runtime's column of the table.
        threads: Intra-op threads of the ONNX Runtime sessions (default: torch's).
    """

    def __init__(self, model: nn.Module, table, meta: dict | None = None, device: str | torch.device = "cpu",
                 runtime: str = "eager", threads: int | None = None) -> None:
        self.runtime = check_runtime(runtime)
        if runtime != "eager" and torch.device(device).type != "cpu":
            raise MutualNetError(f"runtime {runtime} runs on the CPU; use device cpu (or runtime eager)")
        self.threads = threads
        self._runners: dict[str, Callable[[Tensor], Tensor]] = {}
        self.model = model.eval().to(device)
        self.table = table
        self.meta = dict(meta or {})
        self.device = torch.device(device)
        self.preprocessing = model_preprocessing(model)  # images are cropped at its input_size, then resized
        names = self.meta.get("class_names") or (self.meta.get("dataset") or {}).get("classes")
        self.class_names = list(names) if names else None
        self.config: dict | None = None
        self.cascade: Cascade | None = None
        top = max(table.rows, key=lambda r: (r["width"], r["resolution"], r.get("depth", 0)))
        self.set_config(top["width"], top["resolution"], top.get("depth"))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | dict, table: str | os.PathLike | None = None,
                        device: str | torch.device = "cpu", runtime: str = "eager",
                        threads: int | None = None) -> AdaptiveNet:
        """Build from a checkpoint with calibrated statistics (``calibrated.pt`` from ``mutualnet search``)."""
        ckpt = path if isinstance(path, dict) else load_checkpoint(path)
        qt = load_query_table(ckpt, table)
        if not qt.rows:
            raise MutualNetError("the query table is empty")
        return cls(model_from_checkpoint(ckpt), qt, ckpt.get("meta") or {}, device, runtime, threads)

    # -- switching ---------------------------------------------------------------------------------
    @property
    def width(self) -> float:
        return self.model.slim_state.width

    @property
    def resolution(self) -> int:
        return int(self.model.slim_state.resolution)

    @property
    def depth(self) -> int | None:
        """The active depth (None: full depth)."""
        return get_depth(self.model)

    def set_config(self, width: float, resolution: int, depth: int | None = None) -> dict:
        """Switch to one configuration: a row of the table, or any configuration with calibrated statistics.

        A configuration added later with ``mutualnet calibrate`` has its statistics but no table row; it is
        usable here (and exportable) with a row that holds only its width, resolution (and depth).
        """
        row = self.table.find(width, resolution, depth)
        if row is None:
            if not is_calibrated(self.model, width, resolution, depth):
                at = "" if depth is None else f" and depth {depth}"
                raise MutualNetError(f"width {width:g} at {resolution} px{at} is neither in the query table nor "
                                     "calibrated; calibrate it first (`mutualnet calibrate --width W --resolution R"
                                     f"{'' if depth is None else ' --depth D'}`)")
            row = {"width": float(width), "resolution": int(resolution)} | ({} if depth is None else {"depth": depth})
        self._switch(row)
        return row

    def set_budget(self, mflops: float | None = None, latency_ms: float | None = None) -> dict:
        """Switch to the most accurate configuration within the budget; returns its table row.

        A budget below the cheapest configuration raises :class:`MutualNetError` (never a silent fallback).
        """
        runtime = self.runtime
        if runtime == "eager" and not self.table.has_latency_on("eager"):
            runtime = None  # a table measured before runtimes had columns: its latency_ms is eager's
        row = self.table.select(max_mflops=mflops, max_latency_ms=latency_ms, runtime=runtime)
        self._switch(row)
        return row

    def _switch(self, row: dict) -> None:
        # the configuration's one writer: it checks the row against the model, then writes the shared state
        set_config(self.model, row["width"], int(row["resolution"]), row.get("depth"))
        self.config = row

    def is_calibrated(self) -> bool:
        return is_calibrated(self.model, self.width, self.resolution, self.depth)

    def set_cascade(self, cascade: Cascade | None) -> None:
        """Cascade mode (:mod:`mutualnet.deploy.cascade`): :meth:`logits` and :meth:`predict` run each input
        through ``cascade``'s steps until one is sure of it; ``None`` goes back to the active configuration.

        Every step must be a configuration of the table or one with calibrated statistics (checked here, before
        any input runs).
        """
        if cascade is not None:
            for s in cascade.steps:
                self.model.width_range.check(s.width, "cascade width")
                if self.table.find(s.width, s.resolution) is None and not is_calibrated(self.model, s.width,
                                                                                        s.resolution):
                    raise MutualNetError(f"cascade step width {s.width:g} at {s.resolution} px is neither in the "
                                         "query table nor calibrated")
        self.cascade = cascade

    # -- inference ---------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Logits of a batch of *normalised* images (any size: resized to the active resolution; in cascade
        mode, each image's logits at the step it stopped at)."""
        if self.cascade is not None:
            return self.run_cascade(images).logits
        return self._run(self.width, self.resolution, images, self.depth)

    @torch.no_grad()
    def run_cascade(self, images: Tensor) -> CascadeOutput:
        """The cascade's logits and the step each *normalised* image stopped at; the images that stop at a step
        leave the batch, the others run the next configuration (on this net's runtime)."""
        if self.cascade is None:
            raise MutualNetError("no cascade set: call set_cascade(Cascade.load(path)) first")
        if images.dim() == 3:
            images = images.unsqueeze(0)
        return run_cascade(self.cascade, images.to(self.device, torch.float32),
                           lambda step, x: self._run(step.width, step.resolution, x))

    def _run(self, width: float, resolution: int, images: Tensor, depth: int | None = None) -> Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(0)
        x = resize_batch(images.to(self.device, torch.float32), resolution, self.preprocessing.resize)
        if self.runtime == "eager":  # through the configuration's one writer: a check and three attribute writes
            with use_config(self.model, width, resolution, depth):
                return self.model(x)
        key = config_key(width, resolution, depth)
        if key not in self._runners:  # built lazily: only the configurations a deployment switches to
            self._runners[key] = build_runner(self.model, width, resolution, self.runtime, threads=self.threads,
                                              depth=depth)
        return self._runners[key](x)

    def prepare(self, images, *, normalised: bool = False) -> Tensor:
        """A normalised batch from image files, PIL images, or ``[0, 1]`` tensors (``C x H x W`` or a batch).

        Tensors are expected in ``[0, 1]`` (as ``torchvision.transforms.functional.to_tensor`` gives) and are
        normalised with the checkpoint's mean and std; pass ``normalised=True`` for tensors that already are.
        Files and PIL images get the evaluation transform (resize, centre crop at ``input_size``).
        """
        if isinstance(images, Tensor):
            x = images.unsqueeze(0) if images.dim() == 3 else images
            if normalised:
                return x
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise MutualNetError(f"images hold values in [{lo:.3g}, {hi:.3g}], outside [0, 1]: pass raw images "
                                     "scaled to [0, 1], or normalised=True for a batch normalised already")
            return self.preprocessing.normalise(x.float())
        items = list(images) if isinstance(images, list | tuple) else [images]
        return torch.stack([self._transform_one(item) for item in items])

    @torch.no_grad()
    def predict(self, images, topk: int = 1, *, normalised: bool = False) -> list[list[Prediction]]:
        """Top-``topk`` (class name, confidence) per image, at the active configuration.

        Args:
            images: image files, PIL images, or a ``[0, 1]`` float tensor (``N x C x H x W`` or ``C x H x W``):
                they are normalised with the checkpoint's preprocessing (:meth:`prepare`).
            topk: classes per image, most likely first.
            normalised: the tensor is normalised already (mean/std applied), as ``logits`` takes it.
        """
        x = self.prepare(images, normalised=normalised)
        if self.cascade is None:
            logits, configs = self.logits(x), [(self.width, self.resolution)] * len(x)
        else:
            out = self.run_cascade(x)
            logits, configs = out.logits, [self.cascade.steps[k].config for k in out.stop.tolist()]
        probs = logits.float().softmax(-1)
        conf, idx = probs.topk(min(topk, probs.shape[-1]), dim=-1)
        return [[Prediction(int(i), self.label(int(i)), float(c), *cfg) for c, i in zip(cs, ids)]
                for cs, ids, cfg in zip(conf.tolist(), idx.tolist(), configs)]

    def label(self, index: int) -> str:
        if self.class_names and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return str(index)

    def _transform_one(self, item) -> Tensor:
        from PIL import Image

        mode = "L" if getattr(self.model, "in_chans", 3) == 1 else "RGB"
        img = item.convert(mode) if isinstance(item, Image.Image) else read_image(item, mode)
        return self.preprocessing.transform()(img)

    def load_images(self, paths: list[str | os.PathLike]) -> Tensor:
        """A normalised batch of image files (the evaluation transform at ``input_size``), for :meth:`logits`."""
        return self.prepare([str(p) for p in paths])


def measure_switch_us(net: AdaptiveNet, rows: list[dict] | None = None, repeats: int = 1000) -> float:
    """Median microseconds of one :meth:`AdaptiveNet.set_budget` call (selection + switch)."""
    rows = rows or [r for r in net.table.rows if r.get("pareto")] or net.table.rows
    times = []
    for i in range(repeats):
        r = rows[i % len(rows)]
        t0 = time.perf_counter()
        net.set_budget(mflops=r["mflops"])
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    return times[len(times) // 2]



def predict_files(checkpoint: str | os.PathLike, images: list[str], *, table: str | os.PathLike | None = None,
                  budget_mflops: float | None = None, budget_latency_ms: float | None = None, topk: int = 1,
                  device: str = "cpu", runtime: str = "eager", cascade: str | os.PathLike | None = None) -> dict:
    """What ``mutualnet predict`` does: classify image files at the best configuration for a budget (default: the
    table's top configuration), or through a cascade file (each image stops at the first step sure of it).

    Returns:
        ``{"config", "predictions"}`` (each prediction: ``image`` and its ``top`` classes), or with ``cascade``
        ``{"cascade", "predictions"}`` (each prediction also names the ``width`` and ``resolution`` it stopped at).
    """
    from ..profiling import resolve_device

    resolve_device(device)
    net = AdaptiveNet.from_checkpoint(checkpoint, table, device=device, runtime=runtime)
    budget = budget_mflops is not None or budget_latency_ms is not None
    if cascade is not None:
        if budget:
            raise MutualNetError("give either a budget or --cascade, not both")
        net.set_cascade(Cascade.load(cascade))
    row = net.set_budget(mflops=budget_mflops, latency_ms=budget_latency_ms) if budget else net.config
    preds = net.predict(images, topk=max(1, topk))
    if cascade is None:
        keys = ("width", "resolution", "depth", "mflops", "top1", "latency_ms")  # depth None: full depth
        return {"config": {k: row.get(k) for k in keys},
                "predictions": [{"image": str(img), "top": [p.__dict__ for p in ps]} for img, ps in zip(images, preds)]}
    return {"cascade": net.cascade.to_dict(),
            "predictions": [{"image": str(img), "width": ps[0].width, "resolution": ps[0].resolution,
                             "top": [{k: getattr(p, k) for k in ("index", "label", "confidence")} for p in ps]}
                            for img, ps in zip(images, preds)]}


def describe_predictions(result: dict) -> list[str]:
    """The lines ``mutualnet predict`` prints for :func:`predict_files`'s result: the configuration (or the
    cascade's steps), then one tab-separated line per image."""
    from ..search.table import config_text

    if "cascade" in result:
        steps = Cascade.from_dict(result["cascade"]).steps
        head = f"cascade of {len(steps)} steps: " + ", ".join(
            f"width {s.width:g} at {s.resolution} px ({s.mflops:.2f} MFLOPs)" for s in steps)
    else:
        row = result["config"]
        head = f"configuration: {config_text(row)} ({row['mflops']:.2f} MFLOPs, table top-1 {row['top1']:.2f}%)"
    return [head] + [f"{p['image']}\t" + "\t".join(f"{t['label']} ({t['confidence']:.3f})" for t in p["top"])
                     + (f"\twidth {p['width']:g} at {p['resolution']} px" if "cascade" in result else "")
                     for p in result["predictions"]]
