"""Anytime inference: each input runs the cheapest configuration that is sure of it.

A MutualNet holds every (width, resolution) configuration in one set of weights, so a deployment need not
make every input pay for one configuration: it can run a cheap configuration first and escalate only the
inputs it is unsure of to costlier ones — the same weights, no second model. Most inputs are easy, so the
*average* cost falls far below the static frontier's at the same accuracy.

A :class:`Cascade` is an ordered list of configurations (:class:`Step`, cheapest first, taken from the query
table's frontier) with one threshold each, and **one rule**: at step ``k`` an input stops when its maximum
softmax probability is greater than ``threshold[k]``; the last step always stops. A threshold of 0 stops
every input (the maximum probability is at least ``1 / classes``), 1 stops none. An input that escalates
has paid for every step it ran (configurations share no activations), so the cost of stopping at step
``k`` is the sum of the MFLOPs of steps ``0..k``.

:func:`run_cascade` runs a cascade on a batch: the inputs that stop at a step leave the batch, only the
others run the next configuration. :func:`fit_cascade` chooses the steps among the frontier's configurations
and the thresholds on **held-out** images (never the test set): every configuration is run once on them
(:func:`score_configs`), then every chain of up to ``max_steps`` configurations and every threshold on a
grid of the held-out confidences' quantiles is evaluated exactly, and the best cascade for an average-MFLOPs
budget (or a top-1) is kept — with held-out differences smaller than their noise not counted as evidence for
trusting a cheap step (``ties_se``) — with what it measured on those images: expected average MFLOPs, top-1 and
the share of inputs stopping at each step (``Cascade.fit``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.preprocess import model_preprocessing, resize_batch
from ..errors import MutualNetError
from ..io import MAX_JSON_DEPTH, atomic_write_text, json_depth, read_json
from ..layers import use_config
from ..validate import check_float, check_int, check_pixels, check_width

__all__ = ["RULE", "CASCADE_FORMAT", "BUNDLE_FORMAT", "BUNDLE_FORMATS", "Step", "Cascade", "CascadeOutput", "Scores",
           "score_configs", "fit_cascade", "run_cascade", "model_runner", "export_cascade", "evaluate_cascade",
           "fit_checkpoint_cascade", "evaluate_checkpoint_cascade", "describe_cascade_evaluation",
           "describe_test_report", "export_checkpoint_cascade"]

RULE = "max_softmax"  # stop at a step when the maximum softmax probability is greater than its threshold
CASCADE_FORMAT = "mutualnet-cascade"
MAX_STEPS = 8
TIES_SE = 0.5  # held-out top-1 differences below this many standard errors are noise (fit_cascade)


@dataclass(frozen=True)
class Step:
    """One configuration of a cascade and the confidence above which an input stops there."""

    width: float
    resolution: int
    threshold: float  # in [0, 1]; the last step's is 0 (it always stops)
    mflops: float  # the configuration's own cost; an input stopping here paid every earlier step's too

    @property
    def config(self) -> tuple[float, int]:
        return self.width, self.resolution


@dataclass(frozen=True)
class Cascade:
    """Configurations, cheapest first, each with a threshold; ``fit`` holds what fitting measured.

    ``fit`` (empty for a hand-made cascade): ``target`` (``{"max_mflops": B}`` or ``{"min_top1": A}``),
    ``images`` (held-out images fitted on), ``mflops`` (expected average cost), ``top1`` and ``stop_share``
    (fraction of inputs stopping at each step), all measured on those images.
    """

    steps: tuple[Step, ...]
    fit: dict = field(default_factory=dict)
    rule: str = RULE

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        if not 1 <= len(steps) <= MAX_STEPS:
            raise MutualNetError(f"a cascade has 1 to {MAX_STEPS} steps, got {len(steps)}")
        if self.rule != RULE:
            raise MutualNetError(f"unknown cascade rule {self.rule!r}; the one rule is {RULE!r}")
        checked = []
        for i, s in enumerate(steps):
            if not isinstance(s, Step):
                raise MutualNetError(f"cascade step {i} is not a Step")
            last = i == len(steps) - 1
            checked.append(Step(check_width(s.width, f"step {i} width"),
                                check_pixels(s.resolution, f"step {i} resolution"),
                                0.0 if last else check_float(s.threshold, f"step {i} threshold", 0.0, 1.0),
                                check_float(s.mflops, f"step {i} mflops", 0.0)))
        object.__setattr__(self, "steps", tuple(checked))

    @property
    def thresholds(self) -> list[float]:
        return [s.threshold for s in self.steps]

    def cost(self, stop: Tensor) -> Tensor:
        """MFLOPs each input paid, from the step it stopped at (every step up to it ran on it)."""
        paid = torch.tensor(list(itertools.accumulate(s.mflops for s in self.steps)), dtype=torch.float64)
        return paid[stop.long().cpu()]

    def report(self, stop: Tensor, correct: Tensor) -> dict:
        """Average MFLOPs, top-1 (%) and share stopping at each step of inputs that stopped at ``stop``."""
        n = len(stop)
        if n == 0:
            raise MutualNetError("no images to report on")
        counts = torch.bincount(stop.long().cpu(), minlength=len(self.steps))
        return {"images": n, "mflops": float(self.cost(stop).mean()),
                "top1": 100.0 * float(correct.float().mean()), "stop_share": [float(c) / n for c in counts]}

    def describe(self) -> list[str]:
        """One line per step (configuration, cost, threshold, share stopping), then the expected totals."""
        share = self.fit.get("stop_share") or [None] * len(self.steps)
        lines = []
        for i, (s, sh) in enumerate(zip(self.steps, share)):
            rule = "always stops" if i == len(self.steps) - 1 else f"stops if max softmax > {s.threshold:.4f}"
            where = "" if sh is None else f"; {100 * sh:.1f}% of held-out images stop here"
            lines.append(f"step {i}: width {s.width:g} at {s.resolution} px ({s.mflops:.2f} MFLOPs), {rule}{where}")
        if self.fit:
            lines.append(f"expected on {self.fit['images']} held-out images: top-1 {self.fit['top1']:.2f}%, "
                         f"{self.fit['mflops']:.2f} MFLOPs on average")
        return lines

    # -- files --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": CASCADE_FORMAT, "version": 1, "rule": self.rule,
                "steps": [asdict(s) for s in self.steps], "fit": dict(self.fit)}

    @classmethod
    def from_dict(cls, d: object, source: str = "cascade") -> Cascade:
        """A cascade from its dict form, checked: known fields, finite numbers in range, bounded nesting."""
        if not isinstance(d, dict) or d.get("format") != CASCADE_FORMAT or not isinstance(d.get("steps"), list):
            raise MutualNetError(f"{source} is not a mutualnet cascade (make one with `mutualnet cascade`)")
        if json_depth(d) > MAX_JSON_DEPTH:
            raise MutualNetError(f"{source} is nested more than {MAX_JSON_DEPTH} levels deep")
        if unknown := sorted(set(d) - {"format", "version", "rule", "steps", "fit"}):
            raise MutualNetError(f"{source} has unknown field {unknown[0]!r}")
        if not isinstance(d.get("fit") or {}, dict):
            raise MutualNetError(f"{source}: 'fit' must be a mapping")
        steps = []
        try:
            for i, s in enumerate(d["steps"]):
                if not isinstance(s, dict) or set(s) != {"width", "resolution", "threshold", "mflops"}:
                    raise MutualNetError(f"step {i} must have exactly width, resolution, threshold, mflops")
                steps.append(Step(s["width"], check_int(s["resolution"], f"step {i} resolution"), s["threshold"],
                                  s["mflops"]))
            return cls(tuple(steps), dict(d.get("fit") or {}), d.get("rule", RULE))
        except MutualNetError as e:
            raise MutualNetError(f"{source}: {e}") from None

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Cascade:
        return cls.from_dict(read_json(path, "cascade"), source=str(path))


@dataclass(frozen=True)
class CascadeOutput:
    """What a cascade gave each input: the logits of the step it stopped at, and that step's index."""

    logits: Tensor  # (N, classes)
    stop: Tensor  # (N,) int64


def model_runner(model: nn.Module) -> Callable[[Step, Tensor], Tensor]:
    """``run(step, images) -> logits`` on a slimmable model: resize to the step's resolution, run its width.

    ``images`` are normalised and at the evaluation crop's size, as for :func:`mutualnet.evaluate.evaluate`;
    the resize mode is the one the model was trained with (its preprocessing record).
    """
    resize = model_preprocessing(model).resize

    def run(step: Step, images: Tensor) -> Tensor:
        with torch.no_grad(), use_config(model, step.width, step.resolution):
            return model(resize_batch(images, step.resolution, resize))

    return run


@torch.no_grad()
def run_cascade(cascade: Cascade, images: Tensor, run: Callable[[Step, Tensor], Tensor]) -> CascadeOutput:
    """Run ``cascade`` on a batch: each step sees only the inputs no earlier step was sure of.

    Args:
        cascade: The steps and thresholds.
        images: A normalised batch (what ``run`` takes).
        run: ``run(step, images) -> logits`` of one configuration (:func:`model_runner`, or an
            :class:`~mutualnet.deploy.AdaptiveNet`'s exported sub-networks).
    """
    n = len(images)
    pending = torch.arange(n, device=images.device)
    stop = torch.full((n,), -1, dtype=torch.long, device=images.device)
    logits: Tensor | None = None
    for k, step in enumerate(cascade.steps):
        out = run(step, images[pending])
        if logits is None:
            logits = out.new_empty((n, out.shape[-1]))
        done = (torch.ones(len(pending), dtype=torch.bool, device=out.device) if k == len(cascade.steps) - 1
                else out.float().softmax(-1).amax(-1) > step.threshold)
        logits[pending[done]] = out[done]
        stop[pending[done]] = k
        pending = pending[~done]
        if len(pending) == 0:
            break
    if logits is None:  # an empty batch
        logits = images.new_empty((0, 0))
    return CascadeOutput(logits, stop)


@dataclass(frozen=True)
class Scores:
    """Every candidate configuration run once on the same held-out images: what fitting needs.

    ``confidence[i, k]`` is image ``i``'s maximum softmax probability at ``configs[k]`` and ``correct[i, k]``
    whether its top-1 class is right there; ``mflops[k]`` is the configuration's cost.
    """

    configs: list[tuple[float, int]]
    mflops: list[float]
    confidence: Tensor  # (N, K) float
    correct: Tensor  # (N, K) bool


@torch.no_grad()
def score_configs(model: nn.Module, heldout: tuple[Tensor, Tensor] | Iterable, configs: list[dict], *,
                  batch_size: int = 200, device: torch.device | str | None = None) -> Scores:
    """Run each of ``configs`` (query-table rows: width, resolution, mflops) on the held-out images.

    Args:
        model: A slimmable model with calibrated statistics for every configuration.
        heldout: ``(images, labels)`` tensors or batches of them (a DataLoader), normalised, at the evaluation
            crop's size. Images the network never trained on and that are not the test set: thresholds fitted
            on training images would trust its over-confidence, and fitted on the test set would report a
            result chosen on it.
        configs: The candidate steps, e.g. ``table.frontier()``.
    """
    if not configs:
        raise MutualNetError("no configurations to build a cascade from")
    full = getattr(getattr(model, "depth_range", None), "hi", None)
    if any(c.get("depth") not in (None, full) for c in configs):  # a step is (width, resolution): full depth
        raise MutualNetError("a cascade's steps run at full depth, and these configurations include shallower "
                             "networks (a table with elastic depth): build the cascade from its full-depth rows")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    run = model_runner(model)
    steps = [Step(float(c["width"]), int(c["resolution"]), 0.0, float(c["mflops"])) for c in configs]
    if isinstance(heldout, tuple):
        images, labels = heldout
        heldout = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(images), batch_size))
    was_training = model.training
    model.eval()
    conf, correct = [], []
    try:
        for x, y in heldout:
            x, y = x.to(dev).float(), torch.as_tensor(y).to(dev)
            cs, hs = [], []
            for s in steps:
                p = run(s, x).float().softmax(-1)
                c, i = p.max(-1)
                cs.append(c.cpu())
                hs.append((i == y).cpu())
            conf.append(torch.stack(cs, 1))
            correct.append(torch.stack(hs, 1))
    finally:
        model.train(was_training)
    if not conf:
        raise MutualNetError("the held-out set is empty")
    return Scores([s.config for s in steps], [s.mflops for s in steps], torch.cat(conf), torch.cat(correct))


def _grid(confidence: Tensor, size: int) -> Tensor:
    """Candidate thresholds of one step: 0 (all stop) and the confidences' quantiles (a share of inputs each).

    Each is an observed float32 confidence, so the comparison run at deployment (float32 probabilities against
    the threshold) decides exactly as fitting did.
    """
    levels = torch.linspace(0, 1, size + 1, dtype=torch.float64)[1:-1]
    q = torch.quantile(confidence.double(), levels, interpolation="lower").float()
    return torch.cat([torch.zeros(1), q]).unique()


def _chain_points(s: Scores, chain: tuple[int, ...], grid: int) -> tuple[Tensor, Tensor, Tensor]:
    """(correct count, summed MFLOPs, thresholds) of every threshold combination of one chain of configurations.

    Exact on the held-out images. The last two thresholds are evaluated for all grid pairs at once as products
    of 0/1 matrices (which images stop where); earlier ones by recursion over the images still running.
    """
    conf, hit, cost = s.confidence.float(), s.correct.float(), [s.mflops[k] for k in chain]
    n = len(conf)
    if len(chain) == 1:
        return hit[:, chain[0]].sum().double().reshape(1), torch.tensor([n * cost[0]], dtype=torch.float64), \
            torch.zeros(1, 0)
    grids = [_grid(conf[:, k], grid) for k in chain[:-1]]
    above = [(conf[:, k][None] > t[:, None]).float() for k, t in zip(chain, grids)]  # (G, N) per step but the last
    last = hit[:, chain[-1]]
    acc, tot, thr = [], [], []

    def emit(a: Tensor, c: Tensor, prefix: list[float], *ts: Tensor) -> None:
        acc.append(a.reshape(-1).double())
        tot.append(c.reshape(-1).double())
        mesh = torch.meshgrid(*ts, indexing="ij") if len(ts) > 1 else ts
        cols = [torch.tensor(prefix, dtype=torch.float32).expand(a.numel(), len(prefix))]
        thr.append(torch.cat(cols + [m.reshape(-1, 1) for m in mesh], 1))

    def walk(j: int, running: Tensor, a: float, c: float, prefix: list[float]) -> None:
        k = chain[j]
        c += float(running.sum()) * cost[j]
        stop = above[j] * running  # (G, N): images stopping at step j, per threshold
        a_here = a + stop @ hit[:, k]
        go_on = running - stop
        if j == len(chain) - 2:  # next is the last step: every image still running stops there
            emit(a_here + go_on @ last, c + go_on.sum(1) * cost[-1], prefix, grids[j])
        elif j == len(chain) - 3:  # two thresholds left: all pairs at once
            k1, s1 = chain[j + 1], above[j + 1]
            left = go_on.sum(1)
            a2 = a_here[:, None] + go_on @ (s1 * hit[:, k1]).T + (go_on @ last)[:, None] - go_on @ (s1 * last).T
            c2 = c + left[:, None] * cost[j + 1] + (left[:, None] - go_on @ s1.T) * cost[-1]
            emit(a2, c2, prefix, grids[j], grids[j + 1])
        else:
            for g in range(len(grids[j])):
                walk(j + 1, go_on[g], float(a_here[g]), c, prefix + [float(grids[j][g])])

    walk(0, torch.ones(n), 0.0, 0.0, [])
    return torch.cat(acc), torch.cat(tot), torch.cat(thr)


def fit_cascade(scores: Scores, *, max_mflops: float | None = None, min_top1: float | None = None,
                max_steps: int = 3, grid: int = 48, chains: list[tuple[int, ...]] | None = None,
                ties_se: float = TIES_SE) -> Cascade:
    """The cascade that best meets one target on the held-out images ``scores`` were measured on.

    Every chain of up to ``max_steps`` candidate configurations in increasing cost (or the given ``chains``,
    indices into ``scores.configs``) and every combination of thresholds on a ``grid``-quantile grid is
    evaluated exactly. Differences in held-out top-1 smaller than ``ties_se`` standard errors (binomial, on these
    images) are treated as noise, because choosing among ~10^5 (chain, thresholds) points on a few thousand
    images favours the ones that are lucky on them — and the lucky ones are those that trust a cheap step more:
    with ``max_mflops``, among the cascades within the budget whose top-1 is that close to the most accurate one,
    the *costliest* is kept (the budget is spent escalating, not saved on a difference the images cannot
    resolve); with ``min_top1``, the cheapest whose top-1 exceeds the target by that margin. ``ties_se=0``: the
    most accurate within the budget (ties: the cheaper) / the cheapest reaching the target (ties: the more
    accurate).

    Raises:
        MutualNetError: not exactly one target, or no cascade meets it (the message gives the nearest).
    """
    if (max_mflops is None) == (min_top1 is None):
        raise MutualNetError("give one target: max_mflops (average MFLOPs) or min_top1 (top-1 %)")
    if max_mflops is not None:
        check_float(max_mflops, "max_mflops", 0.0, lo_open=True)
    if min_top1 is not None:
        check_float(min_top1, "min_top1", 0.0, 100.0)
    check_int(max_steps, "max_steps", 1, MAX_STEPS)
    check_int(grid, "grid", 2, 1000)
    check_float(ties_se, "ties_se", 0.0, 10.0)
    order = sorted(range(len(scores.configs)), key=lambda k: (scores.mflops[k], k))
    if chains is None:
        chains = [c for n in range(1, max_steps + 1) for c in itertools.combinations(order, n)]
    n = len(scores.confidence)

    def se(top1: float) -> float:  # one standard error of a top-1 (%) measured on n images
        p = min(max(top1 / 100.0, 0.0), 1.0)
        return 100.0 * (p * (1.0 - p) / n) ** 0.5

    points = []  # (chain, top1, average MFLOPs, thresholds) of every evaluated cascade
    for chain in chains:
        if not chain or any(not 0 <= k < len(scores.configs) for k in chain):
            raise MutualNetError(f"chain {chain} names a configuration that was not scored")
        acc, tot, thr = _chain_points(scores, tuple(chain), grid)
        points.append((tuple(chain), 100.0 * acc / n, tot / n, thr))
    if max_mflops is not None:
        fits = [p[1].masked_fill(p[2] > max_mflops + 1e-9, -float("inf")) for p in points]
        top = max((float(f.max()) for f in fits), default=-float("inf"))
        floor = top - ties_se * se(top) - 1e-9
        # within the budget and the noise of the best: the costliest (ties: the more accurate); with no noise
        # allowed, the most accurate (ties: the cheaper)
        keys = [torch.where((f >= floor) & f.isfinite(), p[2] * 1e6 + p[1] if ties_se else p[1] * 1e6 - p[2],
                            torch.full_like(f, -float("inf"))) for f, p in zip(fits, points)]
    else:
        need = min_top1 + ties_se * se(min_top1) - 1e-9
        keys = [torch.where(p[1] >= need, -p[2] * 1e6 + p[1], torch.full_like(p[2], -float("inf"))) for p in points]
    best = None  # (key, chain, thresholds)
    for key, (chain, _, _, thr) in zip(keys, points):
        i = int(key.argmax())
        if float(key[i]) > -float("inf") and (best is None or float(key[i]) > best[0]):
            best = (float(key[i]), chain, thr[i].tolist())
    if best is None:
        cheapest = min(scores.mflops)
        if max_mflops is not None:
            raise MutualNetError(f"no cascade fits {max_mflops:g} MFLOPs on average; the cheapest configuration "
                                 f"alone costs {cheapest:.2f}")
        top = float(100.0 * scores.correct.float().mean(0).max())
        margin = f" + {ties_se:g} standard errors ({ties_se * se(min_top1):.2f} points)" if ties_se else ""
        raise MutualNetError(f"no cascade reaches top-1 {min_top1:g}%{margin} on the held-out images; the best "
                             f"configuration alone reaches {top:.2f}%")
    _, chain, thr = best
    steps = tuple(Step(*scores.configs[k], t, scores.mflops[k]) for k, t in zip(chain, [*thr, 0.0]))
    cascade = Cascade(steps)
    stop, correct = _replay(cascade, scores, chain)
    target = {"max_mflops": max_mflops} if max_mflops is not None else {"min_top1": min_top1}
    return Cascade(steps, {"target": target, "ties_se": ties_se, **cascade.report(stop, correct)})


def _replay(cascade: Cascade, scores: Scores, chain: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Where each scored image stops in ``cascade`` (steps = ``chain``), and whether it is right there."""
    n = len(scores.confidence)
    stop = torch.full((n,), len(chain) - 1, dtype=torch.long)
    pending = torch.ones(n, dtype=torch.bool)
    for j, (k, s) in enumerate(zip(chain[:-1], cascade.steps)):
        here = pending & (scores.confidence[:, k].float() > s.threshold)
        stop[here] = j
        pending &= ~here
    correct = scores.correct[:, list(chain)].gather(1, stop[:, None])[:, 0]
    return stop, correct


# -- export ------------------------------------------------------------------------------------------
BUNDLE_FORMAT = "mutualnet-cascade-bundle"
BUNDLE_FORMATS = ("torchscript", "onnx")


class _Resized(nn.Module):
    """A step's plain sub-network behind the resize that makes its input: bundles take the crop as it is."""

    def __init__(self, net: nn.Module, resolution: int, mode: str) -> None:
        super().__init__()
        self.net, self.resolution, self.mode = net, resolution, mode

    def forward(self, x: Tensor) -> Tensor:
        return self.net(resize_batch(x, self.resolution, self.mode))


def export_cascade(model: nn.Module, cascade: Cascade, out: str | os.PathLike, *,
                   class_names: list[str] | None = None, fmt: str = "torchscript", atol: float = 1e-4) -> Path:
    """Write ``cascade`` as a folder that runs without mutualnet: one file per step, and ``cascade.json``.

    Each step is its sub-network exported as a plain network (BatchNorm folded, :func:`export_subnet`) with the
    resize to its resolution inside, so every file takes the same normalised ``input_size`` crop;
    ``cascade.json`` holds the rule, each step's file, configuration, cost and threshold, the model's
    preprocessing record (mean, std, input size) and the class names. Each file is checked against the
    slimmable model before anything is written; the folder appears whole (written beside, then renamed) or
    not at all.
    """
    import shutil
    import tempfile
    import warnings

    from ..extras import require
    from ..io import atomic_write_bytes
    from .export import check_onnx, export_subnet, max_abs_diff

    if fmt not in BUNDLE_FORMATS:
        raise MutualNetError(f"unknown bundle format {fmt!r}; choose one of {', '.join(BUNDLE_FORMATS)}")
    if fmt == "onnx":
        require("onnx", "ONNX export")
    out = Path(out)
    if out.exists() and not (out / "cascade.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise MutualNetError(f"{out} exists and is not a cascade bundle; give a new folder")
    if not out.parent.is_dir():
        raise MutualNetError(f"output folder does not exist: {out.parent}")
    preprocessing = model_preprocessing(model)
    size, resize = preprocessing.input_size, preprocessing.resize
    x = torch.randn(2, getattr(model, "in_chans", 3), size, size, generator=torch.Generator().manual_seed(0))
    ref_run, files = model_runner(model), {}
    for i, step in enumerate(cascade.steps):
        net, _ = export_subnet(model, step.width, step.resolution)
        wrapped = _Resized(net.cpu(), step.resolution, resize).eval()
        ref = ref_run(step, x.to(next(model.parameters()).device)).cpu()
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if fmt == "torchscript":
                buf = io.BytesIO()
                torch.jit.save(torch.jit.trace(wrapped, x[:1], check_trace=False), buf)
                data = buf.getvalue()
                diff = max_abs_diff(torch.jit.load(io.BytesIO(data))(x), ref)
            else:
                batch = torch.export.Dim("batch", min=1)
                program = torch.onnx.export(wrapped, (x,), None, dynamo=True, dynamic_shapes=({0: batch},),
                                            input_names=["images"], output_names=["logits"])
                data = program.model_proto.SerializeToString()
                diff = max(check_onnx(data, wrapped, x), max_abs_diff(wrapped(x), ref))
        if not diff <= atol:
            raise MutualNetError(f"step {i} of the bundle differs from the slimmable model by {diff:.3g} "
                                 f"(> {atol:g}); nothing was written")
        files[f"step{i}.{'ts' if fmt == 'torchscript' else 'onnx'}"] = data
    spec = {"format": BUNDLE_FORMAT, "version": 1, "rule": cascade.rule, "runtime": fmt,
            "steps": [asdict(s) | {"file": name} for s, name in zip(cascade.steps, files)],
            "preprocessing": preprocessing.to_dict(), "class_names": list(class_names) if class_names else None,
            "fit": dict(cascade.fit)}
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # what a plain mkdir gives (mkdtemp's is owner-only)
    except OSError as e:
        raise MutualNetError(f"cannot write {out}: {e.strerror or e}") from None
    try:
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        atomic_write_text(tmp / "cascade.json", json.dumps(spec, indent=1) + "\n")
        if out.exists():  # an earlier bundle: moved aside, replaced, then removed
            old = out.with_name(tmp.name + ".old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as e:
        raise MutualNetError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# -- a checkpoint's cascade: what `mutualnet cascade`, `eval --cascade` and `export --cascade` run -------------
def evaluate_cascade(model: nn.Module, cascade: Cascade, dataset, *, batch_size: int = 200, num_workers: int = 0,
                     device: str | torch.device = "cpu") -> dict:
    """Run ``cascade`` on every image of ``dataset`` (normalised crops, labels).

    Returns:
        ``{"report": Cascade.report(...), "stop", "pred", "label"}``: the step each image stopped at, its
        predicted class and its label, as lists in dataset order.
    """
    from torch.utils.data import DataLoader

    run = model_runner(model)
    stops, preds, labels = [], [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        out = run_cascade(cascade, x.to(device).float(), run)
        stops.append(out.stop.cpu())
        preds.append(out.logits.argmax(-1).cpu())
        labels.append(torch.as_tensor(y))
    if not stops:
        raise MutualNetError("the validation set is empty")
    stop, pred, label = torch.cat(stops), torch.cat(preds), torch.cat(labels)
    return {"report": cascade.report(stop, pred == label), "stop": stop.tolist(), "pred": pred.tolist(),
            "label": label.tolist()}


def _crop(ckpt: dict, resolutions: Iterable[int]) -> int:
    """The evaluation crop: the highest of the checkpoint's resolutions and the cascade's (resized on the device)."""
    return max([*((ckpt.get("meta") or {}).get("resolutions") or []), *resolutions])


def fit_checkpoint_cascade(checkpoint: str | os.PathLike, out: str | os.PathLike, *, max_mflops: float | None = None,
                           min_top1: float | None = None, steps: list[tuple[float, int]] | None = None,
                           table: str | os.PathLike | None = None, max_steps: int = 3, grid: int = 48,
                           ties_se: float = TIES_SE, heldout_images: int | None = None, report_test: bool = False,
                           val_images: int | None = None, batch_size: int = 200, device: str = "cpu",
                           dataset: str | None = None, data_root: str | None = None, workers: int | None = None,
                           seed: int = 0) -> tuple[Cascade, dict | None]:
    """What ``mutualnet cascade`` does: fit a cascade of ``checkpoint`` on its held-out images and write it to ``out``.

    The candidate steps are the frontier of the query table (``table``, else the one the checkpoint embeds), or
    ``steps`` (cheapest first, used as given, their MFLOPs counted); ``max_steps``, ``grid``, ``ties_se``: as
    :func:`fit_cascade` takes them. Held-out images are the checkpoint's
    ``data.holdout`` (never trained on, never the test set), a ``heldout_images`` subset drawn with ``seed``.

    Returns:
        The cascade (its ``fit`` also names the split and the dataset) and, with ``report_test``, its report on
        ``val_images`` test images (else None).
    """
    from torch.utils.data import DataLoader

    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..data.checkpoint import data_from_checkpoint
    from ..data.datasets import random_subset  # the same seeded subset as `search --val-images`
    from ..profiling import profile, resolve_device
    from .adaptive import load_query_table

    if (max_mflops is None) == (min_top1 is None):
        raise MutualNetError("give one target: --max-mflops (average MFLOPs) or --min-top1 (top-1 %)")
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    if steps is None:
        candidates = load_query_table(ckpt, table).frontier()
    else:
        for w, _ in steps:
            model.width_range.check(w, "--steps width")
        candidates = [{"width": w, "resolution": r, "mflops": profile(model, w, r).mflops} for w, r in steps]
    dev = resolve_device(device)
    data = data_from_checkpoint(ckpt, model, dataset=dataset, data_root=data_root, workers=workers)
    crop = _crop(ckpt, (c["resolution"] for c in candidates))
    heldout = random_subset(data.build("holdout", crop), heldout_images, seed)
    model.to(dev)
    scores = score_configs(model, DataLoader(heldout, batch_size=batch_size, num_workers=data.workers), candidates,
                           device=dev)
    chains = [tuple(range(len(candidates)))] if steps is not None else None
    cascade = fit_cascade(scores, max_mflops=max_mflops, min_top1=min_top1, max_steps=max_steps, grid=grid,
                          chains=chains, ties_se=ties_se)
    cascade = Cascade(cascade.steps, cascade.fit | {"split": "holdout", "dataset": data.info})
    cascade.save(out)
    if not report_test:
        return cascade, None
    val = random_subset(data.build("val", crop), val_images, seed)
    return cascade, evaluate_cascade(model, cascade, val, batch_size=batch_size, num_workers=data.workers,
                                     device=dev)["report"]


def evaluate_checkpoint_cascade(checkpoint: str | os.PathLike, cascade: str | os.PathLike, *,
                                val_images: int | None = None, batch_size: int = 200, device: str = "cpu",
                                calib_images: int = 2000, per_image: bool = False, dataset: str | None = None,
                                data_root: str | None = None, workers: int | None = None, seed: int = 0) -> dict:
    """What ``mutualnet eval --cascade`` does: top-1, average MFLOPs and share per step of a cascade file on the
    validation split of ``checkpoint``'s dataset (a ``val_images`` subset drawn with ``seed``).

    Every step must have calibrated statistics in the checkpoint (or be the top width): a cascade fitted on
    another checkpoint is refused. ``calib_images`` is only checked (``eval``'s flags share one rule).

    Returns:
        ``{"checkpoint", "dataset", "cascade", "report"}``, and with ``per_image`` ``"images"``: each image's
        index, label, predicted class and the configuration it stopped at.
    """
    from ..calibrate import is_calibrated
    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..data.checkpoint import data_from_checkpoint
    from ..data.datasets import random_subset
    from ..layers import config_key
    from ..profiling import resolve_device

    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    if calib_images <= 0 or batch_size <= 0 or (val_images is not None and val_images <= 0):
        raise MutualNetError("--calib-images, --batch-size and --val-images must be positive")
    dev = resolve_device(device)
    casc = Cascade.load(cascade)
    for s in casc.steps:
        model.width_range.check(s.width, "cascade width")
        if not (is_calibrated(model, s.width, s.resolution) or model.width_range.is_top(s.width)):
            raise MutualNetError(f"{config_key(s.width, s.resolution)} has no calibrated BatchNorm statistics in "
                                 f"{checkpoint}; was the cascade fitted on another checkpoint?")
    data = data_from_checkpoint(ckpt, model, dataset=dataset, data_root=data_root, workers=workers)
    val = random_subset(data.build("val", _crop(ckpt, (s.resolution for s in casc.steps))), val_images, seed)
    res = evaluate_cascade(model.to(dev), casc, val, batch_size=batch_size, num_workers=data.workers, device=dev)
    out = {"checkpoint": str(checkpoint), "dataset": data.info, "cascade": casc.to_dict(), "report": res["report"]}
    if per_image:
        out["images"] = [{"index": i, "label": y, "predicted": p, "width": casc.steps[k].width,
                          "resolution": casc.steps[k].resolution}
                         for i, (k, p, y) in enumerate(zip(res["stop"], res["pred"], res["label"]))]
    return out


def describe_cascade_evaluation(result: dict) -> list[str]:
    """The lines ``mutualnet eval --cascade`` prints for :func:`evaluate_checkpoint_cascade`'s result."""
    casc, rep, fit = Cascade.from_dict(result["cascade"]), result["report"], result["cascade"]["fit"]
    expected = (f" (expected on {fit['images']} held-out images: top-1 {fit['top1']:.2f}%, {fit['mflops']:.2f} "
                "MFLOPs)") if fit else ""
    lines = [f"cascade of {len(casc.steps)} steps: top-1 {rep['top1']:.2f}% on {rep['images']} "
             f"{result['dataset']['name']} validation images, {rep['mflops']:.2f} MFLOPs on average{expected}"]
    lines += [f"step {k}: width {s.width:g} at {s.resolution} px ({s.mflops:.2f} MFLOPs): {100 * share:.1f}% of "
              "images stop here" for k, (s, share) in enumerate(zip(casc.steps, rep["stop_share"]))]
    return lines + [f"image {im['index']}: label {im['label']}, predicted {im['predicted']}, width {im['width']:g} "
                    f"at {im['resolution']} px" for im in result.get("images", [])]


def describe_test_report(report: dict) -> str:
    """One line: a fitted cascade's top-1, average MFLOPs and share stopping at each step on the test set."""
    return (f"on {report['images']} test images: top-1 {report['top1']:.2f}%, {report['mflops']:.2f} MFLOPs on "
            "average; stopping at each step: " + ", ".join(f"{100 * s:.1f}%" for s in report["stop_share"]))


def export_checkpoint_cascade(checkpoint: str | os.PathLike, cascade: str | os.PathLike, out: str | os.PathLike, *,
                              fmt: str | None = None) -> tuple[Cascade, Path, str]:
    """What ``mutualnet export --cascade`` does: :func:`export_cascade` of a cascade file on ``checkpoint``'s model,
    with the checkpoint's preprocessing and class names. ``fmt``: torchscript (default) or onnx.

    Returns:
        The cascade, the bundle folder and its format.
    """
    from ..checkpoint import load_checkpoint, model_from_checkpoint

    fmt = fmt or "torchscript"
    if fmt not in BUNDLE_FORMATS:
        raise MutualNetError(f"a cascade bundle is {' or '.join(BUNDLE_FORMATS)}, not {fmt}")
    casc = Cascade.load(cascade)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    path = export_cascade(model, casc, out, class_names=(ckpt.get("meta") or {}).get("class_names"), fmt=fmt)
    return casc, path, fmt
