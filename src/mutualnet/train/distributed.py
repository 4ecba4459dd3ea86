"""Data-parallel training with ``torchrun``: one all-reduce per optimizer step, resumable sampling, sync BN.

Why not wrap the model in ``DistributedDataParallel``? DDP all-reduces from autograd hooks during
``backward``. The sandwich step runs ``backward`` once per sub-network, so DDP would either all-reduce
every sub-network's gradients (4x the traffic), or, with ``no_sync()`` on all but the last, reduce
when the *last* sub-network backpropagates. That last one is a narrow sub-network that leaves most
weights untouched, so DDP's reducer waits for gradients that never come (a hang, or an "unused
parameters" error; ``find_unused_parameters`` would reduce only a subset and silently drop the rest).
And under ``no_sync()`` throughout, DDP offers no call to reduce the accumulated gradients afterwards.

So we keep the plain module and do what DDP does, once per iteration: parameters and buffers are
broadcast from rank 0 at the start, every process accumulates its sub-networks' gradients locally,
and :func:`all_reduce_gradients` averages them in a few flat buckets right before ``optimizer.step()``.
Every process draws the same sub-network plan (same seed), so all of them hold gradients for the same
parameters. We lose DDP's overlap of communication with the backward pass, once per four backwards.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "broadcast_model", "all_reduce_gradients",
           "all_reduce_mean", "EpochSampler", "ShardSampler", "SeededSamples"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str = "cpu", timeout: timedelta | None = None) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (a no-op for a single process).

    Multi-node works as usual: ``torchrun --nnodes N --node_rank i --rdzv_endpoint host:port ...``.
    NCCL is used for CUDA, gloo for CPU. ``timeout`` bounds every collective (None: torch's default, 30 min
    for gloo); a sharded search waits at a barrier for the slowest shard, so it passes a long one.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timeout)
    return DistInfo(rank, world, local_rank)


def cleanup_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def broadcast_model(model: nn.Module) -> None:
    """Make every process start from rank 0's parameters and buffers."""
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, 0)


@torch.no_grad()
def all_reduce_gradients(params: list[Tensor], world_size: int, bucket_mb: float = 25.0) -> None:
    """Average the accumulated gradients over all processes, in flat buckets of about ``bucket_mb`` MB."""
    grads = [p.grad for p in params if p.grad is not None]
    buckets: dict[tuple, list[list[Tensor]]] = {}
    limit = int(bucket_mb * 2**20)
    for g in grads:
        groups = buckets.setdefault((g.device, g.dtype), [[]])
        if groups[-1] and sum(t.numel() for t in groups[-1]) * g.element_size() + g.numel() * g.element_size() > limit:
            groups.append([])
        groups[-1].append(g)
    for groups in buckets.values():
        for bucket in groups:
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            flat.div_(world_size)
            for g, chunk in zip(bucket, flat.split([g.numel() for g in bucket])):
                g.copy_(chunk.view_as(g))


def all_reduce_mean(x: Tensor, info: DistInfo) -> Tensor:
    """Mean of ``x`` over processes (a copy; ``x`` itself is left alone)."""
    if not info.enabled:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / info.world_size


class EpochSampler(Sampler):
    """A shuffled order per ``(seed, epoch)``, split across processes, that can start mid-epoch.

    Process ``r`` takes positions ``r, r + W, r + 2W, ...`` of the epoch's permutation (padded to a
    multiple of ``W``), so local batch ``k`` of all processes together is global batch ``k`` of a
    single process with the same global batch size: the data order does not depend on the number
    of processes, and resuming at batch ``k`` continues it whatever that number is.

    Yields ``(index, sample_seed)`` pairs for :class:`SeededSamples`, which seeds each batch's augmentation
    with its first sample's seed, so augmentation is a function of ``(seed, epoch, position)``, independent
    of workers and resumes.
    """

    def __init__(self, length: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True) -> None:
        self.length, self.num_replicas, self.rank, self.seed, self.shuffle = length, num_replicas, rank, seed, shuffle
        self.per_rank = math.ceil(length / num_replicas)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use ``epoch``'s order, skipping this process's first ``start`` samples."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.num_replicas
        order += order[: total - len(order)]
        mine = order[self.rank::self.num_replicas][self.start:]
        base = (self.seed * 100_003 + self.epoch) * 1_000_003
        return iter([(i, (base + i) % 2**63) for i in mine])


class ShardSampler(Sampler):
    """Process ``r`` of ``W`` gets indices ``r, r + W, ...`` without padding (exact distributed evaluation)."""

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, length, num_replicas))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class SeededSamples(Dataset):
    """Wraps a dataset so that augmentation is reproducible from the seeds :class:`EpochSampler` yields.

    A batch is drawn with torch's RNG seeded once by the seed of its first item, so it is a function of
    ``(seed, epoch, position)``: the same whatever the number of loader workers, and the same when a run
    resumes at a batch boundary (it always does). Datasets with a ``__getitems__`` (the tensor datasets)
    then augment the batch in one go; others are read sample by sample under the same seed. Seeding per
    batch instead of per sample costs one RNG fork per batch rather than one per image (which made the
    loader ~15x slower than the augmentation itself). Single items ``(index, seed)`` are seeded alike.
    The global RNG is restored afterwards, so the training process's random state is untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[tuple[int, int]]) -> list:
        indices = [index for index, _ in items]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(items[0][1])  # CPU only: torch.manual_seed also walks devices
            batched = getattr(self.dataset, "__getitems__", None)
            return batched(indices) if batched is not None else [self.dataset[i] for i in indices]
