"""Deployed latency per runtime: the slimmable model in PyTorch eager vs the exported sub-network on TorchScript
and ONNX Runtime (what ``mutualnet latency --runtime`` measures), CPU, batch 1.

All runners of one configuration are timed in alternation in one process; each prints its median, the
min-max over rounds and its ratio to eager, in wall time and in this process's CPU time (the steadier number
on a shared machine; ONNX Runtime runs its one intra-op thread in this process). Goal for the MobileNets:
onnxruntime <= 0.2x eager.

``--ort-options`` adds ONNX Runtime sessions with other options beside the one mutualnet uses
(:func:`mutualnet.deploy.runtime.session_options`): graph optimisation ``extended`` and ``basic`` (no NCHWc
layout), the batch fixed to 1 (a free-dimension override), parallel execution mode, and with ``--threads`` > 1
spinning intra-op threads (``spin``).

    python benchmarks/bench_runtime.py [--threads 1] [--repeats 30] [--ort-options]
        [--configs mobilenet_v2:0.7:128,mobilenet_v2:1.0:224,mobilenet_v1:0.5:128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import header

import mutualnet as mn
from mutualnet.deploy.export import _onnx_export, export_subnet
from mutualnet.deploy.runtime import RUNTIMES, build_runner, session_options


def ort_variants(model, width: float, res: int, threads: int) -> dict:
    """ONNX Runtime sessions of one configuration with options other than mutualnet's (see the module doc)."""
    import onnxruntime as ort

    net, _ = export_subnet(model, width, res, allow_uncalibrated=True)
    x = torch.randn(1, model.in_chans, res, res)
    onnx_bytes = _onnx_export(net.eval(), x)
    variants = {"ort:extended": session_options(threads, "extended"), "ort:basic": session_options(threads, "basic")}
    variants["ort:batch1"] = session_options(threads)
    variants["ort:batch1"].add_free_dimension_override_by_name("batch", 1)
    variants["ort:parallel"] = session_options(threads)
    variants["ort:parallel"].execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if threads > 1:
        spin = variants["ort:spin"] = ort.SessionOptions()  # the same options, the pool spinning (ORT's default)
        spin.intra_op_num_threads, spin.inter_op_num_threads = threads, 1
        spin.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    out = {}
    for name, opts in variants.items():
        sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        out[name] = (lambda s: lambda images: torch.from_numpy(s.run(None, {"images": images.numpy()})[0]))(sess)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--ort-options", action="store_true", help="also time ONNX Runtime with other session options")
    p.add_argument("--configs", default="mobilenet_v2:0.7:128,mobilenet_v2:1.0:224,mobilenet_v1:0.5:128,"
                                        "mobilenet_v1:1.0:224")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    header(f"deployed latency by runtime, batch 1, {args.threads} thread(s)", torch.device("cpu"))
    for spec in args.configs.split(","):
        name, width, res = spec.split(":")
        width, res = float(width), int(res)
        model = mn.create_model(name).eval()
        x = torch.randn(1, model.in_chans, res, res)
        runners = {rt: build_runner(model, width, res, rt, threads=args.threads, allow_uncalibrated=True)
                   for rt in RUNTIMES}  # untrained weights: timing only
        if args.ort_options:
            runners |= ort_variants(model, width, res, args.threads)
        ref = runners["eager"](x)
        for rt, run in runners.items():
            assert (run(x) - ref).abs().max() <= 1e-3 * max(1.0, float(ref.abs().max())), rt
            for _ in range(3):
                run(x)
        times: dict[str, list[float]] = {rt: [] for rt in runners}
        cpu: dict[str, list[float]] = {rt: [] for rt in runners}
        for _ in range(args.repeats):
            for rt, run in runners.items():
                t0, c0 = time.perf_counter(), time.process_time()
                run(x)
                times[rt].append((time.perf_counter() - t0) * 1e3)
                cpu[rt].append((time.process_time() - c0) * 1e3)
        med = {rt: statistics.median(v) for rt, v in times.items()}
        cmed = {rt: statistics.median(v) for rt, v in cpu.items()}
        print(f"{name} width {width:g} at {res} px (n={args.repeats} rounds, alternated)")
        for rt, v in times.items():
            print(f"  {rt:12s} {med[rt]:8.2f} ms  (min {min(v):.2f}, max {max(v):.2f})  "
                  f"{med[rt] / med['eager']:.3f}x eager; cpu {cmed[rt]:.2f} ms, {cmed[rt] / cmed['eager']:.3f}x eager")


if __name__ == "__main__":
    main()
