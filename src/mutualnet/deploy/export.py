"""Export one (width, resolution) configuration as a plain network: state dict, TorchScript or ONNX.

The slimmable model is materialised at the chosen width (:func:`mutualnet.layers.materialize`: plain
``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` holding only the active slices, BatchNorm carrying
the statistics calibrated for that configuration), optionally with every BatchNorm folded into the
convolution before it (``torch.nn.utils.fusion.fuse_conv_bn_eval``). Every export is checked against
the slimmable model on random inputs before anything is written, and files are written to a temporary
name and renamed, so a failed export never damages an existing file.

Formats:

* ``pt``: ``{"format": "mutualnet-export", "state_dict", "model_name", "model_args", "width",
  "resolution", "resize", "folded", "meta"}`` (``resize``: how inputs were brought to ``resolution`` in
  training and calibration, ``"antialias"`` or ``"official"``), loadable with
  ``torch.load(weights_only=True)``. Rebuilding it needs
  mutualnet (:func:`load_exported`): the architecture is the registered model at ``model_args``,
  materialised at ``width``, with the ``folded`` (conv, bn) pairs fused.
* ``torchscript``: ``torch.jit.trace`` of the plain network; loads with ``torch.jit.load`` alone. The
  export description is stored as the extra file ``mutualnet.json``.
* ``onnx``: ``torch.onnx.export`` (input ``images`` N x C x R x R, output ``logits``, dynamic batch),
  compared with onnxruntime at export time; the description is in the model's metadata properties.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..calibrate import calibrated_configs, is_calibrated
from ..checkpoint import read_torch_file
from ..data.preprocess import DEFAULT_RESIZE, model_preprocessing
from ..errors import MutualNetError
from ..extras import require
from ..io import atomic_write_bytes
from ..layers import SlimmableBatchNorm2d, config_key, materialize, use_config
from ..layers import allow_uncalibrated as _allow_uncalibrated
from ..models import create_model

__all__ = ["EXPORT_FORMAT", "FORMATS", "ExportCheck", "export_subnet",
           "fold_batchnorm", "max_abs_diff", "save_exported", "load_exported", "check_onnx", "format_of",
           "choose_config", "Exported", "export_checkpoint"]

EXPORT_FORMAT = "mutualnet-export"
FORMATS = ("pt", "torchscript", "onnx")
# max |output difference| an export may have against the slimmable model (fp32), relative to the outputs' scale
# (their largest magnitude, at least 1): untrained networks can have logits in the hundreds, where folding BN
# moves float rounding past an absolute 1e-4 while the folded network is exact (float64 agrees)
ATOL = 1e-4


def tolerance(atol: float, ref: Tensor) -> float:
    """The allowed max-abs difference against outputs ``ref``: ``atol`` times their scale (at least 1)."""
    return atol * max(1.0, float(ref.detach().float().abs().max())) if ref.numel() else atol


# -- the plain network -----------------------------------------------------------------------------
def _leaf_calls(model: nn.Module, x: Tensor) -> list[tuple[str, nn.Module, tuple, Any]]:
    """``(name, module, inputs, output)`` of every leaf module call of one forward, in order."""
    calls: list[tuple[str, nn.Module, tuple, Any]] = []
    hooks = []
    for name, m in model.named_modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: calls.append((name, mod, inp, out))))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return calls


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def _fold_pairs(model: nn.Module, x: Tensor) -> list[tuple[str, str]]:
    """(conv, bn) pairs where the BN is the only consumer of the conv's output, found by running ``x``.

    Found from what the forward pass does, not from the module tree, so it covers every architecture
    (a ResNet's ``conv1``/``bn1`` attributes as well as a ``Sequential``'s neighbours). A conv whose
    output another module also reads (a pre-activation shortcut) is left alone.
    """
    calls = _leaf_calls(model, x)
    readers: dict[int, int] = {}
    for _, _, inp, _ in calls:
        for t in inp:
            if isinstance(t, Tensor):
                readers[id(t)] = readers.get(id(t), 0) + 1
    pairs = []
    for (cname, conv, _, out), (bname, bn, inp, _) in zip(calls, calls[1:]):
        if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and inp and inp[0] is out
                and readers.get(id(out)) == 1 and bn.track_running_stats):
            pairs.append((cname, bname))
    return pairs


def _apply_fold(model: nn.Module, pairs: list[tuple[str, str]], *, structure_only: bool = False) -> None:
    for cname, bname in pairs:
        conv, bn = model.get_submodule(cname), model.get_submodule(bname)
        if structure_only:  # rebuild the folded shapes; weights come from a state dict
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              conv.dilation, conv.groups, True)
        else:
            fused = fuse_conv_bn_eval(conv, bn)
        _set_module(model, cname, fused)
        _set_module(model, bname, nn.Identity())


def fold_batchnorm(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """Fold, in place, every BatchNorm that directly follows a convolution into it; returns the pairs.

    ``model`` must be a plain (materialised) network in eval mode; ``example`` is one input it accepts.
    """
    if model.training:
        raise MutualNetError("fold BatchNorm only in eval mode (it folds the running statistics)")
    pairs = _fold_pairs(model, example)
    _apply_fold(model, pairs)
    return pairs


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _example(model: nn.Module, resolution: int, batch: int = 2, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    return torch.randn(batch, getattr(model, "in_chans", 3), resolution, resolution, generator=g).to(p.device)


class ExportCheck(dict):
    """Numbers measured while exporting (max abs logit differences)."""


def export_subnet(model: nn.Module, width: float, resolution: int, *, fold_bn: bool = True,
                  require_calibrated: bool = False, allow_uncalibrated: bool = False,
                  atol: float = ATOL, depth: int | None = None) -> tuple[nn.Module, ExportCheck]:
    """The sub-network of ``model`` at (``width``, ``resolution``, ``depth``) as a standalone plain network.

    Args:
        model: A slimmable model (from :func:`mutualnet.create_model` or a checkpoint).
        width: Width in the model's trained range.
        resolution: Input side the network will be run at; selects the calibrated BN statistics.
        fold_bn: Fold each BatchNorm into the convolution before it (fewer ops at inference).
        require_calibrated: Refuse a configuration without calibrated BN statistics, the top width included.
        allow_uncalibrated: Export a configuration below the top width without calibrated statistics, on the
            shared running statistics (by default it is refused, as eval mode refuses it).
        atol: Largest allowed max-abs output difference against the slimmable model, relative to the outputs'
            scale (their largest magnitude, at least 1).
        depth: Blocks each elastic stage keeps (None: full depth); the blocks it skips are absent from the
            exported network (``nn.Identity``: no parameters, no operations in TorchScript or ONNX).

    Returns:
        ``(net, check)``: the plain network in eval mode (same class as ``model``, every layer a standard
        ``torch.nn`` one) and ``check`` with ``max_abs_diff`` and ``folded`` (number of BN folded).
        The model's width is restored.
    """
    resolution = int(resolution)
    was_training = model.training
    with use_config(model, width, resolution, depth):  # checks the width range, resolution and depth first
        depth = model.slim_state.depth  # None at full depth
        try:
            calibrated = is_calibrated(model, width, resolution, depth)
            bns = [m for m in model.modules() if isinstance(m, SlimmableBatchNorm2d)]
            # the widest, deepest network's running statistics are its own
            top = depth is None and all(width >= bn.max_width - 1e-9 for bn in bns)
            if not calibrated and (require_calibrated or not (top or allow_uncalibrated)):
                raise MutualNetError(_uncalibrated_message(model, width, resolution, depth))
            model.eval()
            x = _example(model, resolution)
            with torch.no_grad(), _allow_uncalibrated(model) if allow_uncalibrated else contextlib.nullcontext():
                ref = model(x)
                net = materialize(model, width, resolution, depth).eval()
                pairs = fold_batchnorm(net, x) if fold_bn else []
                out = net(x)
        finally:
            model.train(was_training)
    diff, tol = max_abs_diff(out, ref), tolerance(atol, ref)
    if not diff <= tol:
        raise MutualNetError(f"exported network differs from the slimmable model by {diff:.3g} (> {atol:g} of the "
                             f"outputs' scale, {tol:.3g}); this is a bug in mutualnet, please report it")
    # preprocessing a caller must reproduce: inputs at `resolution`, lower ones made with this resize mode
    net.export_info = {"width": float(width), "resolution": resolution, "folded": [list(p) for p in pairs],
                       "resize": model_preprocessing(model).resize} | ({} if depth is None else {"depth": depth})
    return net, ExportCheck(max_abs_diff=diff, folded=len(pairs))


def _uncalibrated_message(model: nn.Module, width: float, resolution: int, depth: int | None = None) -> str:
    keys = calibrated_configs(model)
    have = f"{len(keys)} calibrated configurations, e.g. {', '.join(keys[:3])}" if keys else "none calibrated"
    flag = "" if depth is None else f" --depth {depth}"
    return (f"configuration {config_key(width, resolution, depth)} has no calibrated BatchNorm statistics ({have}); "
            f"calibrate it first (`mutualnet calibrate --width {width:g} --resolution {resolution}{flag}`, or "
            "`mutualnet search` for the whole grid) or pass --allow-uncalibrated (allow_uncalibrated=True) to use the "
            "shared running statistics")


# -- writing ---------------------------------------------------------------------------------------
def _check_output_path(path: str | os.PathLike) -> None:
    """One-line errors for an output path that is a folder or whose folder does not exist."""
    path = Path(path)
    if path.is_dir():
        raise MutualNetError(f"output path is a folder: {path}")
    if not path.parent.exists():
        raise MutualNetError(f"output folder does not exist: {path.parent}")


def _describe(net: nn.Module, meta: dict | None) -> dict:
    info = dict(getattr(net, "export_info", {}))
    info |= {"format": EXPORT_FORMAT, "version": 1, "model_name": getattr(net, "model_name", None),
             "model_args": dict(getattr(net, "model_args", {}) or {}), "in_chans": getattr(net, "in_chans", 3),
             "num_classes": getattr(net, "num_classes", None), "meta": dict(meta or {})}
    return info


def check_onnx(model: str | os.PathLike | bytes, net: nn.Module, x: Tensor) -> float:
    """Max abs difference between onnxruntime's and PyTorch's outputs on ``x`` (``model``: a file or its bytes)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    got = torch.from_numpy(sess.run(None, {name: x.detach().cpu().numpy()})[0])
    with torch.no_grad():
        ref = net(x).cpu()
    return max_abs_diff(got, ref)


def save_exported(net: nn.Module, path: str | os.PathLike, fmt: str = "pt", *, meta: dict | None = None,
                  atol: float = ATOL) -> dict:
    """Write a network from :func:`export_subnet` as ``pt``, ``torchscript`` or ``onnx``; returns its checks.

    TorchScript and ONNX files are compared with the network on random inputs (ONNX through
    onnxruntime) before they replace ``path``; the returned dict holds those differences.
    """
    if fmt not in FORMATS:
        raise MutualNetError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        require("onnx", "ONNX export")
    _check_output_path(path)
    info = _describe(net, meta)
    if "resolution" not in info:
        raise MutualNetError("save_exported needs a network from export_subnet (it records width and resolution)")
    net = net.eval()
    x = _example(net, info["resolution"], batch=2, seed=1)
    checks: dict[str, float] = {}
    # every format is produced and checked in memory, then written with Python file I/O: nothing half-written
    # ever replaces `path`, and a full disk is an error, not a C++ abort of the whole process
    if fmt == "pt":
        if info["model_name"] is None:  # load_exported rebuilds the structure from the registry
            raise MutualNetError("a .pt export is rebuilt from the model registry, which does not know this model "
                                 "(built in Python); export it as torchscript or onnx, which need no rebuilding")
        buf = io.BytesIO()
        torch.save(info | {"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, buf)
        data = buf.getvalue()
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about the input checks, which trace to constants
            traced = torch.jit.trace(net, x[:1], check_trace=False)
            checks["torchscript_max_abs_diff"] = max_abs_diff(traced(x), net(x))
            buf = io.BytesIO()
            torch.jit.save(traced, buf, _extra_files={"mutualnet.json": json.dumps(info)})
            data = buf.getvalue()
            back = torch.jit.load(io.BytesIO(data))
            checks["torchscript_max_abs_diff"] = max(checks["torchscript_max_abs_diff"], max_abs_diff(back(x), net(x)))
        _check_tol("TorchScript", checks["torchscript_max_abs_diff"], tolerance(atol, net(x)))
    else:
        import onnx

        proto = onnx.load_from_string(_onnx_export(net, x[:1]))
        onnx.checker.check_model(proto)
        proto.metadata_props.add(key="mutualnet", value=json.dumps(info))
        data = proto.SerializeToString()
        checks["onnx_max_abs_diff"] = check_onnx(data, net, x)
        with torch.no_grad():
            _check_tol("ONNX (onnxruntime)", checks["onnx_max_abs_diff"], tolerance(atol, net(x)))
    atomic_write_bytes(path, data)
    return checks


def _legacy_onnx_ok(net: nn.Module, x: Tensor) -> bool:
    """The TorchScript-based ONNX exporter cannot pool adaptively to a size that does not divide the input."""
    for _, m, inp, _ in _leaf_calls(net, x):
        if isinstance(m, nn.AdaptiveAvgPool2d):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
            if any(o is not None and i % o for i, o in zip(inp[0].shape[-2:], size)):
                return False
    return True


def _onnx_export(net: nn.Module, x: Tensor) -> bytes:
    """The ONNX bytes of ``net``: the TorchScript-based exporter (dynamic batch) where it supports every op,
    else the dynamo exporter."""
    kw = dict(input_names=["images"], output_names=["logits"])
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if _legacy_onnx_ok(net, x):
                buf = io.BytesIO()
                torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=17,
                                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, **kw)
                return buf.getvalue()
            batch = torch.export.Dim("batch", min=1)
            xb = x.expand(2, *x.shape[1:]).contiguous()  # a batch of 1 would be specialised to 1
            program = torch.onnx.export(net, (xb,), None, dynamo=True, dynamic_shapes=({0: batch},), **kw)
            return program.model_proto.SerializeToString()
    except MutualNetError:
        raise
    except Exception as e:  # noqa: BLE001 - report the exporter's reason in one line
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise MutualNetError(f"ONNX export failed: {first}") from None


def _check_tol(what: str, diff: float, tol: float) -> None:
    if not diff <= tol:
        raise MutualNetError(f"{what} output differs from PyTorch by {diff:.3g} (> {tol:.3g}: the tolerance times "
                             "the outputs' scale); nothing was written")


def load_exported(path: str | os.PathLike) -> nn.Module:
    """Rebuild the plain network of a ``pt`` export (needs mutualnet: the registered model + width)."""
    d = read_torch_file(path, "exported model")
    if not isinstance(d, dict) or d.get("format") != EXPORT_FORMAT:
        raise MutualNetError(f"{path} is not a mutualnet export (no 'format': '{EXPORT_FORMAT}')")
    model = create_model(d["model_name"], **d["model_args"])
    net = materialize(model, d["width"], None, d.get("depth")).eval()  # the structure; the weights come next
    _apply_fold(net, [tuple(p) for p in d["folded"]], structure_only=True)
    try:
        net.load_state_dict(d["state_dict"])
    except RuntimeError as e:
        raise MutualNetError(f"{path}: weights do not match the described network ({str(e).splitlines()[0]})") from None
    net.export_info = {k: d[k] for k in ("width", "resolution", "folded", "depth") if k in d} | {
        "resize": d.get("resize", DEFAULT_RESIZE)}
    return net


# -- a checkpoint's configuration: what `mutualnet export` runs -------------------------------------
_SUFFIX = {".onnx": "onnx", ".ts": "torchscript", ".torchscript": "torchscript", ".jit": "torchscript"}


def format_of(path: str | os.PathLike) -> str:
    """The export format a file name asks for: ``.onnx``, ``.ts`` / ``.torchscript`` / ``.jit``, else ``pt``."""
    name = str(path)
    return _SUFFIX.get("." + name.rsplit(".", 1)[-1].lower() if "." in name else "", "pt")


def choose_config(ckpt: dict, model: nn.Module, *, width: float | None = None, resolution: int | None = None,
                  depth: int | None = None, max_mflops: float | None = None, max_latency_ms: float | None = None,
                  table: str | os.PathLike | None = None) -> tuple[float, int, int | None, dict | None]:
    """The configuration an export (or any one-configuration command) means: explicit, or the best within a budget.

    Explicit: ``width`` (default: the top of the trained range), ``resolution`` (default: the highest trained
    one), ``depth`` (None: full). A budget (``max_mflops`` / ``max_latency_ms``) selects the most accurate row of
    ``table`` (default: the query table the checkpoint embeds) and cannot be combined with explicit values.

    Returns:
        ``(width, resolution, depth, table row or None)``.
    """
    from .adaptive import load_query_table

    budget = max_mflops is not None or max_latency_ms is not None
    if budget and (width is not None or resolution is not None or depth is not None):
        raise MutualNetError("give either --width/--resolution/--depth or a budget (--max-mflops/--max-latency-ms), "
                             "not both")
    if budget:
        row = load_query_table(ckpt, table).select(max_mflops=max_mflops, max_latency_ms=max_latency_ms)
        return float(row["width"]), int(row["resolution"]), row.get("depth"), row
    if table is not None:
        raise MutualNetError("--table is used with a budget (--max-mflops / --max-latency-ms)")
    meta = ckpt.get("meta") or {}
    width = model.width_range[1] if width is None else width
    if resolution is None:
        resolution = int(max(meta["resolutions"])) if meta.get("resolutions") else None
    if resolution is None:
        raise MutualNetError("the checkpoint records no resolutions; pass --resolution")
    if resolution < 1:
        raise MutualNetError(f"resolution must be positive, got {resolution}")
    return float(width), int(resolution), depth, None


class Exported(dict):
    """What :func:`export_checkpoint` wrote: ``path``, ``format``, ``width``, ``resolution``, ``depth``,
    ``mflops``, ``params``, ``folded``, ``max_abs_diff`` (against the slimmable model), ``checks`` (the
    runtime's own differences) and ``table_row`` (the query-table row a budget selected, else None)."""

    def describe(self) -> list[str]:
        """The two lines ``mutualnet export`` prints."""
        at = "" if self["depth"] is None else f", depth {self['depth']}"
        line = f"max |logits - slimmable| = {self['max_abs_diff']:.3g}" + "".join(
            f"; {k.replace('_max_abs_diff', '')} vs PyTorch = {v:.3g}" for k, v in self["checks"].items())
        return [f"exported width {self['width']:g} at {self['resolution']} px{at} ({self['mflops']:.2f} MFLOPs, "
                f"{self['params'] / 1e6:.3f}M params, {self['folded']} BN folded) to {self['path']} "
                f"[{self['format']}]", line]


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, fmt: str | None = None,
                      width: float | None = None, resolution: int | None = None, depth: int | None = None,
                      max_mflops: float | None = None, max_latency_ms: float | None = None,
                      table: str | os.PathLike | None = None, fold_bn: bool = True,
                      allow_uncalibrated: bool = False) -> Exported:
    """What ``mutualnet export`` does: one configuration of ``checkpoint`` (:func:`choose_config`) as a plain
    network in ``out`` (``fmt``: pt, torchscript or onnx; default: from ``out``'s suffix, :func:`format_of`).

    The file names the data and the checkpoint (not where they lay on this machine) and carries the
    preprocessing, so it is usable without its checkpoint. Below the top width a configuration without
    calibrated statistics is refused unless ``allow_uncalibrated`` (a warning line on stderr then).
    """
    import sys

    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..data.preprocess import artefact_fields
    from ..layers import check_depth
    from ..profiling import profile

    fmt = fmt or format_of(out)
    if fmt == "onnx":
        require("onnx", "ONNX export")  # before any work
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    width, res, depth, row = choose_config(ckpt, model, width=width, resolution=resolution, depth=depth,
                                           max_mflops=max_mflops, max_latency_ms=max_latency_ms, table=table)
    model.width_range.check(width)
    depth = check_depth(model, depth)  # None: full depth
    if not is_calibrated(model, width, res, depth) and allow_uncalibrated:
        print(f"warning: {config_key(width, res, depth)} has no calibrated BN statistics; using the shared running "
              "statistics", file=sys.stderr)
    net, check = export_subnet(model, width, res, fold_bn=fold_bn, allow_uncalibrated=allow_uncalibrated, depth=depth)
    meta = ckpt.get("meta") or {}
    info = {k: meta[k] for k in ("class_names", "mode") if k in meta}
    if isinstance(meta.get("dataset"), dict):
        info["dataset"] = {k: v for k, v in meta["dataset"].items() if k != "root"}
    info |= artefact_fields(model, meta)  # preprocessing: crop at its input_size, then resize to `resolution`
    info |= {"checkpoint": Path(checkpoint).name, "table_row": row}
    checks = save_exported(net, out, fmt, meta=info)
    prof = profile(model, width, res, depth=depth)
    return Exported(path=str(out), format=fmt, width=width, resolution=res, depth=depth, mflops=prof.mflops,
                    params=prof.params, folded=check["folded"], max_abs_diff=check["max_abs_diff"], checks=checks,
                    table_row=row)
