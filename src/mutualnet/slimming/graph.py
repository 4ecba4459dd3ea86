"""Which channels of a network can be slimmed together: graph analysis with ``torch.fx``.

A slimmable network computes, at width ``w``, with the *leading* channels of every layer. That is only a
valid network when every place where two tensors meet agrees on how many channels are active: the two
sides of a residual addition, a depthwise or grouped convolution's input and output, a squeeze-and-
excitation gate and the tensor it scales. :func:`analyse` traces the model and merges such tensors into
*channel groups* (union-find); each group gets one channel count per width.

What the analysis records per group:

* ``channels`` at width 1.0 and a ``ratio`` for :func:`~mutualnet.layers.slim_channels`: a group made by a
  1x1 convolution that multiplies its input's channels by ``t`` (an inverted residual's expansion, a
  bottleneck's 4x) gets ratio ``t``, so it stays exactly ``t`` times its input at every width, as the
  hand-written models and torchvision's ``width_mult`` compute it.
* ``fixed``: the group keeps all its channels (the image, the model's outputs, a layer the user names, a
  group whose channels the rounding rule cannot reproduce at width 1.0, such as a 4-channel SE squeeze).

Tensors that are concatenated along channels keep their parts as *segments* (see
:mod:`mutualnet.layers.concat`); a flatten before a classifier multiplies each channel into ``H*W``
features. An operation the analysis does not understand (a channel split or shuffle, a permute, a
LayerNorm over channels, a per-channel parameter) is fine on fixed groups and a refusal on slimmed ones:
:class:`~mutualnet.errors.MutualNetError` names the node and why, never a silently wrong network.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils.stateless import _reparametrize_module

from ..errors import MutualNetError
from . import known

__all__ = ["Seg", "GroupInfo", "Port", "Cut", "Plan", "analyse", "cut_key"]

DIVISOR = 8  # the channel rule's multiple (layers/helpers.py)


@dataclass(frozen=True)
class Seg:
    """One part of a tensor's channels: a group, and how many features each channel became (flatten)."""

    group: int
    mult: int = 1


Label = tuple[Seg, ...]


@dataclass
class GroupInfo:
    """A set of channels that must stay equal in number at every width."""

    channels: int
    ratio: int = 1
    fixed: str | None = None  # why the group keeps all its channels
    first: str = ""  # the first node producing it (for messages)
    multiple: int = 1  # active channels must be a multiple of this (grouped convolutions)


@dataclass
class Port:
    """How one Conv2d / BatchNorm2d / Linear module reads and writes channel groups."""

    kind: str  # conv | depthwise | group_width | grouped | bn | linear
    inp: Label
    out: Label


@dataclass(frozen=True)
class Cut:
    """A channel split or slice whose sizes are numbers in a model's code (``x.split([10, 30], 1)``,
    ``x[:, :117]``): the converted model computes them from the width instead (``ChannelCut``).

    ``module`` is the module whose own forward holds the node; ``key`` and ``index`` find it again when that
    forward is traced alone (the ``index``-th node with ``key``); ``parts`` are the labels of the consecutive
    channel ranges (a slice: the ranges before the one it takes, then that one); ``rest`` a slice's index after
    the channel dimension.
    """

    module: str
    key: tuple
    index: int
    kind: str  # split | slice
    parts: tuple[Label, ...]
    rest: tuple = ()


@dataclass
class Plan:
    """The result of :func:`analyse`: groups, the layers to replace, and notes for the user."""

    groups: dict[int, GroupInfo]
    ports: dict[str, Port]
    stages: list[tuple[str, Label, int]] = field(default_factory=list)  # (fx node, label, reduction) per stage
    stage_graph: fx.Graph | None = None
    notes: list[str] = field(default_factory=list)
    output: str | int | None = None  # which of several outputs the converted model returns (slim(output=...))
    cuts: list[Cut] = field(default_factory=list)  # channel splits / slices with sizes written in the code

    def slimmed(self, label: Label) -> bool:
        return any(self.groups[s.group].fixed is None for s in label)


# -- operations by what they do to channels ---------------------------------------------------------------
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.ELU,
                nn.LeakyReLU, nn.Mish, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
# spatial only: each output channel is made from the same input channel
_SPATIAL = (nn.Upsample, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)
_UNARY_FUNCTIONS = {F.relu, F.relu6, torch.relu, F.hardswish, F.hardsigmoid, F.silu, F.gelu, F.elu, F.leaky_relu,
                    F.mish, torch.sigmoid, F.sigmoid, torch.tanh, F.dropout, F.dropout2d, F.max_pool2d,
                    F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate, F.upsample, F.pad,
                    operator.neg}
_UNARY_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "contiguous", "clone", "detach", "float", "half",
                  "to", "type_as", "neg"}
_BINARY = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.isub, operator.truediv,
           torch.add, torch.mul, torch.sub, torch.div}
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
_RESHAPE_METHODS = {"flatten", "view", "reshape", "unsqueeze", "squeeze", "expand", "expand_as"}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var"}
_NO_TENSOR_METHODS = {"size", "dim"}


def _stochastic_depth() -> set:
    try:
        from torchvision.ops import stochastic_depth
    except ImportError:  # pragma: no cover
        return set()
    return {stochastic_depth}


class _Refusal:
    def __init__(self, node: fx.Node, what: str, reason: str, label: Label) -> None:
        stack = node.meta.get("nn_module_stack") or {}
        where = ""
        if stack:
            path, cls = next(reversed(stack.values()))
            where = f"{path} ({getattr(cls, '__name__', str(cls).rsplit('.', 1)[-1].rstrip(chr(39) + '>'))})"
        self.text = f"node '{node.name}' ({what}{', in ' + where if where else ''}) {reason}"
        self.groups = {s.group for s in label}


def _shape(node: object) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _what(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_method":
        return f".{t}()"
    return getattr(t, "__name__", str(t))


class _Analysis:
    def __init__(self, model: nn.Module, fixed_modules: set[str], presplit: dict[str, tuple[int, ...]] | None = None
                 ) -> None:
        self.model = model
        self.fixed_modules = fixed_modules
        # module -> the parts its output is cut into further on (a channel split): made as segments from the start
        self.presplit = presplit or {}
        self.requests: dict[str, set[int]] = {}  # module -> cut points a split asked for (the next pass's presplit)
        self.origin: dict[int, tuple[str, int, int]] = {}  # group -> (module making it, offset in its output, total)
        self.parent: list[int] = []
        self.groups: list[GroupInfo] = []
        self.ports: dict[str, Port] = {}
        self.refusals: list[_Refusal] = []
        self.expansions: list[tuple[int, int, int]] = []  # (out group, in group, t): 1x1 conv multiplying by t
        self.module_out: dict[str, Label] = {}
        self.sd = _stochastic_depth()
        self.leaves = known.leaf_types()
        self.cuts: dict[tuple, Cut] = {}  # (module, key, index) -> the cut
        self._seen: dict[tuple, int] = {}  # (module, key) -> occurrences so far in the graph being run

    # -- union-find ----------------------------------------------------------------------------------
    def new(self, channels: int, first: str, fixed: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(GroupInfo(int(channels), fixed=fixed, first=first))
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: Label, b: Label, node: fx.Node, why: str) -> None:
        if len(a) != len(b) or any(x.mult != y.mult for x, y in zip(a, b)):
            if all(s.mult == 1 for s in a + b):  # the next pass makes both sides in the same parts
                self._align(a, b)
                self._align(b, a)
            self.refusals.append(_Refusal(node, _what(node), f"{why} tensors whose channels are laid out "
                                          "differently (a concatenation meets a plain tensor)", a + b))
            return
        for x, y in zip(a, b):
            ra, rb = self.find(x.group), self.find(y.group)
            if ra == rb:
                continue
            ga, gb = self.groups[ra], self.groups[rb]
            if ga.channels != gb.channels:
                raise MutualNetError(f"node '{node.name}' {why} tensors of {ga.channels} and {gb.channels} channels")
            self.parent[rb] = ra
            ga.fixed = ga.fixed or gb.fixed
            ga.multiple = math.lcm(ga.multiple, gb.multiple)

    # -- one traced graph ----------------------------------------------------------------------------
    def run(self, gm: fx.GraphModule) -> dict[fx.Node, Label | None]:
        env: dict[fx.Node, Label | None] = {}
        seen_input = False
        self._seen = {}
        for node in gm.graph.nodes:
            shape = _shape(node)
            if node.op == "placeholder":
                env[node] = None
                if not seen_input and shape is not None and len(shape) >= 2:
                    env[node] = (Seg(self.new(shape[1], node.name, fixed="the image (stem input)")),)
                    seen_input = True
            elif node.op == "get_attr":
                env[node] = self._opaque_out(node, shape, "a parameter or buffer")
            elif node.op == "call_module":
                env[node] = self._module(node, gm.get_submodule(node.target), env, shape)
            elif node.op in ("call_function", "call_method"):
                env[node] = self._function(node, env, shape)
            elif node.op == "output":
                for leaf in _leaves(node.args, env):
                    for s in leaf:
                        root = self.groups[self.find(s.group)]
                        root.fixed = root.fixed or "a model output (classifier outputs stay fixed)"
        return env

    def _opaque_out(self, node: fx.Node, shape: tuple[int, ...] | None, why: str) -> Label | None:
        if shape is None or len(shape) < 2:
            return None
        return (Seg(self.new(shape[1], node.name, fixed=f"made by {why} ({node.name})")),)

    def _input(self, node: fx.Node, env: dict) -> Label | None:
        return env.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None

    def _refuse(self, node: fx.Node, reason: str, labels: list[Label | None], shape: tuple[int, ...] | None,
                what: str | None = None) -> Label | None:
        label = tuple(s for lab in _flat(labels) for s in lab)
        if label:
            self.refusals.append(_Refusal(node, what or _what(node), reason, label))
        return self._opaque_out(node, shape, what or _what(node))

    def _module(self, node: fx.Node, mod: nn.Module, env: dict, shape: tuple[int, ...] | None) -> Label | None:
        name = str(node.target)
        lab = self._input(node, env)
        what = f"{type(mod).__name__} {name}"
        if lab is None:
            return self._opaque_out(node, shape, what)
        if isinstance(mod, nn.Conv2d) and (type(mod).forward is nn.Conv2d.forward or known.is_conv2d_same(mod)):
            return self._conv(node, name, mod, lab, shape)
        post = known.fused_norm_post(mod)
        if isinstance(mod, nn.BatchNorm2d) and (type(mod).forward is nn.BatchNorm2d.forward or post):
            bad = [n for n in post or () if not known.channel_agnostic(getattr(mod, n), shape or ())]
            if bad:
                return self._refuse(node, f"applies {type(getattr(mod, bad[0])).__name__} after normalising, which "
                                    "does not run on fewer channels (it has per-channel parameters)", [lab], shape,
                                    what)
            if not (mod.affine and mod.track_running_stats):
                return self._refuse(node, "is a BatchNorm without affine parameters or running statistics", [lab],
                                    shape, what)
            self._port(node, name, Port("bn", lab, lab))
            return lab
        if isinstance(mod, nn.BatchNorm1d) and type(mod).forward is nn.BatchNorm1d.forward:
            in_shape = _shape(node.args[0])
            if not (mod.affine and mod.track_running_stats) or in_shape is None or len(in_shape) != 2 \
                    or any(s.mult != 1 for s in lab):
                return self._refuse(node, "is a BatchNorm1d without affine parameters or running statistics, or "
                                    "over a tensor that is not (batch, channels)", [lab], shape, what)
            self._port(node, name, Port("bn1d", lab, lab))
            return lab
        if known.is_linear(mod):
            in_shape = _shape(node.args[0])
            if in_shape is None or len(in_shape) != 2:
                return self._refuse(node, "applies a Linear layer to a tensor that is not (batch, features)",
                                    [lab], shape, what)
            return self._new_output(node, name, Port("linear", lab, ()), mod.out_features)
        if isinstance(mod, _ACTIVATIONS) or (isinstance(mod, nn.PReLU) and mod.num_parameters == 1):
            return lab
        if isinstance(mod, nn.ConvTranspose2d) and type(mod).forward is nn.ConvTranspose2d.forward:
            if mod.groups != 1 or mod.padding_mode != "zeros" or any(s.mult != 1 for s in lab) or len(lab) != 1:
                return self._refuse(node, "is a grouped transposed convolution or reads a flattened or concatenated "
                                    "tensor (only one-group ConvTranspose2d on a plain tensor is slimmable)", [lab],
                                    shape, what)
            return self._new_output(node, name, Port("conv_transpose", lab, ()), mod.out_channels)
        if isinstance(mod, _SPATIAL):
            return lab if self._keeps_channels(node, shape) else self._refuse(
                node, "changes the channel dimension", [lab], shape, what)
        if isinstance(mod, _POOLS):
            return lab if shape is not None and len(shape) == 4 else self._refuse(
                node, "pools a tensor that is not (N, C, H, W)", [lab], shape, what)
        if isinstance(mod, nn.Flatten):
            return self._flatten(node, lab, shape)
        if known.is_blur_pool(mod):
            if any(s.mult != 1 for s in lab):
                return self._refuse(node, "blurs a flattened tensor", [lab], shape, what)
            self._port(node, name, Port("blur", lab, lab))
            return lab
        if isinstance(mod, self.leaves):
            if self._keeps_channels(node, shape) and known.channel_agnostic(mod, _shape(node.args[0]) or ()):
                return lab  # runs unchanged on the active channels: its narrower sub-network is itself
            return self._refuse(node, f"is a {type(mod).__name__}, a layer traced as a whole (timm's no-trace registry "
                                "or a timm layer known here) that does not run on fewer channels (it has per-channel "
                                "parameters or state, or a fixed channel count)", [lab], shape, what)
        return self._refuse(node, f"is a {type(mod).__name__}, which has no slimmable version (it mixes or "
                            "normalises across channels or keeps per-channel state)", [lab], shape, what)

    def _keeps_channels(self, node: fx.Node, shape: tuple[int, ...] | None) -> bool:
        in_shape = _shape(node.args[0]) if node.args else None
        return shape is not None and in_shape is not None and len(shape) >= 2 and shape[:2] == in_shape[:2]

    def _port(self, node: fx.Node, name: str, port: Port) -> None:
        old = self.ports.get(name)
        if old is None:
            self.ports[name] = port
        else:  # a module called twice reads the same channels both times
            self.union(old.inp, port.inp, node, "calls one module on")

    def _new_output(self, node: fx.Node, name: str, port: Port, channels: int) -> Label:
        if name in self.module_out:
            out = self.module_out[name]
        else:
            fixed = "named in fixed=" if name in self.fixed_modules else None
            parts = self.presplit.get(name) if port.kind in ("conv", "linear") else None
            parts = parts if parts and sum(parts) == channels else (channels,)
            out = self.module_out[name] = tuple(Seg(self.new(c, name, fixed=fixed)) for c in parts)
            for k, seg in enumerate(out):
                self.origin[seg.group] = (name, sum(parts[:k]), channels)
        port.out = out
        self._port(node, name, port)
        return out

    def _conv(self, node: fx.Node, name: str, mod: nn.Conv2d, lab: Label, shape) -> Label | None:
        what = f"Conv2d {name}"
        if mod.padding_mode != "zeros":
            return self._refuse(node, f"uses padding_mode={mod.padding_mode!r} (only zero padding is slimmable)",
                                [lab], shape, what)
        if any(s.mult != 1 for s in lab):
            return self._refuse(node, "convolves a flattened tensor", [lab], shape, what)
        g, cin, cout = mod.groups, mod.in_channels, mod.out_channels
        if g == 1:
            out = self._new_output(node, name, Port("conv", lab, ()), cout)
            if len(lab) == len(out) == 1 and mod.kernel_size == (1, 1) and cout % cin == 0 and cout // cin >= 2:
                self.expansions.append((out[0].group, lab[0].group, cout // cin))
            return out
        if len(lab) != 1 and not (g == cin == cout and all(x.mult == 1 for x in lab)):
            return self._refuse(node, "is a grouped convolution reading a concatenation", [lab], shape, what)
        if len(lab) != 1:  # depthwise over a concatenation: each channel its own filter, the same layout out
            self._port(node, name, Port("depthwise", lab, lab))
            return lab
        if cin == cout:
            kind = "depthwise" if g == cin else "group_width"
            self._port(node, name, Port(kind, lab, lab))
            root = self.groups[self.find(lab[0].group)]
            root.multiple = math.lcm(root.multiple, cin // g)
            if name in self.fixed_modules:
                root.fixed = root.fixed or "named in fixed="
            return lab
        out = self._new_output(node, name, Port("grouped", lab, ()), cout)
        for s in lab + out:
            root = self.groups[self.find(s.group)]
            root.multiple = math.lcm(root.multiple, g)
        return out

    def _flatten(self, node: fx.Node, lab: Label, shape) -> Label | None:
        in_shape = _shape(node.args[0])
        if in_shape is None or shape is None or len(in_shape) < 2:
            return self._refuse(node, "reshapes a tensor of unknown shape", [lab], shape)
        keeps = shape == in_shape or (len(shape) >= 2 and shape[:2] == in_shape[:2])
        flat = len(shape) == 2 and shape[0] == in_shape[0] and shape[1] == math.prod(in_shape[1:])
        fixed = _literal_channel_size(node)
        if (keeps or flat) and fixed is not None:
            return self._refuse(node, f"reshapes to a size fixed in the code ({fixed} features or channels in "
                                f"dimension 1): at a narrower width the tensor has fewer; compute it from the "
                                "input (x.flatten(1), x.view(x.size(0), -1))", [lab], shape)
        if keeps:
            return lab  # dimension 1 untouched: (N, C) <-> (N, C, 1, 1), expand_as, (N, C, H*W)
        if flat:
            mult = math.prod(in_shape[2:])
            return tuple(Seg(s.group, s.mult * mult) for s in lab)
        if len(shape) == len(in_shape) + 1 and shape[0] == in_shape[0] and shape[1] * shape[2] == in_shape[1]:
            return self._refuse(node, f"splits {in_shape[1]} channels into {shape[1]} groups of {shape[2]} "
                                f"({_group_split_use(node)}): at narrower widths the groups would hold other "
                                "channels", [lab], shape)
        return self._refuse(node, f"reshapes {list(in_shape)} to {list(shape)}, which moves the channel dimension "
                            "(only flattening (N, C, H, W) to (N, C*H*W) keeps channels in order)", [lab], shape)

    def _function(self, node: fx.Node, env: dict, shape) -> Label | None:
        t = node.target
        if t is operator.getitem and isinstance(env.get(node.args[0]), list):  # one part of a channel split
            parts = env[node.args[0]]
            return parts[node.args[1]] if isinstance(node.args[1], int) else self._refuse(
                node, "indexes the parts of a split with a slice", parts, shape)
        args: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), args.append)  # every tensor argument, also inside lists
        labels = [env.get(a) for a in args]
        if not any(labels):
            return self._opaque_out(node, shape, _what(node)) if shape is not None else None
        lab = self._input(node, env)
        method = t if node.op == "call_method" else None
        if method in _NO_TENSOR_METHODS or (t is getattr and node.op == "call_function"):
            return None
        if t in _UNARY_FUNCTIONS or t in self.sd or method in _UNARY_METHODS:
            if lab is not None and shape is not None and _shape(node.args[0]) is not None \
                    and shape[:2] == _shape(node.args[0])[:2]:
                return lab
            return self._refuse(node, "changes the channel dimension", labels, shape)
        if t in _BINARY or method in _BINARY_METHODS:
            return self._binary(node, args, env, shape)
        if t in (torch.cat, torch.concat):
            return self._cat(node, env, shape)
        if t is torch.flatten or method in _RESHAPE_METHODS:
            return self._flatten(node, lab, shape) if lab is not None else self._refuse(
                node, "reshapes", labels, shape)
        if t in (torch.mean, torch.sum, torch.amax, torch.amin) or method in _REDUCE_METHODS:
            in_shape = _shape(node.args[0])
            if lab is not None and in_shape and shape and len(shape) >= 2 and shape[:2] == in_shape[:2]:
                return lab
            if lab is not None and in_shape and (shape is None or len(shape) < 2 or shape[0] == in_shape[0]):
                # a reduction over the channels (CBAM's spatial attention): its result does not depend on which
                # channels are active, only on the active ones; a new group, fixed
                return self._opaque_out(node, shape, f"a reduction over channels ({_what(node)})")
            return self._refuse(node, "reduces over the batch dimension", labels, shape)
        if t in (torch.chunk, torch.split) or method in ("chunk", "split"):
            return self._split(node, lab, labels)
        if t in (torch.tensor_split,) or method in ("unbind", "tensor_split"):
            return self._refuse(node, "splits the channel dimension: at narrower widths the parts would not be "
                                "leading slices of the full-width parts", labels, shape)
        if t is operator.getitem and lab is not None:
            in_shape = _shape(node.args[0])
            cut = _channel_slice(node, in_shape)
            if cut == (0, in_shape[1] if in_shape else -1):
                return lab  # every channel (GhostNet's x[:, :out_chs] of exactly out_chs): at any width, all of them
            module = _own_module(node)
            if cut is not None and (module is None or cut[1] <= cut[0]):
                return self._refuse(node, f"slices channels {cut[0]}:{cut[1]} of {in_shape[1]}, indices fixed in "
                                    "the code: at a narrower width they would select other channels", labels, shape)
            if cut is not None:  # the producers make the slice a part of their output; its bounds follow the width
                sizes = [n for n in (cut[0], cut[1] - cut[0], in_shape[1] - cut[1]) if n]
                parts = self._cut(node, lab, sizes, shape)
                if parts is None:
                    return self._opaque_out(node, shape, _what(node))
                taken = 1 if cut[0] else 0
                self._record_cut(node, module, "slice", parts[:taken + 1], tuple(node.args[1][2:]))
                return parts[taken]
        if t in (torch.permute, torch.transpose) or method in ("permute", "transpose"):
            return self._refuse(node, "moves the channel dimension (channels-last layers such as ConvNeXt's "
                                "LayerNorm and Linear have no slimmable version)", labels, shape)
        if t is operator.getitem:
            return self._refuse(node, "indexes a tensor or a split (only whole channel groups can be slimmed)",
                                labels, shape)
        return self._refuse(node, "is an operation the analysis does not know how to slim", labels, shape)

    def _split(self, node: fx.Node, lab: Label | None, labels: list) -> list[Label] | Label | None:
        """``x.split(sizes, 1)`` / ``x.chunk(n, 1)``: one label per part (a list), the parts cut on segments."""
        in_shape = _shape(node.args[0])
        arg = node.args[1] if len(node.args) > 1 else next(iter(node.kwargs.values()), None)
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        if lab is None or in_shape is None or len(in_shape) < 2 or dim not in (1, 1 - len(in_shape)):
            return self._refuse(node, f"splits along dimension {dim}", labels, None)
        c = in_shape[1]
        metas = node.meta.get("tensor_meta")
        sizes = [int(m.shape[1]) for m in metas] if isinstance(metas, (tuple, list)) else None
        if sizes is None or sum(sizes) != c:
            return self._refuse(node, "splits the channels into parts of unknown size", labels, None)
        literal = node.target not in (torch.chunk, "chunk") and (
            isinstance(arg, int) or (isinstance(arg, (list, tuple)) and all(isinstance(v, int) for v in arg)))
        module = _own_module(node)
        if literal and len(sizes) > 1 and module is None:  # the model's own forward is not rewritten
            return self._refuse(node, f"splits the channels at sizes fixed in the code ({', '.join(map(str, sizes))}):"
                                " at a narrower width the tensor has fewer channels and would be cut elsewhere",
                                labels, None)
        parts = self._cut(node, lab, sizes, None)
        # explicit sizes, written or computed (x.size(1) - 16), become the parts' active sizes (x.chunk(n) follows)
        if node.target not in (torch.chunk, "chunk") and len(sizes) > 1 and parts is not None and module is not None:
            self._record_cut(node, module, "split", parts)
        return parts

    def _record_cut(self, node: fx.Node, module: str, kind: str, parts: list[Label], rest: tuple = ()) -> None:
        key = cut_key(node)
        index = self._seen.get((module, key), 0)
        self._seen[(module, key)] = index + 1
        self.cuts[(module, key, index)] = Cut(module, key, index, kind, tuple(parts), rest)

    def _cut(self, node: fx.Node, lab: Label, sizes: list[int], shape) -> list[Label] | None:
        """The labels of consecutive channel ranges of ``sizes``; where a range ends inside a segment, ask the
        next pass to make that segment's producers output it in parts (and refuse for this pass)."""
        if any(s.mult != 1 for s in lab):
            self._refuse(node, "splits a flattened tensor", [lab], shape)
            return None
        bounds, start = {0}, 0
        for size in sizes:
            start += size
            bounds.add(start)
        parts: list[list[Seg]] = [[] for _ in sizes]
        seg_start, ok = 0, True
        for s in lab:
            root = self.find(s.group)
            c = self.groups[root].channels
            inside = sorted(b - seg_start for b in bounds if seg_start < b < seg_start + c)
            if inside:
                ok = False
                self._request(root, inside)
            else:
                k = sum(b <= seg_start for b in bounds) - 1
                if k < len(parts):
                    parts[k].append(s)
            seg_start += c
        if not ok:
            self._refuse(node, "splits the channel dimension inside a group that is not made in parts (at narrower "
                         "widths the parts would not be leading slices of the full-width parts)", [lab], shape)
            return None
        return [tuple(p) for p in parts]

    def _request(self, root: int, inside: list[int]) -> None:
        """Ask the next pass to make group ``root`` in parts, cut at ``inside`` (offsets into the group)."""
        for g, (name, offset, total) in self.origin.items():  # every module making this group: cut there
            if self.find(g) == root:
                self.requests.setdefault(name, {0, total}).update(offset + i for i in inside)

    def _align(self, a: Label, b: Label) -> None:
        """Request cuts in ``a``'s segments where ``b``'s segment boundaries fall inside them."""
        bounds, start = set(), 0
        for s in b:
            start += self.groups[self.find(s.group)].channels
            bounds.add(start)
        start = 0
        for s in a:
            c = self.groups[self.find(s.group)].channels
            inside = sorted(x - start for x in bounds if start < x < start + c)
            if inside:
                self._request(self.find(s.group), inside)
            start += c

    def _binary(self, node: fx.Node, args: list[fx.Node], env: dict, shape) -> Label | None:
        channelled: list[Label] = []
        ndim = len(shape) if shape is not None else 0
        for a in args:
            s = _shape(a)
            cdim = 1 - (ndim - len(s)) if s is not None else -1  # the argument's dim broadcast onto channels
            if s is None or ndim < 2 or cdim < 0 or s[cdim] == 1:  # a scalar, or constant over channels
                continue
            lab = env.get(a)
            if lab is None or a.op == "get_attr" or cdim != 1:
                return self._refuse(node, f"combines a tensor with a per-channel constant or parameter ({a.name})",
                                    [env.get(b) for b in args], shape)
            channelled.append(lab)
        if not channelled:
            return self._opaque_out(node, shape, _what(node))
        for other in channelled[1:]:
            self.union(channelled[0], other, node, "adds or multiplies")
        # where the layouts differ (refused in this pass, cut alike in the next), go on with the finer one, so one
        # pass finds every cut a chain of such additions needs (Inception-ResNet's residual blocks)
        return max(channelled, key=len)

    def _cat(self, node: fx.Node, env: dict, shape) -> Label | None:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        labels = [env.get(a) if isinstance(a, fx.Node) else None for a in tensors]
        ndim = len(shape) if shape is not None else 0
        if ndim and dim < 0:
            dim += ndim
        if dim == 1 and all(lab is not None for lab in labels):
            return tuple(s for lab in labels for s in lab)
        return self._refuse(node, f"concatenates along dimension {dim}", labels, shape)

    # -- after all traces ----------------------------------------------------------------------------
    def resolve(self) -> dict[int, GroupInfo]:
        roots = {self.find(g) for g in range(len(self.parent))}
        info = {r: self.groups[r] for r in roots}
        for g in info.values():
            if g.fixed is None and g.channels % DIVISOR:
                g.fixed = f"{g.channels} channels is not a multiple of {DIVISOR} (the rounding rule could not " \
                          "give it back at width 1.0)"
        # ratio: the smallest expansion that makes a group (a group also made by a non-expanding layer gets 1)
        ratio = dict.fromkeys(roots, 1)
        for _ in range(8):
            cands: dict[int, list[int]] = {}
            for out, inp, t in self.expansions:
                ro, ri = self.find(out), self.find(inp)
                if info[ri].fixed is None:
                    cands.setdefault(ro, []).append(t * ratio[ri])
            new = dict(ratio)
            for r in roots:
                made_plainly = self._plain_producers(r)
                c = cands.get(r, [])
                new[r] = 1 if made_plainly or not c else min(c)
            if new == ratio:
                break
            ratio = new
        for r, g in info.items():
            if g.fixed is not None:
                continue
            m = g.multiple // math.gcd(g.multiple, DIVISOR)  # channels are multiples of DIVISOR * ratio
            for cand in (math.lcm(ratio[r], m), m):
                if g.channels % (DIVISOR * cand) == 0:
                    g.ratio = cand
                    break
            else:
                g.fixed = f"{g.channels} channels cannot be split into multiples of {g.multiple} (grouped convolution)"
        return info

    def _plain_producers(self, root: int) -> bool:
        """Whether some layer makes the group without multiplying its input (a 3x3 conv, a 1x1 reduce)."""
        if not hasattr(self, "_producers"):
            made: dict[int, list[bool]] = {}
            exp = {o for o, _, _ in self.expansions}
            for port in self.ports.values():
                if port.kind in ("conv", "grouped", "linear") and port.out:
                    g = port.out[0].group
                    made.setdefault(self.find(g), []).append(g in exp)
            self._producers = made
        return not all(self._producers.get(root, [True]))


def _op_name(node: fx.Node) -> str:
    """``transpose`` for ``x.transpose(...)``, ``torch.transpose(x, ...)`` and ``F.softmax`` alike."""
    return str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))


def _reduces_dim1(node: fx.Node) -> bool:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    return _op_name(node) in ("sum", "mean") and dim in (1, (1,), [1])


def _group_split_use(node: fx.Node) -> str:
    """What a reshape splitting the channels into groups (a new dimension 1) is for, read from how the graph uses
    it: a transpose of the groups is a channel shuffle (ShuffleNet); a sum over them, directly or after a product
    with weights made by a softmax, is split attention's radix groups (ResNeSt's ``SplitAttn``)."""
    users = list(node.users)
    if any(_op_name(u) in ("transpose", "permute") for u in users):
        return "a channel shuffle"
    products = [u for u in users if _op_name(u) in ("mul", "__mul__")]
    if not any(_reduces_dim1(u) for u in users + [v for p in products for v in p.users]):
        return "channel groups in a new dimension"
    todo = [a for p in products for a in p.args if isinstance(a, fx.Node) and a is not node]
    seen = set(todo)
    i = 0
    while i < min(len(todo), 32):  # the weights' recent history, nearest first: a softmax across the groups?
        if _op_name(todo[i]) == "softmax":
            return ("split attention's radix groups, as in ResNeSt: summed over the groups, each weighted by a "
                    "softmax across them")
        todo += [a for a in todo[i].all_input_nodes if a not in seen]
        seen.update(todo[i].all_input_nodes)
        i += 1
    return "summed over the groups, as split attention does"


def _literal_channel_size(node: fx.Node) -> int | None:
    """The size a ``view`` / ``reshape`` gives dimension 1 when it is a number written in the code (not -1,
    not computed from the input's size): such a reshape breaks at any other width."""
    if node.op != "call_method" or node.target not in ("view", "reshape"):
        return None
    sizes = node.args[1:]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if len(sizes) >= 2 and isinstance(sizes[1], int) and sizes[1] != -1:
        return sizes[1]
    return None


def _own_module(node: fx.Node) -> str | None:
    """The module whose own ``forward`` holds ``node`` (its qualified name), None for the model's own forward."""
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else None


def cut_key(node: fx.Node) -> tuple | None:
    """What identifies a split / channel slice with sizes written in the code, in any trace of its module."""
    if node.target is operator.getitem:
        return ("slice", repr(node.args[1]))
    if node.target in (torch.split, "split"):  # sizes computed in the graph: their nodes' names differ by trace
        args = fx.node.map_arg((node.args[1:], sorted(node.kwargs.items())), lambda n: "<computed>")
        return ("split", node.op, repr(args))
    return None


def _flat(labels: list) -> list[Label]:
    """Labels, with the part lists of a split flattened."""
    out = []
    for lab in labels:
        if isinstance(lab, list):
            out += _flat(lab)
        elif lab:
            out.append(lab)
    return out


def _channel_slice(node: fx.Node, in_shape: tuple[int, ...] | None) -> tuple[int, int] | None:
    """``(start, stop)`` of ``x[:, start:stop]`` (other dimensions whole or any), None for another index."""
    idx = node.args[1]
    if in_shape is None or len(in_shape) < 2 or not isinstance(idx, tuple) or len(idx) < 2:
        return None
    first, ch = idx[0], idx[1]
    if not (isinstance(first, slice) and first == slice(None)) or not isinstance(ch, slice) or ch.step not in (None, 1):
        return None
    if not all(isinstance(v, (int, type(None))) for v in (ch.start, ch.stop)):
        return None
    start, stop, _ = ch.indices(in_shape[1])
    return start, max(stop, start)


def _leaves(obj: object, env: dict) -> list[Label]:
    if isinstance(obj, fx.Node):
        return _flat([env.get(obj)])
    if isinstance(obj, (list, tuple)):
        return [lab for o in obj for lab in _leaves(o, env)]
    if isinstance(obj, dict):
        return [lab for o in obj.values() for lab in _leaves(o, env)]
    return []


def _trace(model: nn.Module, example: torch.Tensor, what: str) -> fx.GraphModule:
    try:
        gm = fx.GraphModule(model, AnalysisTracer().trace(model), type(model).__name__)
    except Exception as e:  # noqa: BLE001 - any tracing failure is one user-facing line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MutualNetError(f"cannot slim {what}: torch.fx cannot trace it ({first[:200]})") from None
    # shapes on the meta device: no arithmetic and no copy of the weights (4-5x faster than fake tensors)
    meta = {k: torch.empty_like(v, device="meta") for k, v in [*gm.named_parameters(), *gm.named_buffers()]}
    try:
        with _reparametrize_module(gm, meta):
            ShapeProp(gm).propagate(torch.empty_like(example, device="meta"))
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MutualNetError(f"cannot slim {what}: it does not run on a {tuple(example.shape)} input ({first[:200]})"
                             ) from None
    return gm


class AnalysisTracer(fx.Tracer):
    """``torch.fx``'s tracer, with the layers :mod:`.known` says to keep whole as single calls."""

    def __init__(self, extra_leaf: Callable[[nn.Module], bool] | None = None) -> None:
        super().__init__(autowrap_functions=known.autowrap_functions())
        self.leaf_types = known.leaf_types()
        self.extra_leaf = extra_leaf

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict):  # noqa: ANN201
        alt = known.traceable_forward(m)
        if alt is not None:  # a layer timm keeps whole only for a size test: traced through its layers
            return super().call_module(m, lambda *a, **k: alt(m, *a, **k), args, kwargs)
        return super().call_module(m, forward, args, kwargs)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if known.traceable_forward(m) is not None:
            return False
        return (isinstance(m, self.leaf_types) or known.is_linear(m)
                or (self.extra_leaf is not None and self.extra_leaf(m)) or super().is_leaf_module(m, qualname))


def analyse(model: nn.Module, example: torch.Tensor, *, fixed: tuple[str, ...] = ()) -> Plan:
    """Channel groups of ``model`` traced on ``example`` (in training and in eval mode).

    Args:
        model: The network to analyse (left unchanged).
        example: An input batch of at least 2 images at the size the model will see.
        fixed: Names of modules whose output channels must stay fixed.

    Raises:
        MutualNetError: one line naming the node that cannot be slimmed and why.
    """
    what = type(model).__name__
    names = dict(model.named_modules())
    bad = [f for f in fixed if f not in names]
    if bad:
        raise MutualNetError(f"fixed names unknown modules of {what}: {', '.join(bad)}")
    was_training = model.training
    graphs = []
    try:
        for mode in (True, False):
            model.train(mode)
            gm = _trace(model, example, what)
            if not graphs or gm.code != graphs[0].code:
                graphs.append(gm)
    finally:
        model.train(was_training)
    presplit: dict[str, tuple[int, ...]] = {}
    for _ in range(16):  # a split inside a group: the next pass makes its producers output it in parts
        a = _Analysis(model, set(fixed), presplit)
        for gm in graphs:
            env = a.run(gm)
        cuts = {n: _pieces(presplit.get(n), extra) for n, extra in a.requests.items()}
        if not cuts or all(presplit.get(n) == p for n, p in cuts.items()):
            break
        presplit = presplit | cuts
    groups = a.resolve()
    for r in a.refusals:
        slimmed = [g for g in r.groups if groups[a.find(g)].fixed is None]
        if slimmed:
            raise MutualNetError(f"cannot slim {what}: {r.text}")

    def canon(label: Label) -> Label:
        return tuple(Seg(a.find(s.group), s.mult) for s in label)

    ports = {n: Port(p.kind, canon(p.inp), canon(p.out)) for n, p in a.ports.items()}
    cuts = [Cut(c.module, c.key, c.index, c.kind, tuple(canon(p) for p in c.parts), c.rest) for c in a.cuts.values()]
    plan = Plan(groups=groups, ports=ports, notes=sorted({f"{g.first}: fixed, {g.fixed}" for g in groups.values()
                                                          if g.fixed and "stem input" not in g.fixed
                                                          and "model output" not in g.fixed}), cuts=cuts)
    plan.stages, plan.stage_graph = _stages(graphs[-1], env, canon, example.shape[-1])
    return plan


def _pieces(old: tuple[int, ...] | None, cuts: set[int]) -> tuple[int, ...]:
    """The parts of a module's output: its ``old`` parts refined by the offsets in ``cuts`` (0 and the total
    included)."""
    bounds, start = set(cuts), 0
    for p in old or ():
        start += p
        bounds.add(start)
    b = sorted(bounds)
    return tuple(y - x for x, y in zip(b, b[1:]) if y > x)


def _stages(gm: fx.GraphModule, env: dict, canon, size: int) -> tuple[list[tuple[str, Label, int]], fx.Graph]:
    """The last tensor at each spatial reduction (the inputs of a detection neck), in eval mode."""
    last: dict[int, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), (nn.AdaptiveAvgPool2d,
                                                                                     nn.AdaptiveMaxPool2d)) \
                or node.target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            break  # the head: its maps no longer shrink with the input
        shape = _shape(node)
        lab = env.get(node)
        if node.op in ("call_module", "call_function", "call_method") and lab and shape and len(shape) == 4 \
                and shape[-1] > 1 and all(s.mult == 1 for s in lab):
            last[size // shape[-1]] = node
    stages = [(last[r].name, canon(env[last[r]]), r) for r in sorted(last) if r > 1]
    return stages, gm.graph
