"""Distributed step: our all-reduce after the last backward vs DDP with ``no_sync`` for all but the last sub-network.

The training step (:func:`mutualnet.train.step.train_step`) accumulates the gradients of every sub-network and
then averages them over the processes with one bucketed all-reduce
(:func:`mutualnet.train.distributed.all_reduce_gradients`). torch's DistributedDataParallel could instead
overlap the communication with the last sub-network's backward (``no_sync()`` around the others). Both run the
same 4-sub-network plan in the same processes, alternated round by round; the gradients are checked equal first.
Rank 0 prints each engine's step time and the per-round ratio DDP / ours, median [min-max].
``--backend nccl --device cuda`` runs it on GPUs (process k on ``cuda:k``; NCCL needs one GPU per process,
so ``benchmarks/gpu.sh`` runs it only where there are at least two).

    python benchmarks/bench_ddp.py [--model resnet20_cifar] [--batch 32] [--repeats 10] [--backend gloo]
    python benchmarks/bench_ddp.py --backend nccl --device cuda [--world 2] [--model mobilenet_v2] [--batch 64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from _common import load_text
from torch.nn.parallel import DistributedDataParallel

import mutualnet as mn
from mutualnet.data import resize_batch
from mutualnet.train.distributed import all_reduce_gradients
from mutualnet.train.step import SubNet, distill_loss


def step(model, forward, x, y, plan, sync) -> None:
    """One sandwich step: ``forward`` runs the network (the model or its DDP wrapper); ``sync(i)`` wraps each."""
    teacher = None
    for i, sub in enumerate(plan):
        with mn.use_config(model, sub.width, sub.resolution), sync(i):
            logits = forward(resize_batch(x, sub.resolution))
            loss = F.cross_entropy(logits, y) if teacher is None else distill_loss(logits, teacher)
            loss.backward()
        if teacher is None:
            teacher = logits.detach()


def worker(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    torch.set_num_threads(args.threads)
    dev = torch.device(f"cuda:{rank}") if args.device == "cuda" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(args.backend, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = mn.create_model(args.model).train().to(dev)
    ddp = DistributedDataParallel(model, device_ids=[rank] if dev.type == "cuda" else None,
                                  forward_sync_buffers=False, bucket_cap_mb=25)
    params = [p for p in model.parameters() if p.requires_grad]
    lo, hi = model.width_range
    res = list(mn.model_info(args.model).resolutions)
    plan = [SubNet(hi, res[0], "labels"), SubNet(lo, res[-1], "teacher"),
            SubNet(round(lo + 0.33 * (hi - lo), 3), res[1], "teacher"),
            SubNet(round(lo + 0.66 * (hi - lo), 3), res[2], "teacher")]
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, model.in_chans, res[0], res[0], generator=g).to(dev)
    y = torch.randint(0, model.num_classes, (args.batch,), generator=g).to(dev)
    sync_device = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    last = len(plan) - 1

    def ours() -> None:
        model.zero_grad(set_to_none=True)
        step(model, model, x, y, plan, lambda i: contextlib.nullcontext())
        all_reduce_gradients(params, world)

    def with_ddp() -> None:
        model.zero_grad(set_to_none=True)
        step(model, ddp, x, y, plan, lambda i: ddp.no_sync() if i < last else contextlib.nullcontext())

    ours()
    a = [p.grad.clone() for p in params]
    with_ddp()
    b = [p.grad.clone() for p in params]
    diff = max(float((u - v).abs().max()) for u, v in zip(a, b))
    engines = {"ours (all-reduce after the last backward)": ours, "DDP, no_sync but the last": with_ddp}
    for fn in engines.values():
        fn()
    times = {k: [] for k in engines}
    for _ in range(args.repeats):
        for k, fn in engines.items():
            sync_device()
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            sync_device()  # kernels (and NCCL's all-reduce) are asynchronous on a GPU
            dist.barrier()
            times[k].append(time.perf_counter() - t0)
    if rank == 0:
        where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{args.threads} thread(s) each"
        print(f"== distributed step, {args.model}, batch {args.batch} per process, {world} processes, "
              f"{args.backend}, {where}, torch {torch.__version__}; {load_text()}")
        print(f"gradients equal: max |ours - DDP| = {diff:.2e}")
        for k, t in times.items():
            print(f"  {k:44s} {statistics.median(t) * 1e3:8.1f} ms [{min(t) * 1e3:.1f}-{max(t) * 1e3:.1f}]")
        (ka, ta), (kb, tb) = times.items()
        r = [v / u for u, v in zip(ta, tb)]
        print(f"ratio DDP / ours: {statistics.median(r):.3f}x [{min(r):.3f}-{max(r):.3f}], n={args.repeats}")
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = p.parse_args()
    if args.backend == "nccl" and args.device != "cuda":
        p.error("--backend nccl runs on GPUs: add --device cuda")
    if args.device == "cuda" and torch.cuda.device_count() < args.world:
        p.error(f"--device cuda needs one GPU per process: {args.world} processes, "
                f"{torch.cuda.device_count()} GPU(s) visible")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(args.world, port, args), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
