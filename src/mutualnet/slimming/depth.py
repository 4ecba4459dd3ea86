"""Elastic depth for converted networks: every run of identity-shaped residual blocks becomes skippable.

``slim(model, depth_range=(lo, full))`` calls :func:`make_depth_elastic` after the width conversion. In every
``nn.Sequential`` of the model, a child that is a *residual block of unchanged shape* (its output has its input's
shape at the narrowest and the widest width, and its forward adds its input to something) continues the stage
of the child before it; any other child starts a new stage. A stage's blocks are marked with their positions
(:func:`mutualnet.layers.mark_stage`) and the ``nn.Sequential`` becomes an
:class:`~mutualnet.layers.ElasticSequential`, so at depth ``d`` a stage runs its first ``d`` blocks, as the zoo's
hand-written stages do (Once-for-All). Only residual blocks are skipped: skipping one leaves the shortcut, which
is what the block computes when its branch contributes nothing; a plain convolution of equal shape is not
skippable (the next layer was never trained to see its input).

What changes is the class of the containers and a mark on each block: parameters, state-dict keys and the
computation at full depth stay exactly the network's own.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.stateless import _reparametrize_module

from ..layers import ElasticSequential, SlimState, is_slimmable, mark_stage, use_width

__all__ = ["make_depth_elastic", "is_residual"]

_ADDS = {operator.add, operator.iadd, torch.add}


class _LeafTracer(fx.Tracer):
    """Traces one block, keeping the slimmable layers (and torch's own) as calls."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_slimmable(m) or super().is_leaf_module(m, qualname)


def is_residual(block: nn.Module) -> bool:
    """Whether ``block``'s forward adds its input (directly, or through an ``nn.Identity`` shortcut) to something.

    A block ``fx`` cannot trace is not treated as residual (it stays, whatever the depth).
    """
    try:
        graph = _LeafTracer().trace(block)
    except Exception:  # noqa: BLE001 - any tracing failure means "not a block we can reason about"
        return False
    mods = dict(block.named_modules())
    inputs = [n for n in graph.nodes if n.op == "placeholder"][:1]
    if not inputs:
        return False

    def is_input(node: object) -> bool:
        while isinstance(node, fx.Node) and node.op == "call_module" and isinstance(mods.get(node.target),
                                                                                    nn.Identity):
            node = node.args[0]
        return node is inputs[0]

    for n in graph.nodes:
        add = (n.op == "call_function" and n.target in _ADDS) or (n.op == "call_method" and n.target in
                                                                   ("add", "add_"))
        if add and any(is_input(a) for a in n.args[:2]):
            return True
    return False


def _shapes(model: nn.Module, example: Tensor, widths: list[float]) -> dict[int, list[tuple]]:
    """``id(child) -> [(input shape, output shape) per width]`` of every child of every ``nn.Sequential``, from
    forward passes on the meta device (no arithmetic, nothing of the model changes)."""
    seen: dict[int, list[tuple]] = {}
    children = {id(c): c for m in model.modules() if isinstance(m, nn.Sequential) for c in m}

    def hook(mod: nn.Module, args: tuple, out: object) -> None:
        if args and isinstance(args[0], Tensor) and isinstance(out, Tensor):
            seen.setdefault(id(mod), []).append((tuple(args[0].shape), tuple(out.shape)))

    hooks = [c.register_forward_hook(hook) for c in children.values()]
    meta = {k: torch.empty_like(v, device="meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
    was = model.training
    try:
        model.train()  # batch statistics: no calibrated statistics needed below the top width
        with torch.no_grad(), _reparametrize_module(model, meta):
            for w in widths:
                with use_width(model, w):
                    model._slim_base.forward(model, torch.empty_like(example, device="meta"))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return seen


def make_depth_elastic(model: nn.Module, example: Tensor) -> int | None:
    """Make the runs of identity-shaped residual blocks of a converted ``model`` elastic (see the module docstring).

    Returns:
        The full depth (the longest stage's number of blocks), or None when no ``nn.Sequential`` holds such a run.
    """
    lo, hi = model.width_range
    shapes = _shapes(model, example, [hi, lo])
    full = None
    for seq in [m for m in model.modules() if type(m) is nn.Sequential]:
        stages: list[list[nn.Module]] = []
        for i, child in enumerate(seq):
            io = shapes.get(id(child), [])
            same = len(io) == 2 and all(a == b for a, b in io)
            if i > 0 and same and is_residual(child):
                stages[-1].append(child)
            else:
                stages.append([child])
        if all(len(s) == 1 for s in stages):
            continue
        for s in stages:
            mark_stage(s)
        seq.__class__ = ElasticSequential
        seq.slim_state = SlimState()  # bound to the model's shared state by the caller
        full = max(full or 1, *(len(s) for s in stages))
    return full
