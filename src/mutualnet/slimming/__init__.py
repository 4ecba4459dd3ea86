"""Any CNN becomes a MutualNet network: slimming by graph analysis.

``mutualnet.slim(model, width_range=(0.25, 1.0))`` traces ``model`` with ``torch.fx``, finds the channels
that must stay equal in number (:mod:`.graph`), and swaps its convolutions, BatchNorms and linears for
the slimmable layers of :mod:`mutualnet.layers`, bound to one shared state (:mod:`.convert`).
"""

from .convert import SlimmedNet, slim
from .graph import Plan, analyse

__all__ = ["slim", "SlimmedNet", "analyse", "Plan"]
