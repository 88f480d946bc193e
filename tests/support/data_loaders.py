"""Datasets, samplers and a training-loop driver for the data-loader resume tests (tests/checkpoint/test_checkpoint_data*.py).

`take` iterates like a training loop: it draws from the global torch RNG after every batch (as dropout
would), records each batch's bytes and that draw, and crosses epochs. A stop that falls on the end of
an epoch lets the epoch's `for` loop finish, so the snapshot is taken at the boundary (position 0 of
the next epoch); any other stop breaks out mid-epoch.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import torch
from torch.utils.data import (DataLoader, Dataset, IterableDataset, Sampler, SubsetRandomSampler,
                              WeightedRandomSampler, get_worker_info)

from harness.checkpoint import Checkpointer

N = 20


class Augmented(Dataset):
    """Every sample draws augmentation noise from python, numpy and torch: the RNGs a worker (or the main process) holds."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        return torch.tensor([float(i), random.random(), float(np.random.rand()), torch.rand(()).item()],
                            dtype=torch.float64)


class LazyRandomBatches(Sampler):
    """A custom batch sampler that draws every batch lazily from the global torch and python RNGs."""

    def __init__(self, n: int = N, batch: int = 3, batches: int = 6):
        self.n, self.batch, self.batches = n, batch, batches

    def __iter__(self):
        for _ in range(self.batches):
            first = int(torch.randint(self.n, ()).item())
            yield [first] + random.sample(range(self.n), self.batch - 1)

    def __len__(self):
        return self.batches


SAMPLERS = ["sequential", "random_generator", "random", "weighted", "subset", "custom_batch"]


def map_loader(sampler: str, batch_size: int | None, workers: int, persistent: bool, **extra) -> DataLoader:
    ds = Augmented()
    kw = dict(num_workers=workers, persistent_workers=persistent, **extra)
    if sampler == "custom_batch":
        return DataLoader(ds, batch_sampler=LazyRandomBatches(), **kw)
    kw["batch_size"] = batch_size
    if sampler == "sequential":
        return DataLoader(ds, shuffle=False, **kw)
    if sampler == "random_generator":
        return DataLoader(ds, shuffle=True, generator=torch.Generator().manual_seed(7), **kw)
    if sampler == "random":
        return DataLoader(ds, shuffle=True, **kw)
    if sampler == "weighted":
        return DataLoader(ds, sampler=WeightedRandomSampler(torch.linspace(0.1, 1, N), N), **kw)
    if sampler == "subset":
        return DataLoader(ds, sampler=SubsetRandomSampler(list(range(3, N))), **kw)
    raise ValueError(sampler)


class Stream(IterableDataset):
    """A resumable iterable dataset: sharded by worker, with noise from a generator that is part of its state."""

    def __init__(self, n: int = 23):
        self.n = n
        self.epoch = 0
        self.pos = 0
        self.gen = None  # made in __iter__: a torch.Generator does not reach a spawned worker intact
        self._resume = None

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        info = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        items = list(range(wid, self.n, workers))
        if self.gen is None:
            self.gen = torch.Generator()
        if self._resume is not None:
            self.pos, state = self._resume["pos"], self._resume["gen"]
            self.gen.set_state(state)
            self._resume = None
        else:
            self.pos = 0
            self.gen.manual_seed(1000 * self.epoch + wid)
        for i in items[self.pos:]:
            self.pos += 1
            yield torch.tensor([float(i), torch.rand((), generator=self.gen).item(), float(self.epoch)],
                               dtype=torch.float64)

    def state_dict(self):
        return {"pos": self.pos, "gen": self.gen.get_state()}

    def load_state_dict(self, state):
        self._resume = state


def stream_loader(batch_size: int | None, workers: int, persistent: bool, **extra) -> DataLoader:
    return DataLoader(Stream(), batch_size=batch_size, num_workers=workers, persistent_workers=persistent, **extra)


def seed_all(seed: int) -> None:
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)


def record(batch) -> bytes:
    return batch.numpy().tobytes() + torch.rand(1).numpy().tobytes()


def take(loader, n: int, per_epoch: int, start: int = 0) -> list[bytes]:
    """`n` batches like a training loop (see the module docstring), `start` batches into the run."""
    out: list[bytes] = []
    while len(out) < n:
        for batch in loader:
            out.append(record(batch))
            if len(out) >= n and (start + len(out)) % per_epoch:
                break
    return out


def per_epoch(make) -> int:
    return sum(1 for _ in make())


def run_resumed(make, path, n: int, per_epoch: int, start: int) -> list[bytes]:
    """A fresh Checkpointer and loader (a restarted process, seeded anew) load `path` and take `n` batches."""
    seed_all(12345)
    ckpt = Checkpointer()
    loader = ckpt.prepare(make())
    ckpt.load_state(path)
    return take(loader, n, per_epoch, start)


if __name__ == "__main__":  # python -m tests.support.data_loaders CKPT OUT KIND ARGS...: resume in a new process
    ckpt_dir, out, kind, *args = sys.argv[1:]
    if kind == "map":
        sampler, bs, workers, persistent, n, L, start = args
        make = lambda: map_loader(sampler, None if bs == "None" else int(bs), int(workers), persistent == "1")  # noqa: E731
    else:
        bs, workers, persistent, n, L, start = args
        make = lambda: stream_loader(None if bs == "None" else int(bs), int(workers), persistent == "1")  # noqa: E731
    batches = run_resumed(make, ckpt_dir, int(n), int(L), int(start))
    with open(out, "wb") as f:
        f.write(b"".join(len(b).to_bytes(4, "little") + b for b in batches))
