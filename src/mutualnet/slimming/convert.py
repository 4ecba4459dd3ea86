"""``slim(model, width_range)``: any traceable CNN becomes a slimmable network in place.

The analysis (:mod:`mutualnet.slimming.graph`) says which channels move together; here every
``Conv2d`` / ``BatchNorm2d`` / ``Linear`` that touches a slimmed group is replaced by its slimmable
version from :mod:`mutualnet.layers` under the *same attribute name*, holding the same tensors, and all of
them are bound to one shared state. The model keeps its own ``forward``: at width 1.0 it computes exactly
what it computed before, and its state-dict keys are unchanged, so pretrained weights load as they are.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.stateless import _reparametrize_module

from ..errors import MutualNetError
from ..layers import (
    SlimmableBatchNorm2d,
    SlimmableConv2d,
    SlimmableLinear,
    SlimState,
    WidthRange,
    bind_state,
    is_slimmable,
    slim_channels,
)
from ..layers.concat import ConcatBatchNorm2d, ConcatConv2d, ConcatDepthwiseConv2d, ConcatLinear
from ..layers.converted import (
    ChannelCut,
    ConcatBatchNorm1d,
    ConcatBatchNormAct2d,
    SlimmableBatchNorm1d,
    SlimmableBatchNormAct2d,
    SlimmableBlurPool2d,
    SlimmableConv2dSame,
    SlimmableConvTranspose2d,
)
from ..models._base import SlimmableNet
from . import known
from .graph import AnalysisTracer, Cut, Label, Plan, analyse, cut_key

__all__ = ["slim", "SlimmedNet"]


class SlimmedNet(SlimmableNet):
    """Mixed into a converted model's class: the width surface of the hand-written models.

    A converted model is an instance of ``Slimmed<Original>``, a subclass of both this class and its
    original class, so ``isinstance(model, torchvision.models.ResNet)`` still holds and its own ``forward``
    runs (after the zoo's input check: image channels, smallest side, the configured resolution).
    """

    _slim_base: type[nn.Module]
    slim_plan: Plan

    def forward(self, x: Tensor, *args, **kwargs):  # noqa: ANN201 - whatever the original returns
        self._check_input(x)
        out = self._slim_base.forward(self, x, *args, **kwargs)
        return out if self.slim_plan.output is None else out[self.slim_plan.output]

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[-1]

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """The last feature map at each spatial reduction (what a detection neck reads)."""
        self._check_input(x)
        if self.slim_state.depth is not None:  # the stage graph is traced through every block
            raise MutualNetError("the stage outputs of a converted network are read at full depth only")
        names = [name for name, _, _ in self.slim_plan.stages]
        gm = _stage_module(self, names)
        out = gm(x)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    @property
    def feature_info(self) -> list[dict]:
        w = self.width
        return [{"module": name, "num_chs": label_channels(self.slim_plan, label, w), "reduction": r}
                for name, label, r in self.slim_plan.stages]

    @property
    def head_name(self) -> str:
        """The converted network's classifier (the one rule, see SlimmableNet.head_name): its last Linear, or
        its last convolution when it classifies with one (SqueezeNet). Never raises: TorchScript reads it."""
        names = [name for name, m in self.named_modules() if isinstance(m, nn.Linear)]
        names = names or [name for name, m in self.named_modules() if isinstance(m, nn.Conv2d)]
        return names[-1]

    def reset_classifier(self, num_classes: int) -> None:  # pragma: no cover - rebuild instead
        raise MutualNetError("a converted model keeps its classifier; build it with num_classes=... instead")


def label_channels(plan: Plan, label: Label, width: float) -> int:
    """Active channels of a (possibly concatenated) tensor at ``width``."""
    total = 0
    for s in label:
        g = plan.groups[s.group]
        total += g.channels if g.fixed else slim_channels(g.channels, width, g.ratio)
    return total


def _stage_module(model: SlimmedNet, names: list[str]) -> fx.GraphModule:
    cls = type(model)
    model.__class__ = model._slim_base  # trace the original forward (the input check is not traceable)
    try:
        graph = AnalysisTracer(extra_leaf=is_slimmable).trace(model)
    finally:
        model.__class__ = cls
    nodes = {n.name: n for n in graph.nodes}
    missing = [n for n in names if n not in nodes]
    if missing:  # pragma: no cover - the same code traces to the same graph
        raise MutualNetError(f"cannot find stage nodes {missing} in the converted model's graph")
    out = next(n for n in graph.nodes if n.op == "output")
    graph.erase_node(out)
    graph.output(tuple(nodes[n] for n in names))
    gm = fx.GraphModule(model, graph)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


_CLASSES: dict[tuple, type] = {}


class _Own:
    """A class-level placeholder that lets the model's own attribute of this name win.

    ``Slimmed<Class>`` inherits ``SlimmedNet``'s surface (``width``, ``feature_info``...), whose properties would
    hide an instance attribute, a submodule or a parameter of the same name. This non-data descriptor raises
    ``AttributeError``, so Python finds the instance's ``__dict__`` entry first, or falls back to
    ``nn.Module.__getattr__`` (submodules, parameters, buffers): the user's ``self.width`` stays the user's.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> object:
        raise AttributeError(self.name)


def _surface() -> set[str]:
    """Names SlimmedNet adds to a model's class (besides ``forward``, which wraps the original one)."""
    names = set()
    for klass in (SlimmedNet, SlimmableNet):
        names |= {n for n in vars(klass) if not (n.startswith("__") and n.endswith("__"))}
    return names - {"forward", "_slim_base", "slim_plan"}


def _own_names(model: nn.Module) -> frozenset[str]:
    """Names of ``_surface()`` that ``model`` already has: in its class, its instance dict, or as a submodule,
    parameter or buffer. Those stay the model's (a timm model's ``forward_features`` / ``feature_info``)."""
    cls = type(model)
    owned = set()
    for name in _surface():
        in_class = any(name in vars(k) for k in cls.__mro__ if k not in (nn.Module, object))
        in_instance = name in vars(model) or any(name in getattr(model, d) for d in ("_modules", "_parameters",
                                                                                       "_buffers"))
        if in_class or in_instance:
            owned.add(name)
    return frozenset(owned)


def _slimmed_class(model: nn.Module) -> type:
    """``Slimmed<Class>``: the model's class first in the MRO (its own methods win), then SlimmedNet's surface,
    with ``_Own`` placeholders where the instance itself holds a name SlimmedNet also defines."""
    cls = type(model)
    if issubclass(cls, SlimmedNet):
        return cls
    owned = _own_names(model)
    key = (cls, owned)
    if key not in _CLASSES:
        ns = {"_slim_base": cls, "__module__": __name__, "__doc__": cls.__doc__, "forward": SlimmedNet.forward}
        ns |= {n: _Own(n) for n in owned if not any(n in vars(k) for k in cls.__mro__ if k not in (nn.Module,
                                                                                                    object))}
        _CLASSES[key] = type(f"Slimmed{cls.__name__}", (cls, SlimmedNet), ns)
    return _CLASSES[key]


def _segments(plan: Plan, label: Label) -> tuple[tuple[int, int, bool], ...]:
    out = []
    for s in label:
        g = plan.groups[s.group]
        out.append((g.channels * s.mult, g.ratio * s.mult, g.fixed is None))
    return tuple(out)


def _one(plan: Plan, label: Label) -> tuple[int, bool]:
    """(ratio, slimmed) of a single-segment label."""
    (s,) = label
    g = plan.groups[s.group]
    return g.ratio * s.mult, g.fixed is None


def _replacement(plan: Plan, port, mod: nn.Module) -> nn.Module | None:
    """The slimmable layer for ``mod`` (None: it touches only fixed channels and stays as it is)."""
    slim_in, slim_out = plan.slimmed(port.inp), plan.slimmed(port.out)
    if port.kind == "bn":
        post = known.fused_norm_post(mod)
        if post and len(port.inp) == 1:
            r, s = _one(plan, port.inp)
            return SlimmableBatchNormAct2d(mod.num_features, mod.eps, mod.momentum, slim=s, ratio=r,
                                           post={n: getattr(mod, n) for n in post})
        if post:
            return ConcatBatchNormAct2d(_segments(plan, port.inp), mod.eps, mod.momentum,
                                        post={n: getattr(mod, n) for n in post})
        if len(port.inp) > 1:
            return ConcatBatchNorm2d(_segments(plan, port.inp), mod.eps, mod.momentum)
        r, s = _one(plan, port.inp)
        return SlimmableBatchNorm2d(mod.num_features, mod.eps, mod.momentum, slim=s, ratio=r)
    if port.kind == "blur":
        return SlimmableBlurPool2d(_segments(plan, port.inp), mod) if slim_in else None
    if port.kind == "bn1d" and len(port.inp) > 1:
        return ConcatBatchNorm1d(_segments(plan, port.inp), mod.eps, mod.momentum)
    if port.kind == "bn1d":
        r, s = _one(plan, port.inp)
        return SlimmableBatchNorm1d(mod.num_features, mod.eps, mod.momentum, slim=s, ratio=r)
    if not (slim_in or slim_out):
        return None
    if len(port.out) > 1 and port.kind not in ("conv", "depthwise"):
        raise MutualNetError(f"cannot slim a {type(mod).__name__} whose output a channel split cuts in parts "
                             "(only a one-group convolution can make its output in parts)")
    if port.kind == "linear":
        r_out, s_out = _one(plan, port.out)
        bias = mod.bias is not None
        if len(port.inp) > 1:
            return ConcatLinear(_segments(plan, port.inp), mod.out_features, bias, slim_out=s_out, out_ratio=r_out)
        r_in, s_in = _one(plan, port.inp)
        return SlimmableLinear(mod.in_features, mod.out_features, bias, slim_in=s_in, slim_out=s_out,
                               ratio=(r_in, r_out))
    if port.kind == "conv_transpose":
        (r_in, s_in), (r_out, s_out) = _one(plan, port.inp), _one(plan, port.out)
        return SlimmableConvTranspose2d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                                        mod.output_padding, mod.bias is not None, mod.dilation, slim_in=s_in,
                                        slim_out=s_out, ratio=(r_in, r_out))
    conv_args = (mod.kernel_size, mod.stride, mod.padding, mod.dilation)
    bias = mod.bias is not None
    if port.kind == "depthwise" and len(port.inp) > 1:
        return ConcatDepthwiseConv2d(_segments(plan, port.inp), *conv_args, bias)
    if len(port.out) > 1:
        return ConcatConv2d(_segments(plan, port.inp), mod.out_channels, *conv_args, bias, slim_out=False,
                            out_segments=_segments(plan, port.out))
    r_out, s_out = _one(plan, port.out)
    if len(port.inp) > 1:
        return ConcatConv2d(_segments(plan, port.inp), mod.out_channels, *conv_args, bias, slim_out=s_out,
                            out_ratio=r_out)
    r_in, s_in = _one(plan, port.inp)
    kw = dict(slim_in=s_in, slim_out=s_out, ratio=(r_in, r_out))
    if port.kind in ("depthwise", "group_width"):
        return SlimmableConv2d(mod.in_channels, mod.out_channels, *conv_args, 1, bias,
                               group_width=mod.in_channels // mod.groups, **kw)
    return SlimmableConv2d(mod.in_channels, mod.out_channels, *conv_args, mod.groups, bias, **kw)


def _rewrite_cuts(model: nn.Module, plan: Plan) -> None:
    """Make every split / slice with sizes written in the code take them from a ``ChannelCut`` (the width's).

    The module whose forward holds such a cut gets, as its forward, its own code traced by ``torch.fx`` (in
    training and in eval mode, where they differ) with the numbers replaced by the value of a ``ChannelCut``
    attribute (``_slim_cut_<k>``, no parameters: the state-dict keys stay). Everything else in that forward is
    unchanged, so at width 1.0 it computes what it computed before.
    """
    what = type(model).__name__
    by_module: dict[str, dict[tuple, Cut]] = {}
    for cut in plan.cuts:
        if any(plan.slimmed(p) for p in cut.parts):
            by_module.setdefault(cut.module, {})[(cut.key, cut.index)] = cut
    for path, cuts in by_module.items():
        mod = model.get_submodule(path)
        cls, was = type(mod), mod.training
        own = vars(mod).get("forward")  # a forward assigned in __init__ (self.forward = self.forward_split)
        if own is not None:
            if getattr(own, "__self__", None) is not mod:
                raise MutualNetError(f"cannot slim {what}: {path} ({cls.__name__}) splits its channels at sizes "
                                     "fixed in the code, in a forward that is not one of its methods")
            del mod.forward
            cls = type(cls.__name__, (cls,), {"forward": own.__func__, "__module__": cls.__module__})
            mod.__class__ = cls
        forwards = {}
        try:
            for mode in (True, False):
                mod.train(mode)
                graph = AnalysisTracer(extra_leaf=is_slimmable).trace(mod)
                seen: dict[tuple, int] = {}
                for node in list(graph.nodes):
                    key = cut_key(node)
                    if key is None:
                        continue
                    index = seen.get(key, 0)
                    seen[key] = index + 1
                    cut = cuts.get((key, index))
                    if cut is not None:
                        _use_cut(mod, graph, node, cut, _segments_of(plan, cut), model.slim_state)
                counts = {k: sum(1 for (kk, _) in cuts if kk == k) for k, _ in cuts}
                if any(counts[k] > seen.get(k, 0) for k in counts) and any(
                        cuts[(k, i)].parts != cuts[(k, i % seen[k])].parts for k, i in cuts if seen.get(k)):
                    raise MutualNetError(f"cannot slim {what}: {path} ({cls.__name__}) is called more than once and "
                                         "cuts its channels differently each time")
                forwards[mode] = type(fx.GraphModule(mod, graph, cls.__name__)).forward
        except MutualNetError:
            raise
        except Exception as e:  # noqa: BLE001 - one user-facing line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MutualNetError(f"cannot slim {what}: {path} ({cls.__name__}) splits its channels at sizes fixed in "
                                 f"the code, and its forward cannot be traced alone to make them follow the width "
                                 f"({first[:160]})") from None
        finally:
            mod.train(was)
        train_fw, eval_fw = forwards[True], forwards[False]
        forward = train_fw if _same_code(train_fw, eval_fw) else _by_mode(train_fw, eval_fw)
        mod.__class__ = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                     "__doc__": cls.__doc__, "_slim_cut_base": cls})


def _segments_of(plan: Plan, cut: Cut) -> tuple:
    return tuple(_segments(plan, p) for p in cut.parts)


def _use_cut(mod: nn.Module, graph: fx.Graph, node: fx.Node, cut: Cut, parts: tuple, state) -> None:  # noqa: ANN001
    """Replace ``node``'s literal sizes (a split) or channel index (a slice) by its ``ChannelCut``'s value."""
    name = f"_slim_cut_{zlib.crc32(repr((cut.key, cut.index)).encode()):08x}"
    if name not in vars(mod):  # one per cut, shared by the training and the eval trace; not a child module
        object.__setattr__(mod, name, ChannelCut(cut.kind, parts, state, cut.rest))
    with graph.inserting_before(node):
        sizes = graph.call_method("value", (graph.get_attr(name),))
    if cut.kind == "slice":
        node.args = (node.args[0], sizes)
    elif len(node.args) > 1:
        node.args = (node.args[0], sizes, *node.args[2:])
    else:
        kw = "split_size" if "split_size" in node.kwargs else "split_size_or_sections"
        node.kwargs = {**node.kwargs, kw: sizes}


def _same_code(a, b) -> bool:  # noqa: ANN001 - two generated forwards
    return a.__code__.co_code == b.__code__.co_code and a.__code__.co_consts == b.__code__.co_consts and \
        a.__code__.co_names == b.__code__.co_names


def _by_mode(train_fw, eval_fw):  # noqa: ANN001, ANN202 - two generated forwards
    def forward(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return (train_fw if self.training else eval_fw)(self, *args, **kwargs)
    return forward


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def _probe_min_resolution(model: nn.Module, in_chans: int, upper: int) -> int:
    """Smallest square input side the network runs on (binary search on the meta device: no arithmetic)."""
    was = model.training
    model.eval()
    meta = {k: torch.empty_like(v, device="meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}

    def runs(r: int) -> bool:
        try:
            with torch.no_grad(), _reparametrize_module(model, meta):
                model._slim_base.forward(model, torch.zeros(1, in_chans, r, r, device="meta"))
            return True
        except (RuntimeError, ValueError, IndexError, MutualNetError):
            return False

    lo, hi = 1, upper
    try:
        while lo < hi:
            mid = (lo + hi) // 2
            if runs(mid):
                hi = mid
            else:
                lo = mid + 1
    finally:
        model.train(was)
    return lo


def slim(model: nn.Module, width_range: tuple[float, float] = (0.25, 1.0), *, input_size: int = 224,
         in_chans: int | None = None, fixed: tuple[str, ...] | list[str] = (), output: str | int | None = None,
         depth_range: tuple[int, int] | None = None) -> SlimmedNet:
    """Turn ``model`` into a slimmable network (in place) and return it.

    Args:
        model: A CNN built of ``Conv2d`` / ``BatchNorm2d`` / ``Linear`` and ordinary operations, traceable by
            ``torch.fx`` (every torchvision classification CNN is).
        width_range: ``(lo, hi)`` widths it will run at; ``hi`` must be 1.0 (the network as given).
        input_size: Image side used to trace shapes (matters only for a flatten without adaptive pooling).
        in_chans: Image channels; found from the first convolution when None.
        fixed: Names of modules whose output channels never slim (MobileNet v2's 1280-channel head).
        output: For a model returning several outputs (a tuple, a dict: torchvision's segmentation models return
            ``{"out": ..., "aux": ...}``), the key or position of the one the converted model returns, which
            training, search and export then use.
        depth_range: ``(lo, full)``: also make depth elastic (opt-in; :mod:`mutualnet.slimming.depth`): in every
            ``nn.Sequential``, a run of residual blocks of unchanged shape is a stage that runs its first ``d``
            blocks at depth ``d``; ``full`` must be the longest stage's number of blocks (the error says it).
            None: full depth only, as before.

    Returns:
        The same object, now an instance of ``Slimmed<Class>``: ``set_width``, ``width_range``,
        ``materialize``-able, profiled, trained and exported like the zoo models.

    Raises:
        MutualNetError: one line naming the node that cannot be slimmed and why.
    """
    lo, hi = (float(width_range[0]), float(width_range[1]))
    if not (0 < lo <= hi):
        raise MutualNetError(f"width_range must satisfy 0 < lo <= hi, got ({lo:g}, {hi:g})")
    if not math.isclose(hi, 1.0):
        raise MutualNetError(f"a converted network is slimmed from its own width: width_range must end at 1.0, "
                             f"got {hi:g}")
    if depth_range is not None and (not isinstance(depth_range, list | tuple) or len(depth_range) != 2):
        raise MutualNetError(f"depth_range must be (lo, full depth), got {depth_range!r}")
    if isinstance(model, SlimmedNet) or any(is_slimmable(m) for m in model.modules()):
        raise MutualNetError(f"{type(model).__name__} already has slimmable layers")
    _check_own_attributes(model)
    if in_chans is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise MutualNetError(f"cannot slim {type(model).__name__}: it has no Conv2d")
        in_chans = first.in_channels
    p = next(model.parameters())
    example = torch.zeros(2, in_chans, input_size, input_size, device=p.device, dtype=p.dtype)
    plan = analyse(model, example, fixed=tuple(fixed))
    if all(g.fixed for g in plan.groups.values()):  # a "conversion" that could never run narrower
        first = [g for _, g in sorted(plan.groups.items()) if g.fixed and "stem input" not in g.fixed]
        why = f"the first: {first[0].first}, {first[0].fixed}" if first else "the image and the outputs only"
        raise MutualNetError(f"cannot slim {type(model).__name__}: nothing to slim, every channel group keeps all "
                             f"its channels ({why})")
    modules = dict(model.named_modules())
    for name, port in plan.ports.items():
        old = modules[name]
        with torch.device("meta"):  # no allocation or initialisation: the layer takes over old's tensors
            new = _replacement(plan, port, old)
        if new is None:
            continue
        if known.is_conv2d_same(old):
            if type(new) is not SlimmableConv2d:
                raise MutualNetError(f"cannot slim {type(model).__name__}: {name} pads like TensorFlow's SAME and "
                                     "reads a concatenation")
            new.__class__, new.dense_type = SlimmableConv2dSame, type(old)  # the same layer, padded first
        if not isinstance(new, SlimmableBlurPool2d):  # (its filter is not in the state dict; it took it over)
            new.load_state_dict(old.state_dict(keep_vars=True), assign=True)
        _set(model, name, new.train(old.training))
    model.__class__ = _slimmed_class(model)
    _bind(model, (lo, hi))
    _rewrite_cuts(model, plan)
    model.slim_plan = plan
    for name, value in (("in_chans", in_chans), ("num_classes", _num_outputs(model))):
        if not hasattr(model, name):  # a model's own in_chans / num_classes (timm's) mean the same: kept
            setattr(model, name, value)
    model.min_resolution = _probe_min_resolution(model, in_chans, input_size)
    plan.output = _check_output(model, example, output)
    if depth_range is not None:
        _elastic_depth(model, example[:1], depth_range)
    return model


def _elastic_depth(model: SlimmedNet, example: Tensor, depth_range: tuple[int, int]) -> None:
    """``slim(depth_range=...)``: the elastic stages, the checked range, every stage bound to the model's state."""
    from ..models._base import _depth_range
    from .depth import make_depth_elastic

    full = make_depth_elastic(model, example)
    if full is None:
        raise MutualNetError(f"cannot make {model._slim_base.__name__}'s depth elastic: no nn.Sequential of it holds "
                             "a run of residual blocks of unchanged shape")
    try:
        model.depth_range = _depth_range(tuple(depth_range), full)
    except ValueError as e:
        raise MutualNetError(str(e)) from None
    bind_state(model, model.slim_state)


def _check_output(model: SlimmedNet, example: Tensor, output: str | int | None) -> str | int | None:
    """``output`` when it names one tensor of the model's outputs (checked on the meta device)."""
    if output is None:
        return None
    meta = {k: torch.empty_like(v, device="meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
    was = model.training
    try:
        with torch.no_grad(), _reparametrize_module(model.eval(), meta):
            out = model._slim_base.forward(model, torch.empty_like(example[:1], device="meta"))
    finally:
        model.train(was)
    keys = list(out) if isinstance(out, dict) else list(range(len(out))) if isinstance(out, (tuple, list)) else []
    if output not in keys or not isinstance(out[output], Tensor):
        raise MutualNetError(f"output={output!r} is not one of {model._slim_base.__name__}'s output tensors "
                             f"({', '.join(map(repr, keys)) or 'it returns one tensor'})")
    return output


_OWN = ("width_range", "slim_state", "slim_plan", "min_resolution")  # what slim() sets on the model itself


def _check_own_attributes(model: nn.Module) -> None:
    """Refuse a model that holds a name slim() must set: overwriting it would change what its code reads."""
    what = type(model).__name__
    for name in _OWN:
        if hasattr(model, name):
            raise MutualNetError(f"cannot slim {what}: it has its own attribute {name!r}, which a converted model "
                                 "uses for its width configuration; rename it")


def _bind(model: nn.Module, width_range: tuple[float, float]) -> None:
    """The one place a converted model gets its width range and the shared state that owns its configuration."""
    model.width_range = WidthRange(float(width_range[0]), float(width_range[1]))
    bind_state(model, SlimState(width=model.width_range.hi))


def _num_outputs(model: nn.Module) -> int | None:
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return getattr(last[-1], "out_features", getattr(last[-1], "out_channels", None)) if last else None
