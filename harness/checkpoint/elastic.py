"""Resuming on a different world size: an elastic data order, and what each rank restores.

Data order. `ElasticSampler` draws one global sample order per epoch from (seed, epoch) alone, cuts
it into global batches of a fixed `global_batch_size`, and gives rank r its slice of each global
batch (`global_batch_size // world_size` samples, in rank order). The global sequence (the global
batches, ranks concatenated in rank order) is the same for every world size that divides the global
batch size, and so is the number of batches per epoch: the data position that `ResumableDataLoader`
saves (epoch, batches handed out) counts global batches, and means the same thing on any world
size. Build the loader with `elastic_loader(...)`, or as `DataLoader(dataset, sampler=ElasticSampler(...),
batch_size=sampler.local_batch_size)`. A `DistributedSampler`'s order depends on the world size: it
is not elastic, and a checkpoint of it is refused on another world size (IncompatibleCheckpointError
saying "not elastic").

What a rank restores when the world size changed (saved by S ranks, loaded on W):

    model, optimizer     the strategy reshards: replicated (DDP / one process) files are full state dicts,
                         every rank loads them; FSDP2 sharded state dicts load onto the new mesh through
                         DCP; DeepSpeed ZeRO 1-2 goes through DeepSpeed's universal checkpoint (converted on
                         load); ZeRO 0 and 3 are refused (`strategy.py`).
    schedulers, step,    replicated (shared/): the same on every world size.
    replicated custom
    data position        per rank; an elastic loader's is global. Rank r reads saved rank `source_rank(r)`
                         (r itself when r < S, else rank 0). A loader that is not elastic is refused.
    RNG streams          rank r < S: restored from its own saved streams (exact). Rank r >= S: re-derived,
                         seeded from (step, rank) (`derive_seed`): reproducible, but a continuation of no
                         saved stream. Saved ranks >= W: their streams are dropped.
    GradScaler,          from saved rank `source_rank(r)`: exact where that state is the same on every
    per-rank custom      rank (a GradScaler under DDP), a copy of rank 0's otherwise.

Every rank reports what it did as a `checkpoint.elastic` probe point (the elastic oracle prints it)
and with an `ElasticResumeWarning`.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sized

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from harness import probe

from .data import derive_seed
from .errors import IncompatibleCheckpointError


class ElasticResumeWarning(UserWarning):
    """A checkpoint was loaded on another world size: which per-rank state was restored, re-derived or dropped."""


class ElasticSampler(Sampler[int]):
    """This rank's share of a global sample order that does not depend on the world size.

    Per epoch: a permutation of the data set seeded from (seed, epoch) (or the identity when
    `shuffle=False`), cut into `len(dataset) // global_batch_size` global batches (the rest is dropped);
    rank r yields samples `[r * L, (r + 1) * L)` of each global batch, `L = global_batch_size // num_replicas`.
    """

    def __init__(self, dataset: Sized, global_batch_size: int, *, num_replicas: int | None = None,
                 rank: int | None = None, seed: int = 0, shuffle: bool = True) -> None:
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            on = dist.is_available() and dist.is_initialized()
            num_replicas = (dist.get_world_size() if on else 1) if num_replicas is None else num_replicas
            rank = (dist.get_rank() if on else 0) if rank is None else rank
        if global_batch_size < 1 or global_batch_size % num_replicas:
            raise ValueError(f"global_batch_size {global_batch_size} is not a positive multiple of the world size "
                             f"{num_replicas}: every rank needs an equal share of each global batch; choose a global "
                             "batch size that every world size you resume on divides")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.n = len(dataset)
        if self.n < global_batch_size:
            raise ValueError(f"the data set has {self.n} samples, fewer than one global batch ({global_batch_size})")
        self.global_batch_size = int(global_batch_size)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.local_batch_size = self.global_batch_size // self.num_replicas
        self.batches_per_epoch = self.n // self.global_batch_size
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_order(self, epoch: int | None = None) -> list[int]:
        """The epoch's global sample sequence (the same on every rank and every world size)."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "elastic-order", epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        return order[: self.batches_per_epoch * self.global_batch_size]

    def __iter__(self):
        order, g, lo = self.global_order(), self.global_batch_size, self.rank * self.local_batch_size
        for b in range(self.batches_per_epoch):
            yield from order[b * g + lo: b * g + lo + self.local_batch_size]

    def __len__(self) -> int:
        return self.batches_per_epoch * self.local_batch_size


def elastic_loader(dataset, global_batch_size: int, *, seed: int = 0, shuffle: bool = True,
                   num_replicas: int | None = None, rank: int | None = None, **loader_kwargs) -> DataLoader:
    """A DataLoader whose global batches do not depend on the world size (one `ElasticSampler` batch per rank)."""
    sampler = ElasticSampler(dataset, global_batch_size, num_replicas=num_replicas, rank=rank, seed=seed,
                             shuffle=shuffle)
    return DataLoader(dataset, sampler=sampler, batch_size=sampler.local_batch_size, drop_last=True, **loader_kwargs)


def is_elastic(loader) -> bool:
    """Whether a (Resumable)DataLoader hands out whole `ElasticSampler` slices, one per batch."""
    original = getattr(loader, "original", loader)
    sampler = getattr(original, "sampler", None)
    batch_sampler = getattr(original, "batch_sampler", None)
    return (isinstance(sampler, ElasticSampler) and getattr(batch_sampler, "sampler", None) is sampler
            and getattr(batch_sampler, "batch_size", None) == sampler.local_batch_size)


def _describe_order(loader) -> str:
    original = getattr(loader, "original", loader)
    sampler = getattr(original, "sampler", None)
    batch_sampler = getattr(original, "batch_sampler", None)
    if isinstance(sampler, ElasticSampler):
        return (f"an ElasticSampler with local batch size {sampler.local_batch_size}, but the loader's batch size "
                f"is {getattr(batch_sampler, 'batch_size', None)}")
    custom = batch_sampler is not None and type(batch_sampler).__name__ != "BatchSampler"
    what = type(batch_sampler if custom else sampler).__name__
    return f"its {'batch sampler' if custom else 'sampler'} is a {what}, whose order depends on the world size"


def source_rank(rank: int, saved_world: int, world_size: int) -> int:
    """The saved rank whose per-rank files `rank` reads: itself when it existed, else rank 0."""
    return rank if rank < saved_world else 0


def check_resume(path: str, dataloaders, saved_world: int, world_size: int, rank: int, what: str) -> None:
    """Refuse a world-size change when a registered data loader is not elastic (IncompatibleCheckpointError,
    which the ranks agree on like any other, so it names the class the checkpointer re-raises).

    `what` describes the two sides ("saved by 2 rank(s) (...), loading on 1 (...)").
    """
    if saved_world == world_size:
        return
    for i, loader in enumerate(dataloaders):
        if not is_elastic(loader):
            probe.point(probe.Point.NOT_ELASTIC, loader=i, reason=_describe_order(loader), saved_world=saved_world,
                        world_size=world_size)
            raise IncompatibleCheckpointError(
                f"{path}: {what}: rank {rank}: data loader {i} is not elastic ({_describe_order(loader)}): its data "
                "position cannot be carried to another world size, and the global sample order would change. Build "
                "it with harness.checkpoint.elastic.elastic_loader(dataset, global_batch_size, seed=...) (an "
                f"ElasticSampler), or resume with the same world size ({saved_world})")


def rederive_rng(generators, step: int, rank: int) -> None:
    """Seed every RNG stream of this process (python, numpy, torch, CUDA, registered generators) from (step, rank)."""
    seed = derive_seed("elastic-rng", step, rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CUDA too
    for i, g in enumerate(generators):
        s = derive_seed("elastic-rng", step, rank, i)
        if isinstance(g, torch.Generator):
            g.manual_seed(s)
        elif isinstance(g, np.random.Generator):
            g.bit_generator.state = type(g.bit_generator)(s).state
        else:
            g.seed(s)


def after_load(path: str, generators, saved_world: int, world_size: int, rank: int, step: int,
               per_rank_objects: int) -> None:
    """After a load on another world size: re-derive the RNG streams of a new rank, report what was done."""
    if saved_world == world_size:
        return
    src = source_rank(rank, saved_world, world_size)
    if rank >= saved_world:
        rederive_rng(generators, step, rank)
        rng = "re-derived from (step, rank): the saved run had no such rank"
    else:
        rng = "restored from its own saved streams"
    dropped = list(range(world_size, saved_world))
    parts = [f"RNG streams {rng}"]
    if src != rank:
        parts.append(f"data position{' and per-rank objects' if per_rank_objects else ''} from saved rank {src}")
    if dropped and rank == 0:
        parts.append(f"the streams of saved rank(s) {dropped} are dropped")
    probe.point(probe.Point.ELASTIC, path=path, step=step, saved_world=saved_world, world_size=world_size,
                source_rank=src, rng="re-derived" if rank >= saved_world else "restored", dropped_ranks=dropped)
    warnings.warn(f"{path}: saved by {saved_world} rank(s), loaded on {world_size}: rank {rank}: " + "; ".join(parts),
                  ElasticResumeWarning, stacklevel=4)


__all__ = ["ElasticSampler", "elastic_loader", "is_elastic", "ElasticResumeWarning",
           "source_rank", "check_resume", "rederive_rng", "after_load"]
