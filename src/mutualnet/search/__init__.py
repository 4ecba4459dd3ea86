"""The query table: every width x resolution, its accuracy and cost, and budget selection."""

from .grid import width_grid

__all__ = ["width_grid"]
