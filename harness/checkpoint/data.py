"""`ResumableDataLoader`: a DataLoader whose position can be saved and restored exactly.

What it saves per rank: the epoch, the number of batches already handed out in that epoch, and
the seed everything random in the loader derives from. On resume it skips the batches already
consumed *at the index level* (skipped samples are never loaded), so the remaining batches are
exactly those of the uninterrupted run. It closes the usual gaps:

- `sampler.set_epoch(epoch)` is called on every `iter()`, also on the first, resumed one;
- a `RandomSampler` without a generator gets one seeded from (seed, epoch), and the loader's own
  generator is seeded likewise, so creating an iterator never draws from the global torch RNG;
- with `num_workers > 0`, every batch is produced with the worker's python/numpy/torch RNGs
  seeded from (seed, epoch, batch index). Augmentation inside workers is then a function of the
  batch's position, not of which worker ran it or of how many batches that worker had done, so
  it survives a resume (torchdata's StatefulDataLoader re-seeds workers from base_seed + worker_id
  and gets this wrong). With `num_workers == 0` augmentation draws from the main process RNG,
  which the checkpointer saves, so nothing is reseeded.

Map-style datasets only: an IterableDataset has no index to skip to; register the dataset
itself (with state_dict/load_state_dict) instead.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import xxhash
from torch.utils.data import DataLoader, IterableDataset, RandomSampler


def derive_seed(*parts) -> int:
    """A 63-bit seed that depends on every part (stable across processes and runs)."""
    return xxhash.xxh3_64_intdigest(repr(parts).encode()) >> 1


class _PositionedBatches:
    """Batch sampler yielding [(epoch, batch_index, dataset_index), ...], skipping the first `skip` batches."""

    def __init__(self, batch_sampler) -> None:
        self.batch_sampler = batch_sampler
        self.epoch = 0
        self.skip = 0

    def __iter__(self):
        for b, indices in enumerate(self.batch_sampler):
            if b >= self.skip:
                yield [(self.epoch, b, i) for i in indices]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class _PositionedDataset(torch.utils.data.Dataset):
    """Fetches by (epoch, batch, index) keys; inside a worker, seeds its RNGs per batch first."""

    def __init__(self, dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys):
        if keys and torch.utils.data.get_worker_info() is not None:
            epoch, batch, _ = keys[0]
            seed = derive_seed(self.seed, "worker", epoch, batch)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
        indices = [i for _, _, i in keys]
        getitems = getattr(self.dataset, "__getitems__", None)
        return getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]


class ResumableDataLoader:
    """Wraps a DataLoader; iterate it like one. `state_dict()` is the data position of this rank."""

    def __init__(self, loader: DataLoader, seed: int | None = None) -> None:
        if isinstance(loader.dataset, IterableDataset):
            raise TypeError("ResumableDataLoader needs a map-style dataset; an IterableDataset has no index "
                            "to resume at: give the dataset state_dict/load_state_dict and register it instead")
        if loader.batch_sampler is None:
            raise TypeError("ResumableDataLoader needs batching (batch_size or batch_sampler), got batch_size=None")
        self.original = loader
        self.seed = torch.initial_seed() if seed is None else int(seed)
        self.epoch = 0
        self.position = 0  # batches handed out in the current epoch
        self.sampler = loader.sampler
        if isinstance(self.sampler, RandomSampler) and self.sampler.generator is None:
            self.sampler.generator = torch.Generator()
            self._seeded_sampler = True
        else:
            self._seeded_sampler = False
        # A generator the user gave the sampler: its state at the start of the epoch decides the order.
        user_gen = getattr(self.sampler, "generator", None)
        self._user_generator = user_gen if isinstance(user_gen, torch.Generator) and not self._seeded_sampler else None
        self._epoch_start_state = None
        self._batches = _PositionedBatches(loader.batch_sampler)
        self._generator = torch.Generator()
        kwargs = dict(num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context,
                      persistent_workers=loader.persistent_workers, in_order=getattr(loader, "in_order", True))
        if loader.num_workers > 0:
            kwargs["prefetch_factor"] = loader.prefetch_factor
        self.loader = DataLoader(_PositionedDataset(loader.dataset, self.seed), batch_sampler=self._batches,
                                 generator=self._generator, **kwargs)

    @property
    def dataset(self):
        return self.original.dataset

    @property
    def batch_size(self):
        return self.original.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Move to `epoch` (position 0). Setting the current epoch keeps the position: resume-safe."""
        if epoch != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def __iter__(self):
        epoch, skip = self.epoch, self.position
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if self._seeded_sampler:
            self.sampler.generator.manual_seed(derive_seed(self.seed, "sampler", epoch))
        if self._user_generator is not None:
            if self._epoch_start_state is not None and skip:
                self._user_generator.set_state(self._epoch_start_state)
            self._epoch_start_state = self._user_generator.get_state()
        self._generator.manual_seed(derive_seed(self.seed, "loader", epoch))
        self._batches.epoch, self._batches.skip = epoch, skip
        for batch in self.loader:
            self.position += 1
            yield batch
        self.epoch, self.position = epoch + 1, 0

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "position": self.position, "seed": self.seed, "batches_per_epoch": len(self)}
        if self._user_generator is not None:
            mid_epoch = self.position and self._epoch_start_state is not None
            state["sampler_generator"] = self._epoch_start_state if mid_epoch else self._user_generator.get_state()
        return state

    def check_state_dict(self, state: dict) -> None:
        """Raise ValueError if `state` was saved by a loader that differs from this one."""
        if state["batches_per_epoch"] != len(self):
            raise ValueError(f"the data loader yields {len(self)} batches per epoch, the checkpoint was saved with "
                             f"{state['batches_per_epoch']}: dataset, batch size, drop_last or world size changed")
        if self._user_generator is not None and "sampler_generator" not in state:
            raise ValueError("the sampler has a generator now but the checkpoint saved none for it")

    def load_state_dict(self, state: dict) -> None:
        self.check_state_dict(state)
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        self.loader.dataset.seed = self.seed
        if self._user_generator is not None:
            self._epoch_start_state = state["sampler_generator"].clone()
            self._user_generator.set_state(self._epoch_start_state)


def wrap_loader(loader: DataLoader):
    """What `Checkpointer.prepare` registers for a DataLoader: a loader whose position it can save and restore."""
    return ResumableDataLoader(loader)
