"""Run one configuration on the runtime it is deployed with: PyTorch eager, TorchScript or ONNX Runtime.

The slimmable model in eager PyTorch pays per-layer Python and dispatch costs that dominate at batch 1 on a
CPU; the same sub-network exported as a plain network with BatchNorm folded (:func:`export_subnet`) and run by
a graph runtime does the same arithmetic with less overhead (ONNX Runtime fuses convolution + activation and
plans memory once). Latency tables therefore carry one column per runtime (``latency_<runtime>_ms``), and
selection and :class:`~mutualnet.deploy.AdaptiveNet` use the column of the runtime the user deploys with.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..extras import require
from ..layers import allow_uncalibrated as _allow
from ..layers import get_config, use_config
from ..search.table import RUNTIMES, latency_column

__all__ = ["RUNTIMES", "check_runtime", "build_runner", "session_options"]


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`, else a one-line error saying which exist."""
    latency_column(runtime)
    return runtime


def session_options(threads: int, level: str = "all"):  # -> onnxruntime.SessionOptions
    """ONNX Runtime's options for one exported network on the CPU, as measured in ``docs/benchmarks.md``.

    ``level="all"`` (every graph optimisation, including the NCHWc layout for the CPU's vector width): at
    128-224 px it ran MobileNet v1 / v2 in about half the time of ``extended`` or ``basic``. A batch fixed to 1
    and parallel execution changed nothing measurable (the optimised graph is a chain of fused convolutions),
    so they stay at their defaults. With several intra-op threads the pool sleeps between operators when
    mutualnet chose passive waiting for OpenMP (:mod:`mutualnet.threads`): ORT's pool spins by default, as
    OpenMP's threads do, and would lose its time slices the same way on a busy machine.
    """
    import onnxruntime as ort

    from ..threads import passive_wait

    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = levels[level]
    if threads > 1 and passive_wait():
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def build_runner(model: nn.Module, width: float, resolution: int, runtime: str = "eager", *,
                 threads: int | None = None, allow_uncalibrated: bool = False,
                 depth: int | None = None) -> Callable[[Tensor], Tensor]:
    """A function ``images (N, C, resolution, resolution) -> logits`` running one configuration on ``runtime``.

    ``eager`` runs the slimmable model itself at ``width`` (what an :class:`AdaptiveNet` switches); the others
    run the exported sub-network (BN folded) traced by TorchScript (frozen, optimised for inference) or as an
    ONNX Runtime session (``threads`` intra-op threads, default: torch's), on the CPU.
    ``allow_uncalibrated`` runs a configuration without calibrated BN statistics (timing untrained models).
    """
    from .export import _onnx_export, export_subnet  # export imports this package's siblings

    check_runtime(runtime)
    if runtime == "eager":
        def run_eager(x: Tensor) -> Tensor:
            with torch.inference_mode(), use_config(model, width, get_config(model)[1], depth), (
                    _allow(model) if allow_uncalibrated else contextlib.nullcontext()):
                return model(x)

        return run_eager
    net, _ = export_subnet(model, width, resolution, allow_uncalibrated=allow_uncalibrated, depth=depth)
    net = net.cpu().eval()
    x = torch.randn(1, getattr(model, "in_chans", 3), resolution, resolution)
    if runtime == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, x, check_trace=False)))

        def run_ts(images: Tensor) -> Tensor:
            with torch.inference_mode():
                return traced(images)

        return run_ts
    require("onnx", "the onnxruntime runtime")
    import onnxruntime as ort

    model_bytes = _onnx_export(net, x)
    with contextlib.redirect_stderr(io.StringIO()):
        sess = ort.InferenceSession(model_bytes, session_options(int(threads or torch.get_num_threads())),
                                    providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run_ort(images: Tensor) -> Tensor:
        return torch.from_numpy(sess.run(None, {name: images.detach().cpu().float().contiguous().numpy()})[0])

    return run_ort
