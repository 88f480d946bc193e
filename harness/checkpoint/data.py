"""`ResumableDataLoader`: a DataLoader whose position can be saved and restored exactly.

Contract: a resumed loader yields exactly the batches the uninterrupted run of the same loader
yields from that point on, with the same bytes; what cannot be resumed that way is refused when the
loader is wrapped (`Checkpointer.prepare`), never discovered wrong after a resume.

Map-style datasets. Saved per rank: the epoch, the number of units (batches; samples with
`batch_size=None`) handed out in it, the seed of the worker RNGs, and, mid-epoch, the RNG state the
sampler drew the epoch's order from. On resume the consumed units are skipped at the index level
(never loaded). What makes that exact:

- `sampler.set_epoch(epoch)` is called on every `iter()`, also on the first, resumed one;
- samplers that draw from the global RNGs (`RandomSampler` without a generator,
  `WeightedRandomSampler`, `SubsetRandomSampler`, custom ones using torch, `random` or numpy): the
  global torch/python/numpy states at the start of each epoch are recorded, and a mid-epoch resume
  replays the epoch's order from them. The sampler's first index is drawn from the live global
  streams, as torch does (an uninterrupted run yields what a plain DataLoader yields); a sampler
  that is not one of torch's (which draw only there) has its later pulls run on a private copy of
  the streams, so one drawing lazily resumes exactly too. A generator the sampler or the loader
  holds is recorded and replayed the same way;
- with `num_workers > 0`, each batch is produced with the worker's python/numpy/torch RNGs seeded
  from (seed, epoch, batch index, and what the user's `worker_init_fn` left in them), and batch b
  always runs on worker b % num_workers: augmentation inside workers is a function of the batch's
  position, so it survives a resume (torchdata's StatefulDataLoader re-seeds workers from
  base_seed + worker_id and does not). `reseed_workers=False` leaves worker seeding as torch and
  the user's `worker_init_fn` do it (exact only if workers draw nothing random);
- with `num_workers == 0`, a dataset's `__getitem__` draws from the main process's global RNGs:
  exact only when those are restored too, which `Checkpointer.load_state` does.

Iterable datasets must have a resumable position: `state_dict()` / `load_state_dict(state)` (the
protocol of torchdata's `Stateful`, which HF `datasets.IterableDataset` implements), where
`load_state_dict` before the next `iter()` makes that iteration continue after the samples already
yielded, and a plain `iter()` starts the epoch over (calling `set_epoch(epoch)` first if the
dataset has it). With workers each worker iterates its own copy (shard it with `get_worker_info()`,
as torch requires anyway); the state of every worker's copy after its last delivered batch is saved,
loaded into that worker's copy on resume, and the batches continue round-robin from the worker that
was next. Randomness inside an iterable dataset must be part of its state.

Refused when wrapped: an IterableDataset without state_dict/load_state_dict, and `in_order=False`
(batches are delivered in completion order, which no checkpoint can replay).
A torchdata `StatefulDataLoader` is not wrapped: `wrap_loader` keeps it and the checkpointer saves it
through its own `state_dict`/`load_state_dict`.
"""

from __future__ import annotations

import copy
import random
from typing import Any, NamedTuple

import numpy as np
import torch
import xxhash
from torch.utils.data import (BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler,
                              SequentialSampler, SubsetRandomSampler, WeightedRandomSampler, get_worker_info)


def derive_seed(*parts) -> int:
    """A 63-bit seed that depends on every part (stable across processes and runs)."""
    return xxhash.xxh3_64_intdigest(repr(parts).encode()) >> 1


# -- global RNG streams -----------------------------------------------------------------------

def _global_rng() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(legacy=True)}


def _set_global_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"].clone())
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def _rng_fingerprint() -> int:
    """A hash of this process's python/numpy/torch RNG states (what a worker_init_fn left in them)."""
    h = xxhash.xxh3_64()
    h.update(torch.get_rng_state().numpy().tobytes())
    h.update(repr(random.getstate()).encode())
    np_state = np.random.get_state(legacy=True)
    h.update(np_state[1].tobytes())
    h.update(repr(np_state[2:]).encode())
    return h.intdigest()


class _Skipped:
    """A placeholder batch: it only moves the DataLoader's round-robin on to the next worker."""


_worker_wrapper = None  # inside a worker: this worker's copy of the wrapped dataset (set by _WorkerInit)


class _WorkerInit:
    """worker_init_fn of the inner loader: shows the user's dataset to their worker_init_fn, runs it,
    and records what it left in the worker's RNGs (the per-batch seeds derive from it)."""

    def __init__(self, user_fn) -> None:
        self.user_fn = user_fn

    def __call__(self, worker_id: int) -> None:
        global _worker_wrapper
        info = get_worker_info()
        _worker_wrapper = info.dataset
        # The user's code (worker_init_fn, the dataset's __iter__) expects its own dataset here.
        object.__setattr__(info, "dataset", _worker_wrapper.dataset)
        if self.user_fn is not None:
            self.user_fn(worker_id)
            _worker_wrapper.worker_fingerprint = _rng_fingerprint()


def _this_wrapper(main):
    info = get_worker_info()
    return _worker_wrapper if info is not None else main


# -- map-style --------------------------------------------------------------------------------

class _PositionedBatches:
    """The inner loader's (batch) sampler: yields keys (epoch, unit index, dataset index) of the units
    from `skip` on, after `dummies` placeholders; pulls the user's sampler with its RNG draws replayed."""

    def __init__(self, units, batched: bool) -> None:
        self.units = units  # the user's batch sampler, or the sampler when batch_size=None
        self.batched = batched
        self.epoch = 0
        self.skip = 0
        self.dummies = 0
        self.replay: dict | None = None  # global RNG states to draw the epoch's order from (resume)

    def __iter__(self):
        epoch, skip, batched = self.epoch, self.skip, self.batched
        for _ in range(self.dummies):
            yield [] if batched else None
        for b, unit in enumerate(_isolated(self.units, self.replay, not _draws_only_first(self.units))):
            if b >= skip:
                yield [(epoch, b, i) for i in unit] if batched else (epoch, b, unit)

    @property
    def batch_sampler(self):
        """The user's batch sampler (the sampler itself with batch_size=None)."""
        return self.units

    def __len__(self) -> int:
        return len(self.units)


# torch's samplers draw from the global RNGs, if at all, only when their iteration starts.
_DRAW_ONLY_FIRST = (SequentialSampler, RandomSampler, WeightedRandomSampler, SubsetRandomSampler, DistributedSampler)


def _draws_only_first(units) -> bool:
    if type(units) is BatchSampler:
        units = units.sampler
    # The harness's own samplers (elastic.py) draw from generators seeded per epoch, never the global RNGs.
    return type(units) in _DRAW_ONLY_FIRST or type(units).__module__.startswith("harness.checkpoint.")


def _isolated(units, replay: dict | None, isolate: bool):
    """Iterate `units`. Its first item is drawn from the live global RNGs (or, when resuming, from
    `replay`, restoring the live ones after). With `isolate`, later draws from the global RNGs come
    from a private copy, so they neither depend on nor disturb what the training loop draws in between
    (swapping the states costs more than a batch of a small dataset: only for samplers not known to
    draw at the start alone)."""
    outer = None
    if replay is not None:
        outer = _global_rng()
        _set_global_rng(replay)
    try:
        it = iter(units)
        first = next(it, _END)
    finally:
        private = _global_rng()
        if outer is not None:
            _set_global_rng(outer)
    if first is _END:
        return
    yield first
    if not isolate:
        yield from it
        return
    while True:
        outer = _global_rng()
        _set_global_rng(private)
        try:
            unit = next(it, _END)
        finally:
            private = _global_rng()
            _set_global_rng(outer)
        if unit is _END:
            return
        yield unit


_END = object()


class _PositionedDataset(torch.utils.data.Dataset):
    """Fetches by (epoch, unit, index) keys; inside a worker, seeds its RNGs per unit first."""

    def __init__(self, dataset, seed: int, reseed: bool) -> None:
        self.dataset = dataset
        self.seed = seed
        self.reseed = reseed
        self.worker_fingerprint = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _seed_worker(self, epoch: int, unit: int) -> None:
        if self.reseed and get_worker_info() is not None:
            parts = (self.seed, "worker", epoch, unit)
            seed = derive_seed(*parts) if self.worker_fingerprint is None else derive_seed(*parts, self.worker_fingerprint)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)

    def __getitem__(self, key):  # batch_size=None: one unit is one sample
        if key is None:
            return _Skipped()
        epoch, unit, index = key
        self._seed_worker(epoch, unit)
        return self.dataset[index]

    def __getitems__(self, keys):
        if not keys:
            return []
        epoch, unit, _ = keys[0]
        self._seed_worker(epoch, unit)
        indices = [i for _, _, i in keys]
        getitems = getattr(self.dataset, "__getitems__", None)
        return getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]


class _MapCollate:
    def __init__(self, collate_fn, batched: bool) -> None:
        self.collate_fn = collate_fn
        self.batched = batched

    def __call__(self, data):
        if (self.batched and isinstance(data, list) and not data) or isinstance(data, _Skipped):
            return _Skipped()
        return self.collate_fn(data)


# -- iterable ---------------------------------------------------------------------------------

class _Delivered(NamedTuple):
    worker: int
    state: Any  # the worker's dataset state after this batch
    batch: Any
    ended: bool  # the worker's iterator is exhausted
    empty: bool  # nothing to hand out (the end of the stream, or a partial batch that drop_last drops)

    @property
    def __harness_batch__(self):
        """What the training loop gets: auto mode (harness.probe.auto) records this, not the envelope."""
        return self.batch


class _Exhausted:
    """Yielded after the dataset's last sample, so the worker's end reaches the main process with its batches."""


class _ResumableIterable(IterableDataset):
    """Each worker's copy loads that worker's saved state (first iteration only) and, when resuming,
    yields one placeholder batch first if the round-robin must start at a later worker."""

    def __init__(self, dataset, unit: int) -> None:
        self.dataset = dataset
        self.unit = unit  # samples per batch (1 with batch_size=None)
        self.epoch = 0  # of the next iteration: a persistent worker's copy counts on by itself
        self.states: dict | None = None
        self.ended: set = set()
        self.first_worker = 0

    def __len__(self) -> int:
        return len(self.dataset)  # TypeError if the dataset has none, as with a plain DataLoader

    def __iter__(self):
        info = get_worker_info()
        wid = info.id if info is not None else 0
        epoch, self.epoch = self.epoch, self.epoch + 1
        states, self.states = self.states, None
        ended, self.ended = self.ended, set()
        first_worker, self.first_worker = self.first_worker, 0
        if wid < first_worker:
            for _ in range(self.unit):
                yield _Skipped()
        if wid in ended:
            return
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        if states is not None and wid in states:
            self.dataset.load_state_dict(copy.deepcopy(states[wid]))
        yield from self.dataset
        yield _Exhausted()


class _IterableCollate:
    def __init__(self, collate_fn, batch_size: int | None, drop_last: bool, main_wrapper: _ResumableIterable) -> None:
        self.collate_fn = collate_fn
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.main_wrapper = main_wrapper

    def __call__(self, data):
        batched = self.batch_size is not None
        items = data if batched else [data]
        if isinstance(items[0], _Skipped):
            return _Skipped()
        ended = isinstance(items[-1], _Exhausted)
        if ended:
            items = items[:-1]
        info = get_worker_info()
        worker = info.id if info is not None else 0
        state = _this_wrapper(self.main_wrapper).dataset.state_dict()
        if info is None:
            state = copy.deepcopy(state)
        if not items or (batched and self.drop_last and len(items) < self.batch_size):
            return _Delivered(worker, state, None, ended, True)
        return _Delivered(worker, state, self.collate_fn(items if batched else items[0]), ended, False)


# -- the loader -------------------------------------------------------------------------------

def _generators(loader: DataLoader) -> list[torch.Generator]:
    """The torch generators the loader's order draws from (the loader's, its sampler's, its batch sampler's)."""
    found = []
    candidates = [loader, loader.sampler, loader.batch_sampler, getattr(loader.batch_sampler, "sampler", None)]
    for obj in candidates:
        g = getattr(obj, "generator", None)
        if isinstance(g, torch.Generator) and not any(g is f for f in found):
            found.append(g)
    return found


class ResumableDataLoader:
    """Wraps a DataLoader; iterate it like one. `state_dict()` is the data position of this rank.

    `reseed_workers=False` keeps torch's and your `worker_init_fn`'s worker seeding untouched (randomness
    drawn inside workers then does not resume exactly); by default each batch is seeded from its position
    and from what your `worker_init_fn` set.
    """

    def __init__(self, loader: DataLoader, seed: int | None = None, *, reseed_workers: bool = True) -> None:
        dataset = loader.dataset
        name = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
        if not getattr(loader, "in_order", True):
            raise ValueError("ResumableDataLoader: in_order=False hands out batches in the order the workers finish "
                             "them, which a checkpoint cannot replay; use in_order=True (the default)")
        self.iterable = isinstance(dataset, IterableDataset)
        if self.iterable and not (callable(getattr(dataset, "state_dict", None))
                                  and callable(getattr(dataset, "load_state_dict", None))):
            raise TypeError(
                f"cannot resume a DataLoader over the IterableDataset {name}: it has no resumable position. Give it "
                "state_dict() returning its position and load_state_dict(state) continuing from there at the next "
                "iter() (torchdata's Stateful protocol; HF datasets.IterableDataset has it), or use a map-style "
                "dataset")
        self.original = loader
        self.seed = torch.initial_seed() if seed is None else int(seed)
        self.reseed_workers = reseed_workers
        self.epoch = 0
        self.position = 0  # units (batches, or samples with batch_size=None) handed out in the current epoch
        self.num_workers = loader.num_workers
        self.sampler = loader.sampler
        self._generators = [] if self.iterable else _generators(loader)
        self._epoch_start: dict | None = None  # {"rng": ..., "generators": [...]} of the epoch in progress
        self._worker_states: dict[int, Any] = {}  # iterable: worker -> its dataset state after its last batch
        self._next_worker = 0  # iterable: the worker the round-robin takes the next batch from
        self._ended: set[int] = set()  # iterable: workers whose iterator is exhausted in this epoch
        self._discard = 0  # iterable: batches to consume unseen at the start of the next iteration
        self._inner_generator = torch.Generator()
        self._workers_epoch: int | None = None  # iterable, persistent workers: the epoch they iterated last
        batched = loader.batch_size is not None or (not self.iterable and loader.batch_sampler is not None)
        kwargs = dict(num_workers=loader.num_workers, pin_memory=loader.pin_memory, timeout=loader.timeout,
                      multiprocessing_context=loader.multiprocessing_context,
                      persistent_workers=loader.persistent_workers, generator=self._inner_generator)
        if getattr(loader, "pin_memory_device", ""):
            kwargs["pin_memory_device"] = loader.pin_memory_device
        if loader.num_workers > 0:
            kwargs["prefetch_factor"] = loader.prefetch_factor
            user_init = loader.worker_init_fn
            kwargs["worker_init_fn"] = _WorkerInit(user_init if (reseed_workers and not self.iterable) else None)
            if user_init is not None and (self.iterable or not reseed_workers):
                kwargs["worker_init_fn"] = _Chained(kwargs["worker_init_fn"], user_init)
        if self.iterable:
            self._wrapped = _ResumableIterable(dataset, loader.batch_size or 1)
            self.loader = DataLoader(self._wrapped, batch_size=loader.batch_size, drop_last=loader.drop_last,
                                     collate_fn=_IterableCollate(loader.collate_fn, loader.batch_size, loader.drop_last,
                                                                 self._wrapped), **kwargs)
        else:
            units = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
            self._batches = _PositionedBatches(units, batched)
            self._wrapped = _PositionedDataset(dataset, self.seed, reseed_workers)
            inner = dict(batch_sampler=self._batches) if batched else dict(sampler=self._batches, batch_size=None)
            self.loader = DataLoader(self._wrapped, collate_fn=_MapCollate(loader.collate_fn, batched), **inner, **kwargs)

    @property
    def dataset(self):
        return self.original.dataset

    @property
    def batch_size(self):
        return self.original.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def _units_per_epoch(self) -> int | None:
        try:
            return len(self)
        except TypeError:  # an IterableDataset without __len__
            return None

    def set_epoch(self, epoch: int) -> None:
        """Move to `epoch` (position 0). Setting the current epoch keeps the position: resume-safe."""
        if epoch != self.epoch:
            self.epoch, self.position = int(epoch), 0
            self._epoch_start, self._worker_states, self._next_worker, self._ended = None, {}, 0, set()
            self._discard = 0

    def _drop_workers(self) -> None:
        """Shut down persistent workers: their copies of the dataset hold state that must be replaced."""
        it = getattr(self.loader, "_iterator", None)
        if it is not None:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self.loader._iterator = None

    def __iter__(self):
        epoch, skip = self.epoch, self.position
        # Also the sampler inside a user's batch sampler (BatchSampler(DistributedSampler(...))), as Accelerate does.
        batch_sampler = self.original.batch_sampler
        inner = getattr(batch_sampler, "sampler", None)
        seen = []
        for obj in (self.sampler, batch_sampler, inner):
            if obj is not None and hasattr(obj, "set_epoch") and not any(obj is o for o in seen):
                seen.append(obj)
                obj.set_epoch(epoch)
        self._inner_generator.manual_seed(derive_seed(self.seed, "loader"))  # same worker seeds in every epoch
        if self.iterable:
            yield from self._iter_iterable(epoch, skip)
        else:
            yield from self._iter_map(epoch, skip)

    def _start_epoch(self) -> None:
        """A fresh epoch: draw what a plain DataLoader's iterator draws, then record where the order starts."""
        if not (self.original.persistent_workers and self.epoch > 0):  # torch draws its base seed once then
            torch.empty((), dtype=torch.int64).random_(generator=self.original.generator)
        if not self.iterable:
            self._epoch_start = {"rng": _global_rng(), "generators": [g.get_state() for g in self._generators]}

    def _iter_map(self, epoch: int, skip: int):
        if skip == 0 or self._epoch_start is None:
            self._start_epoch()
            self._batches.replay = None
        else:
            for g, state in zip(self._generators, self._epoch_start["generators"]):
                g.set_state(state.clone())
            self._batches.replay = self._epoch_start["rng"]
        self._batches.epoch, self._batches.skip = epoch, skip
        self._batches.dummies = skip % self.num_workers if self.num_workers else 0
        for batch in self.loader:
            if isinstance(batch, _Skipped):
                continue
            self.position += 1
            yield batch
        self.epoch, self.position, self._epoch_start = epoch + 1, 0, None

    def _iter_iterable(self, epoch: int, skip: int):
        if self.original.persistent_workers:
            if skip or self._workers_epoch is None or epoch != self._workers_epoch + 1:
                self._drop_workers()  # their copies ran ahead of what was delivered, or count another epoch
            self._workers_epoch = epoch
        if not skip:
            self._start_epoch()
        self._wrapped.epoch = epoch
        self._wrapped.states = dict(self._worker_states) if skip else None
        self._wrapped.first_worker = self._next_worker if skip else 0
        self._wrapped.ended = set(self._ended) if skip else set()
        workers = max(self.num_workers, 1)
        for item in self.loader:
            if isinstance(item, _Skipped):
                continue
            if item.ended:
                self._ended.add(item.worker)
            if item.empty:
                continue
            self._worker_states[item.worker] = item.state
            self._next_worker = (item.worker + 1) % workers
            self.position += 1
            if self._discard:
                self._discard -= 1
                continue
            yield item.batch
        self.epoch, self.position, self._worker_states, self._next_worker, self._ended = epoch + 1, 0, {}, 0, set()

    def state_dict(self) -> dict:
        """This rank's data position.

        Restoring it alone resumes the order of the batches exactly. What a dataset draws from the
        global RNGs in the main process (`num_workers == 0`: `__getitem__`, or an iterable's `__iter__`)
        and, at an epoch boundary, what the sampler draws for the next epoch come from the global RNG
        streams, which are exact only if those are restored too: `Checkpointer.load_state` restores them
        (per rank) with the data position; restore them yourself if you load this state by hand.
        """
        state = {"kind": "iterable" if self.iterable else "map", "epoch": self.epoch, "position": self.position,
                 "seed": self.seed, "batches_per_epoch": self._units_per_epoch(), "num_workers": self.num_workers}
        if self.iterable:
            state["worker_states"] = {int(w): s for w, s in self._worker_states.items()} if self.position else {}
            state["next_worker"] = self._next_worker if self.position else 0
            state["ended_workers"] = sorted(self._ended) if self.position else []
        elif self.position and self._epoch_start is not None:
            state["rng"] = self._epoch_start["rng"]
            state["generators"] = self._epoch_start["generators"]
        else:
            state["generators"] = [g.get_state() for g in self._generators]
        return state

    def check_state_dict(self, state: dict) -> None:
        """Raise ValueError if `state` was saved by a loader that differs from this one."""
        if not isinstance(state, dict) or "position" not in state or "batches_per_epoch" not in state:
            raise ValueError("the checkpoint holds the state of another kind of data loader (one that saves its own, "
                             "such as torchdata's StatefulDataLoader); prepare the same kind of loader as when saving")
        kind = state.get("kind", "map")
        if kind != ("iterable" if self.iterable else "map"):
            raise ValueError(f"the checkpoint holds the position of a loader over a {kind} dataset, this loader's "
                             f"dataset is {'iterable' if self.iterable else 'map-style'}")
        if state["batches_per_epoch"] != self._units_per_epoch():
            raise ValueError(f"the data loader yields {self._units_per_epoch()} batches per epoch, the checkpoint was "
                             f"saved with {state['batches_per_epoch']}: dataset, batch size, drop_last or world size "
                             "changed")
        if self.iterable and state["worker_states"] and state["num_workers"] != self.num_workers:
            raise ValueError(f"the checkpoint was saved mid-epoch with num_workers={state['num_workers']}, this loader "
                             f"has {self.num_workers}: an iterable dataset is split across workers, so the saved "
                             "per-worker positions only fit the same number; resume with the same num_workers")
        if not self.iterable and len(state.get("generators", [])) != len(self._generators):
            raise ValueError(f"the loader's order draws from {len(self._generators)} torch generator(s) (the loader's "
                             f"or its sampler's), the checkpoint saved {len(state.get('generators', []))}")

    def load_state_dict(self, state: dict) -> None:
        self.check_state_dict(state)
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        self._drop_workers()  # workers hold copies of the old seed / dataset state
        if self.iterable:
            # Copies: tensors read from a checkpoint may live in a mapped file, which workers started with
            # spawn cannot receive (torch moves a tensor sent to a worker into shared memory).
            self._worker_states = {int(w): copy.deepcopy(s) for w, s in state["worker_states"].items()}
            self._next_worker = int(state["next_worker"])
            self._ended = {int(w) for w in state["ended_workers"]}
            if self.position and not self._worker_states:  # a position without the workers' states
                # (`skip_first_batches(loader, n)` at the start of an epoch): consume the n batches instead.
                self._discard, self.position = self.position, 0
            return
        self._wrapped.seed = self.seed
        if "rng" in state:
            self._epoch_start = {"rng": state["rng"], "generators": [g.clone() for g in state["generators"]]}
        else:
            self._epoch_start = None
            for g, saved in zip(self._generators, state["generators"]):
                g.set_state(saved.clone())


class _Chained:
    def __init__(self, first, second) -> None:
        self.first, self.second = first, second

    def __call__(self, worker_id: int) -> None:
        self.first(worker_id)
        self.second(worker_id)


def check_loader_state(loader, state) -> None:
    """Raise ValueError if `state` (one data loader's entry of a checkpoint) cannot be loaded into `loader`."""
    if isinstance(loader, ResumableDataLoader):
        loader.check_state_dict(state)
    elif isinstance(state, dict) and state.get("kind") in ("map", "iterable") and "position" in state:
        raise ValueError(f"the checkpoint holds the position of a ResumableDataLoader, this loader is a "
                         f"{type(loader).__name__} that saves its own; prepare the same kind of loader as when saving")


def is_stateful_loader(loader) -> bool:
    return callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None))


def wrap_loader(loader: DataLoader):
    """What `Checkpointer.prepare` registers for a DataLoader: a loader whose position it can save and restore.

    A loader with its own `state_dict`/`load_state_dict` (torchdata's StatefulDataLoader) is kept as it is.
    """
    if is_stateful_loader(loader):
        return loader
    return ResumableDataLoader(loader)
