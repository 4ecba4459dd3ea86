"""The training step of MutualNet: width-resolution mutual learning (Yang et al., ECCV 2020, Sec. 3.3).

Each iteration trains a few sub-networks of one weight-shared network (the *sandwich rule*): the widest
at the highest resolution on the labels, and the narrowest plus ``n - 2`` random widths, each at its own
random resolution, distilled from the widest's prediction. Because the sub-networks share weights, the
accumulated gradient mixes what every width learns at every resolution. A model with elastic stages may add
depth as a third dimension (the narrowest is then also the shallowest; the random ones get random depths).

:func:`sample_subnets` decides *what* runs (one list per training mode, so the paper's baselines share
this code); :func:`train_step` runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# lower resolutions are made from the batch on the training device: one function (and one recorded mode,
# "antialias" or "official") for training, calibration, search and deployment, so every stage sees the same pixels
from ..data.preprocess import DEFAULT_RESIZE, resize_batch
from ..errors import MutualNetError
from ..layers import use_config

__all__ = ["SubNet", "sample_subnets", "train_step", "distill_loss", "alpha_divergence", "dropout_modules"]


@dataclass(frozen=True)
class SubNet:
    """One sub-network of an iteration: its width, its input side, its target and its depth."""

    width: float
    resolution: int
    target: str  # "labels" (cross-entropy) or "teacher" (KL to the first sub-network's detached prediction)
    depth: int | None = None  # blocks each elastic stage runs; None: all (full depth)


def sample_subnets(mode: str, width_range: tuple[float, float], resolutions: list[int], n: int,
                   generator: torch.Generator, depth_range: tuple[int, int] | None = None) -> list[SubNet]:
    """The sub-networks one iteration trains, widest first (its prediction is the teacher).

    With a ``depth_range`` ``(lo, hi)`` (elastic depth, as in Once-for-All and BigNAS) the sandwich is three
    dimensional: the widest runs at full depth, the narrowest at depth ``lo``, the random ones at a random
    depth in ``[lo, hi]``. Without one (the default) nothing else is drawn, so the plan is the paper's, draw
    for draw.

    Args:
        mode: ``mutual``, ``usnet``, ``usnet_msaug``, ``mutual_gt``, ``msaug`` or ``single``
            (see :data:`mutualnet.train.config.MODES`).
        width_range: ``(lo, hi)``; single-network modes have ``lo == hi``.
        resolutions: Training resolutions, highest first (``single``: the one resolution).
        n: Sub-networks per iteration in the sandwich modes.
        generator: The source of randomness; every process uses the same seed, so all draw the same plan.
        depth_range: ``(lo, hi)`` depths of a model with elastic stages (``hi`` its full depth); None or
            ``lo == hi``: full depth only.
    """
    subnets = _sample_2d(mode, width_range, resolutions, n, generator)
    if depth_range is None or depth_range[0] >= depth_range[1] or len(subnets) < 2:
        return subnets
    d_lo, d_hi = int(depth_range[0]), int(depth_range[1])
    depths = [d_lo] + [int(torch.randint(d_lo, d_hi + 1, (1,), generator=generator)) for _ in subnets[2:]]
    return subnets[:1] + [dataclasses.replace(s, depth=None if d == d_hi else d)
                          for s, d in zip(subnets[1:], depths)]


def _sample_2d(mode: str, width_range: tuple[float, float], resolutions: list[int], n: int,
               generator: torch.Generator) -> list[SubNet]:
    """The paper's plan: widths and resolutions (see :func:`sample_subnets`)."""
    lo, hi = width_range

    def rand_res() -> int:
        return resolutions[int(torch.randint(len(resolutions), (1,), generator=generator))]

    if mode == "single":
        return [SubNet(hi, resolutions[0], "labels")]
    if mode == "msaug":
        return [SubNet(hi, rand_res(), "labels")]
    widths = [lo] + [lo + (hi - lo) * float(torch.rand((), generator=generator)) for _ in range(n - 2)]
    if mode == "mutual":
        return [SubNet(hi, resolutions[0], "labels")] + [SubNet(w, rand_res(), "teacher") for w in widths]
    if mode == "mutual_gt":
        return [SubNet(hi, resolutions[0], "labels")] + [SubNet(w, rand_res(), "labels") for w in widths]
    if mode == "usnet":
        return [SubNet(hi, resolutions[0], "labels")] + [SubNet(w, resolutions[0], "teacher") for w in widths]
    if mode == "usnet_msaug":
        r = rand_res()
        return [SubNet(hi, r, "labels")] + [SubNet(w, r, "teacher") for w in widths]
    raise ValueError(f"unknown mode {mode!r}")


def distill_loss(logits: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student), batch mean, on softened distributions (scaled by T^2 to keep gradient size).

    Per-pixel outputs ``(N, C, H, W)`` (segmentation): the teacher's map is resized (bilinear) to the student's
    size, which differs at another resolution, and the divergence is averaged over pixels as well as images, so
    its scale does not grow with the map.
    """
    t = temperature
    if logits.dim() > 2 and teacher.shape[2:] != logits.shape[2:]:
        teacher = F.interpolate(teacher.float(), size=logits.shape[2:], mode="bilinear", align_corners=False)
    student = F.log_softmax(logits.float() / t, dim=1)
    target = F.log_softmax(teacher.float() / t, dim=1)
    positions = logits.numel() // logits.shape[1]  # images x pixels
    return F.kl_div(student, target, reduction="sum", log_target=True) / positions * (t * t)


def one_output(out: object) -> Tensor:
    """The tensor a sub-network is trained on; a model with several outputs is refused in one line that says how
    to choose one (``mutualnet.slim(model, output=...)``)."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict):
        what = f"a dict of outputs {', '.join(map(repr, out))}"
        example = repr(next(iter(out), "out"))
    elif isinstance(out, (tuple, list)):
        what, example = f"a {type(out).__name__} of {len(out)} outputs", "0"
    else:
        what, example = f"a {type(out).__name__}", "0"
    raise MutualNetError(f"the model returns {what}; the sandwich step trains one output tensor: choose it when "
                         f"converting, mutualnet.slim(model, output={example}) (a key or a position)")


IGNORE_INDEX = 255  # a pixel labelled so is trained and scored by nothing (borders, "void"): torchvision's references


def _dense_labels(labels: Tensor, logits: Tensor) -> Tensor:
    """Per-pixel labels ``(N, H, W)`` at the size of a per-pixel output (nearest: classes are not averaged); pixels
    labelled :data:`IGNORE_INDEX` take no part in the loss."""
    if logits.dim() > 2 and labels.dim() == logits.dim() - 1 and labels.shape[1:] != logits.shape[2:]:
        return F.interpolate(labels[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
    return labels


def _alpha_side(log_q: Tensor, log_p: Tensor, alpha: float, clip: float) -> tuple[Tensor, Tensor]:
    """D_alpha(p || q) per row, and a surrogate whose gradient (through ``log_q`` only) is its clipped gradient.

    The gradient of D_alpha with respect to the student is ``-sum_c q_c w_c grad log q_c`` with importance weight
    ``w = (p/q)^alpha / alpha`` (``p/q`` at alpha = 1, ``log(p/q)`` at alpha = 0; a constant added to ``w``
    changes nothing, as ``sum_c q_c grad log q_c = 0``). ``(p/q)^alpha`` (alpha = 0: ``p/q``) is clipped at
    ``clip`` so that a class the student all but rules out cannot blow the step up; the KL side (alpha = 1) is
    left unclipped, as in AlphaNet's code, so that it stays the paper's loss. On that side ``q w`` is ``p`` itself:
    formed as ``q * (p/q)`` it is ``0 * inf = nan`` where the student's probability underflows (a logit gap above
    ~100, met early in training), while the paper's loss stays finite there.
    """
    q, log_r = log_q.exp().detach(), (log_p - log_q).detach()
    if abs(alpha - 1) < 1e-3:  # KL(p || q), unclipped: the paper's loss
        p = log_p.exp()
        div, qw = (p * log_r).sum(1), p
    elif abs(alpha) < 1e-3:  # KL(q || p)
        log_r = log_r.clamp(max=math.log(clip))
        div, qw = -(q * log_r).sum(1), q * log_r
    else:
        r_alpha = (alpha * log_r).exp().clamp(max=clip)
        div, qw = (q * (r_alpha - 1)).sum(1) / (alpha * (alpha - 1)), q * r_alpha / alpha
    return div, -(qw * log_q).sum(1)


def alpha_divergence(logits: Tensor, teacher: Tensor, alpha_min: float = -1.0, alpha_max: float = 1.0,
                     clip: float = 5.0, temperature: float = 1.0) -> Tensor:
    """AlphaNet's adaptive alpha-divergence of the student from the teacher, batch mean (Wang et al., ICML 2021).

    ``D_alpha(p || q) = sum_c q_c ((p_c / q_c)^alpha - 1) / (alpha (alpha - 1))`` for teacher ``p`` and student
    ``q``: alpha = 1 is KL(p || q), the paper's loss, which punishes a student that misses the teacher's mass but
    barely one that spreads mass the teacher does not have (over-estimated uncertainty); alpha < 0 punishes the
    latter. Each image takes whichever of ``alpha_min`` and ``alpha_max`` gives the larger divergence (the side
    the student is worse on), and the gradient's importance weights are clipped at ``clip`` (see
    :func:`_alpha_side`), as AlphaNet's code does. With ``alpha_min == alpha_max == 1`` this is
    :func:`distill_loss`, value and gradient.

    Returns:
        The chosen divergences' mean (what is logged), carrying the clipped gradient.
    """
    t = temperature
    log_q = F.log_softmax(logits.float() / t, dim=1)
    log_p = F.log_softmax(teacher.float().detach() / t, dim=1)
    div_lo, sur_lo = _alpha_side(log_q, log_p, alpha_min, clip)
    div_hi, sur_hi = _alpha_side(log_q, log_p, alpha_max, clip)
    lower = div_lo > div_hi
    div, sur = torch.where(lower, div_lo, div_hi).mean(), torch.where(lower, sur_lo, sur_hi).mean()
    return (div + sur - sur.detach()) * (t * t)  # the value of div, the gradient of sur


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The dropout and drop-path modules of ``model`` (torch's, torchvision's StochasticDepth, timm's DropPath)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)
            or type(m).__name__ in ("DropPath", "StochasticDepth")]


@contextlib.contextmanager
def _dropout(model: nn.Module, on: bool) -> Iterator[None]:
    """Dropout and drop-path as in ``model.train()`` when ``on``, switched off for the block otherwise."""
    off = [] if on else [m for m in dropout_modules(model) if m.training]
    for m in off:
        m.training = False
    try:
        yield
    finally:
        for m in off:
            m.training = True


def train_step(model: nn.Module, images: Tensor, labels: Tensor, subnets: list[SubNet], *,
               label_smoothing: float = 0.0, temperature: float = 1.0,
               autocast: contextlib.AbstractContextManager | None = None,
               scaler: torch.amp.GradScaler | None = None, resize: str = DEFAULT_RESIZE,
               distill: Callable[[Tensor, Tensor], Tensor] | None = None, regularize: str = "all") -> Tensor:
    """Forward and backward every sub-network; their gradients accumulate in ``.grad``.

    The caller zeroes the gradients before and takes one optimizer step after. Each sub-network is
    backpropagated right after its forward pass, so only one graph is alive at a time and peak memory
    stays near that of one full-network step. The first sub-network (the widest) runs first: its
    detached prediction is the teacher of the others.

    ``resize`` is how each sub-network's input is made from ``images`` (see
    :func:`mutualnet.data.preprocess.resize_batch`): ``"antialias"`` or ``"official"`` (the original code's
    ``align_corners=True`` bilinear).

    ``distill(student_logits, teacher_logits)`` is the loss of the ``"teacher"`` targets (None: :func:`distill_loss`
    at ``temperature``; :func:`alpha_divergence` is AlphaNet's). ``regularize="widest"`` runs dropout and
    drop-path only in the first sub-network (BigNAS: regularise only the biggest child; the others, which
    under-fit rather than over-fit, run without).

    Returns:
        The detached loss of each sub-network, in ``subnets`` order.
    """
    teacher, losses = None, []
    for i, net in enumerate(subnets):
        x = resize_batch(images, net.resolution, resize)
        with (use_config(model, net.width, net.resolution, net.depth), autocast or contextlib.nullcontext(),
              _dropout(model, on=i == 0 or regularize == "all")):
            logits = one_output(model(x))
        if net.target == "labels":
            target = _dense_labels(labels, logits)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing,
                                   ignore_index=IGNORE_INDEX if target.dim() > 1 else -100)
        else:
            loss = distill(logits, teacher) if distill is not None else distill_loss(logits, teacher, temperature)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if teacher is None:
            teacher = logits.detach()
        losses.append(loss.detach())
    return torch.stack(losses)
