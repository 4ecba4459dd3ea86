"""Elastic depth: a stage of blocks that runs only its first ``d`` blocks at depth ``d`` (as in Once-for-All).

A model marks each block of a stage with its position in the stage (``block.elastic_index``: 0 for the first
block, which changes the shape and always runs; 1, 2, ... for the identity-shaped blocks after it) and holds
its blocks in an :class:`ElasticSequential`. At the active depth ``d`` (``SlimState.depth``) the container
skips every block whose index is ``d`` or more; a skipped block is an identity, so the next one sees the same
shape. Keeping the marks on the blocks (not in a per-stage container) leaves a model's module layout, and so
its state-dict keys, exactly as they were: torchvision-compatible networks stay compatible.
"""

from __future__ import annotations

from torch import Tensor, nn

from .config import SlimState

__all__ = ["ElasticSequential", "runs_at", "mark_stage", "skipped_blocks", "full_depth"]


def runs_at(block: nn.Module, depth: int | None) -> bool:
    """Whether ``block`` runs at ``depth`` (None: full depth, everything runs)."""
    return depth is None or getattr(block, "elastic_index", 0) < depth


def mark_stage(blocks: list[nn.Module]) -> list[nn.Module]:
    """Mark the blocks of one stage with their positions (the first always runs); returns ``blocks``."""
    for i, block in enumerate(blocks):
        block.elastic_index = i
    return blocks


class ElasticSequential(nn.Sequential):
    """``nn.Sequential`` whose marked blocks run only up to the active depth (see the module docstring).

    At full depth (``slim_state.depth is None``) it runs exactly what ``nn.Sequential`` runs.
    """

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__(*modules)
        self.slim_state = SlimState()  # replaced by the model's shared state (bind_state)

    def forward(self, x: Tensor) -> Tensor:
        depth = self.slim_state.depth
        for block in self:
            if runs_at(block, depth):
                x = block(x)
        return x

    def to_dense(self) -> nn.Sequential:
        """A plain ``nn.Sequential`` of the blocks that run at the active depth; skipped ones become
        ``nn.Identity`` (no parameters, no operations), so the module names of the others stay as they were."""
        depth = self.slim_state.depth
        return nn.Sequential(*(block if runs_at(block, depth) else nn.Identity() for block in self))


def skipped_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of ``model`` that do not run at its active depth."""
    out = []
    for m in model.modules():
        if isinstance(m, ElasticSequential):
            out += [b for b in m if not runs_at(b, m.slim_state.depth)]
    return out


def full_depth(model: nn.Module) -> int | None:
    """The longest elastic stage's number of blocks, None for a model without elastic stages."""
    found = [getattr(b, "elastic_index", 0) + 1 for m in model.modules() if isinstance(m, ElasticSequential)
             for b in m]
    return max(found) if found else None
