"""`ResumableDataLoader`: a DataLoader whose position can be saved and restored exactly.

Contract: a resumed loader yields exactly the batches the uninterrupted run of the same loader
yields from that point on, with the same bytes; what cannot be resumed that way is refused when the
loader is wrapped (`Checkpointer.prepare`), never discovered wrong after a resume.

Map-style datasets. Saved per rank: the epoch, the number of units (batches; samples with
`batch_size=None`) handed out in it, the workers' base seed and RNG states, and, mid-epoch, the RNG
state the sampler drew the epoch's order from. On resume the consumed units are skipped at the index
level (never loaded). What makes that exact:

- `sampler.set_epoch(epoch)` is called on every `iter()`, also on the first, resumed one;
- samplers that draw from the global RNGs (`RandomSampler` without a generator,
  `WeightedRandomSampler`, `SubsetRandomSampler`, custom ones using torch, `random` or numpy): the
  global torch/python/numpy states at the start of each epoch are recorded, and a mid-epoch resume
  replays the epoch's order from them. The sampler's first index is drawn from the live global
  streams, as torch does (an uninterrupted run yields what a plain DataLoader yields); a sampler
  that is not one of torch's (which draw only there) has its later pulls run on a private copy of
  the streams, so one drawing lazily resumes exactly too. A generator the sampler or the loader
  holds is recorded and replayed the same way;
- with `num_workers > 0` (default, `worker_rng="restore"`), workers are seeded as torch seeds them:
  the base seed is the one a plain DataLoader draws (from the loader's generator or the global torch
  RNG), each worker gets base_seed + worker_id, and the user's `worker_init_fn` runs as usual, so
  `torch.initial_seed()`, `random` and numpy inside a worker are what they are under a plain
  DataLoader. Each batch comes back with the RNG states (python, numpy, torch) its worker held
  after producing it; the state after each worker's last delivered batch is saved with the base
  seed, and on resume each worker gets its saved states back with the first batch it runs, while
  batch b still runs on worker b % num_workers. `worker_rng="per_batch"` instead seeds every batch
  from (seed, epoch, batch index, what `worker_init_fn` left): augmentation is then a function of
  the batch's position alone, at the price of replacing the seeds the user set;
- with `num_workers == 0`, a dataset's `__getitem__` draws from the main process's global RNGs:
  exact only when those are restored too, which `Checkpointer.load_state` does.

Iterable datasets with a resumable position: `state_dict()` / `load_state_dict(state)` (the
protocol of torchdata's `Stateful`, which HF `datasets.IterableDataset` implements), where
`load_state_dict` before the next `iter()` makes that iteration continue after the samples already
yielded, and a plain `iter()` starts the epoch over (calling `set_epoch(epoch)` first if the
dataset has it). With workers each worker iterates its own copy (shard it with `get_worker_info()`,
as torch requires anyway); the state of every worker's copy after its last delivered batch is saved,
loaded into that worker's copy on resume, and the batches continue round-robin from the worker that
was next. Workers are seeded as torch seeds them (as above), but their RNG states are not restored:
randomness inside an iterable dataset must be part of its state.

A plain IterableDataset (no `state_dict`) is resumed the way torchdata's StatefulDataLoader resumes
one (and Accelerate's `skip_first_batches`): by replaying it. Each worker (the main process with
`num_workers=0`) counts the samples its iterator yielded up to its last delivered batch; on resume
it iterates its copy again from the start of the epoch and drops that many samples (not collated)
before going on. That is exact only for a deterministic iterable (the same samples in the same
order on every pass), and it costs reading the replayed samples again. In the main process the
replay runs with the global RNGs set aside, so it does not shift the training loop's draws.

Refused when wrapped: `in_order=False` (batches are delivered in completion order, which no
checkpoint can replay).
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

from harness import private_apis

private_apis.require("torch.dataloader")  # DataLoader._iterator and its _shutdown_workers (_drop_workers)


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


WORKER_RNG_MODES = ("restore", "per_batch")


class _WorkerRNG:
    """A worker's python, numpy and torch RNG states. A plain object, so that pin_memory leaves it alone,
    and the torch state as bytes, so that sending it from a worker costs no shared-memory tensor."""

    __slots__ = ("torch", "python", "numpy")

    def __init__(self, torch_state: bytes, python_state: tuple, numpy_state: tuple) -> None:
        self.torch, self.python, self.numpy = torch_state, python_state, numpy_state

    @classmethod
    def capture(cls) -> _WorkerRNG:
        return cls(torch.get_rng_state().numpy().tobytes(), random.getstate(), np.random.get_state(legacy=True))

    def apply(self) -> None:
        torch.set_rng_state(torch.frombuffer(bytearray(self.torch), dtype=torch.uint8))
        random.setstate(self.python)
        np.random.set_state(self.numpy)

    def to_state(self) -> dict:
        return {"torch": torch.frombuffer(bytearray(self.torch), dtype=torch.uint8), "python": self.python,
                "numpy": self.numpy}

    @classmethod
    def from_state(cls, state: dict) -> _WorkerRNG:
        numpy_state = tuple(np.array(v) if isinstance(v, np.ndarray) else v for v in state["numpy"])  # own memory
        return cls(state["torch"].numpy().tobytes(), tuple(state["python"]), numpy_state)


class _Skipped:
    """A placeholder batch: it only moves the DataLoader's round-robin on to the next worker."""


_worker_wrapper = None  # inside a worker: this worker's copy of the wrapped dataset (set by _WorkerInit)


class _WorkerInit:
    """worker_init_fn of the inner loader: shows the user's dataset to their worker_init_fn and runs it; with
    `fingerprint` (per-batch seeding) records what it left in the worker's RNGs (the per-batch seeds derive from it)."""

    def __init__(self, user_fn, fingerprint: bool) -> None:
        self.user_fn = user_fn
        self.fingerprint = fingerprint

    def __call__(self, worker_id: int) -> None:
        global _worker_wrapper
        info = get_worker_info()
        _worker_wrapper = info.dataset
        # The user's code (worker_init_fn, the dataset's __iter__) expects its own dataset here.
        object.__setattr__(info, "dataset", _worker_wrapper.dataset)
        if self.user_fn is not None:
            self.user_fn(worker_id)
            if self.fingerprint:
                _worker_wrapper.worker_fingerprint = _rng_fingerprint()


def _this_wrapper(main):
    info = get_worker_info()
    return _worker_wrapper if info is not None else main


# -- map-style --------------------------------------------------------------------------------

class _PositionedBatches:
    """The inner loader's (batch) sampler: yields keys (epoch, unit index, dataset index) of the units
    from `skip` on, after `dummies` placeholders; pulls the user's sampler with its RNG draws replayed.
    The first unit each worker runs carries that worker's RNG states to restore (`restore`), as a
    fourth element of its (first) key."""

    def __init__(self, units, batched: bool) -> None:
        self.units = units  # the user's batch sampler, or the sampler when batch_size=None
        self.batched = batched
        self.epoch = 0
        self.skip = 0
        self.dummies = 0
        self.workers = 0
        self.restore: dict[int, _WorkerRNG] = {}
        self.replay: dict | None = None  # global RNG states to draw the epoch's order from (resume)

    def __iter__(self):
        epoch, skip, batched, restore, workers = self.epoch, self.skip, self.batched, self.restore, self.workers
        for _ in range(self.dummies):
            yield [] if batched else None
        for b, unit in enumerate(_isolated(self.units, self.replay, not _draws_only_first(self.units))):
            if b < skip:
                continue
            # Unit b runs on worker b % workers (the dummies see to it from `skip` on).
            rng = restore.get(b % workers) if restore and b < skip + workers else None
            if not batched:
                yield (epoch, b, unit) if rng is None else (epoch, b, unit, rng)
                continue
            keys = [(epoch, b, i) for i in unit]
            if rng is not None and keys:
                keys[0] = (*keys[0], rng)
            yield keys

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
    """Fetches by (epoch, unit, index[, RNG states]) keys; inside a worker, first restores the worker's RNG
    states the key carries, or (per-batch seeding) seeds them for the unit."""

    def __init__(self, dataset, seed: int, per_batch: bool) -> None:
        self.dataset = dataset
        self.seed = seed
        self.per_batch = per_batch
        self.worker_fingerprint = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _prepare_worker(self, key) -> None:
        if len(key) == 4:  # the worker's RNGs as they were after its last delivered batch (a resume)
            key[3].apply()
        elif self.per_batch and get_worker_info() is not None:
            parts = (self.seed, "worker", key[0], key[1])
            seed = derive_seed(*parts) if self.worker_fingerprint is None else derive_seed(*parts, self.worker_fingerprint)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)

    def __getitem__(self, key):  # batch_size=None: one unit is one sample
        if key is None:
            return _Skipped()
        self._prepare_worker(key)
        return self.dataset[key[2]]

    def __getitems__(self, keys):
        if not keys:
            return []
        self._prepare_worker(keys[0])
        indices = [k[2] for k in keys]
        getitems = getattr(self.dataset, "__getitems__", None)
        return getitems(indices) if getitems is not None else [self.dataset[i] for i in indices]


class _Produced(NamedTuple):
    """A batch from a worker with the worker's RNG states after producing it (worker_rng="restore")."""
    worker: int
    rng: _WorkerRNG
    batch: Any

    @property
    def __harness_batch__(self):
        """What the training loop gets: auto mode (harness.probe.auto) records this, not the envelope."""
        return self.batch


class _MapCollate:
    def __init__(self, collate_fn, batched: bool, envelope: bool) -> None:
        self.collate_fn = collate_fn
        self.batched = batched
        self.envelope = envelope

    def __call__(self, data):
        if (self.batched and isinstance(data, list) and not data) or isinstance(data, _Skipped):
            return _Skipped()
        batch = self.collate_fn(data)
        info = get_worker_info() if self.envelope else None
        if info is None:
            return batch
        return _Produced(info.id, _WorkerRNG.capture(), batch)  # after the collate_fn, which may draw too


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
    yields one placeholder batch first if the round-robin must start at a later worker.

    With `replay` (a dataset without state_dict) the state is the number of samples this copy's
    iterator yielded in the epoch; loading it replays the epoch from its start and drops that many."""

    def __init__(self, dataset, unit: int, replay: bool = False) -> None:
        self.dataset = dataset
        self.unit = unit  # samples per batch (1 with batch_size=None)
        self.replay = replay
        self.yielded = 0  # replay: samples this copy's iterator yielded in the current epoch
        self.epoch = 0  # of the next iteration: a persistent worker's copy counts on by itself
        self.states: dict | None = None
        self.ended: set = set()
        self.first_worker = 0

    def __len__(self) -> int:
        return len(self.dataset)  # TypeError if the dataset has none, as with a plain DataLoader

    def position_state(self):
        """This copy's position after the samples yielded so far (what a batch carries to the main process)."""
        return {"yielded": self.yielded} if self.replay else self.dataset.state_dict()

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
        state = states.get(wid) if states is not None else None
        if self.replay:
            yield from self._replayed(0 if state is None else int(state["yielded"]), info is None)
        else:
            if state is not None:
                self.dataset.load_state_dict(copy.deepcopy(state))
            yield from self.dataset
        yield _Exhausted()

    def _replayed(self, skip: int, main_process: bool):
        self.yielded = 0
        it = iter(self.dataset)
        if skip:
            # In the main process the replay's draws from the global RNGs must not shift the training
            # loop's (restored) streams.
            outer = _global_rng() if main_process else None
            try:
                for _ in range(skip):
                    if next(it, _END) is _END:
                        name = f"{type(self.dataset).__module__}.{type(self.dataset).__qualname__}"
                        raise ValueError(
                            f"resuming the IterableDataset {name} by replay: its iterator ended after {self.yielded} "
                            f"sample(s), but it had yielded {skip} before the checkpoint. A dataset without "
                            "state_dict() is resumed by replaying it, which needs the same samples on every pass; "
                            "make it deterministic or give it state_dict()/load_state_dict()")
                    self.yielded += 1
            finally:
                if outer is not None:
                    _set_global_rng(outer)
        for sample in it:
            self.yielded += 1
            yield sample


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
        state = _this_wrapper(self.main_wrapper).position_state()
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

    `worker_rng` (with `num_workers > 0`): "restore" (default) seeds the workers as a plain DataLoader does
    (base_seed + worker_id, then your `worker_init_fn`) and resumes exactly by restoring each worker's RNG
    states; "per_batch" seeds every batch from its position (and what your `worker_init_fn` set), replacing
    your seeds, so that what workers draw depends on the batch's position alone. `reseed_workers=True` is
    the older spelling of "per_batch" (`False` of "restore").
    """

    def __init__(self, loader: DataLoader, seed: int | None = None, *, worker_rng: str | None = None,
                 reseed_workers: bool | None = None) -> None:
        dataset = loader.dataset
        if not getattr(loader, "in_order", True):
            raise ValueError("ResumableDataLoader: in_order=False hands out batches in the order the workers finish "
                             "them, which a checkpoint cannot replay; use in_order=True (the default)")
        if worker_rng is None:
            worker_rng = "restore" if not reseed_workers else "per_batch"
        elif reseed_workers is not None and reseed_workers != (worker_rng == "per_batch"):
            raise ValueError(f"worker_rng={worker_rng!r} contradicts reseed_workers={reseed_workers!r}; "
                             "pass worker_rng only")
        if worker_rng not in WORKER_RNG_MODES:
            raise ValueError(f"worker_rng must be one of {WORKER_RNG_MODES}, got {worker_rng!r}")
        self.iterable = isinstance(dataset, IterableDataset)
        # Without state_dict/load_state_dict an iterable is resumed by replaying it (see the module docstring).
        self.replay = self.iterable and not (callable(getattr(dataset, "state_dict", None))
                                             and callable(getattr(dataset, "load_state_dict", None)))
        self.original = loader
        self.seed = torch.initial_seed() if seed is None else int(seed)
        self.worker_rng = worker_rng
        self.reseed_workers = worker_rng == "per_batch"
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
        # The state of the generator the workers' base seed was drawn from (a plain DataLoader's draw), so that
        # the workers of a resumed epoch get the same seeds; None until drawn.
        self._base_seed_state: torch.Tensor | None = None
        # map-style, worker_rng="restore": worker -> its RNG states after its last delivered batch
        self._worker_rng: dict[int, _WorkerRNG] = {}
        self._workers_epoch: int | None = None  # iterable, persistent workers: the epoch they iterated last
        batched = loader.batch_size is not None or (not self.iterable and loader.batch_sampler is not None)
        kwargs = dict(num_workers=loader.num_workers, pin_memory=loader.pin_memory, timeout=loader.timeout,
                      multiprocessing_context=loader.multiprocessing_context,
                      persistent_workers=loader.persistent_workers, generator=self._inner_generator)
        if getattr(loader, "pin_memory_device", ""):
            kwargs["pin_memory_device"] = loader.pin_memory_device
        per_batch = self.reseed_workers and not self.iterable
        if loader.num_workers > 0:
            kwargs["prefetch_factor"] = loader.prefetch_factor
            kwargs["worker_init_fn"] = _WorkerInit(loader.worker_init_fn, fingerprint=per_batch)
        if self.iterable:
            self._wrapped = _ResumableIterable(dataset, loader.batch_size or 1, replay=self.replay)
            self.loader = DataLoader(self._wrapped, batch_size=loader.batch_size, drop_last=loader.drop_last,
                                     collate_fn=_IterableCollate(loader.collate_fn, loader.batch_size, loader.drop_last,
                                                                 self._wrapped), **kwargs)
        else:
            units = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
            self._batches = _PositionedBatches(units, batched)
            self._batches.workers = loader.num_workers
            self._wrapped = _PositionedDataset(dataset, self.seed, per_batch)
            inner = dict(batch_sampler=self._batches) if batched else dict(sampler=self._batches, batch_size=None)
            envelope = loader.num_workers > 0 and not per_batch
            self.loader = DataLoader(self._wrapped, collate_fn=_MapCollate(loader.collate_fn, batched, envelope),
                                     **inner, **kwargs)

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
        if self.iterable:
            yield from self._iter_iterable(epoch, skip)
        else:
            yield from self._iter_map(epoch, skip)

    def _start_epoch(self) -> None:
        """A fresh epoch: draw what a plain DataLoader's iterator draws (its workers' base seed, once for
        persistent workers), then record where the order starts."""
        if not self.original.persistent_workers or self._base_seed_state is None:
            source = self.original.generator if self.original.generator is not None else torch.default_generator
            self._base_seed_state = source.get_state()
            torch.empty((), dtype=torch.int64).random_(generator=self.original.generator)
            self._worker_rng = {}  # new workers, seeded from the new base seed
        if not self.iterable:
            self._epoch_start = {"rng": _global_rng(), "generators": [g.get_state() for g in self._generators]}

    def _seed_workers(self) -> None:
        """Make the inner loader draw the base seed the plain DataLoader drew for this epoch's workers."""
        if self._base_seed_state is not None:
            self._inner_generator.set_state(self._base_seed_state)
        else:  # a checkpoint from before base seeds were saved
            self._inner_generator.manual_seed(derive_seed(self.seed, "loader"))

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
        # Every worker's RNGs as after its last delivered batch: a resume, a broken-off epoch whose workers
        # ran ahead, or persistent workers carrying their RNGs into the next epoch (a no-op when they did not).
        self._batches.restore = dict(self._worker_rng)
        self._seed_workers()
        for batch in self.loader:
            if isinstance(batch, _Skipped):
                continue
            if isinstance(batch, _Produced):
                self._worker_rng[batch.worker] = batch.rng
                batch = batch.batch
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
        self._seed_workers()
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
        if self.num_workers:
            if self._base_seed_state is not None:
                state["base_seed_state"] = self._base_seed_state
            if not self.iterable:
                state["worker_rng_mode"] = self.worker_rng
                if self._worker_rng and (self.position or self.original.persistent_workers):
                    state["worker_rng_states"] = {int(w): r.to_state() for w, r in self._worker_rng.items()}
        if self.iterable:
            state["replay"] = self.replay
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
        if self.iterable and state["worker_states"] and bool(state.get("replay", False)) != self.replay:
            how = {True: "replaying it (no state_dict)", False: "its state_dict()"}
            raise ValueError(f"the checkpoint resumes its iterable dataset by {how[bool(state.get('replay', False))]}, "
                             f"this loader's dataset by {how[self.replay]}: prepare the same dataset as when saving")
        if not self.iterable and state.get("worker_rng_states") and state["num_workers"] != self.num_workers:
            raise ValueError(f"the checkpoint holds the RNG states of {state['num_workers']} DataLoader workers, this "
                             f"loader has num_workers={self.num_workers}: what the workers draw resumes exactly only "
                             "with the same workers; resume with the same num_workers")
        if (not self.iterable and self.num_workers and state.get("num_workers")
                and (state["position"] or self.original.persistent_workers)):
            saved = state.get("worker_rng_mode", "per_batch")  # checkpoints older than the mode seeded per batch
            if saved != self.worker_rng:
                raise ValueError(f"the checkpoint was saved by a loader with worker_rng={saved!r}, this one has "
                                 f"worker_rng={self.worker_rng!r}: what the workers draw would not resume exactly; "
                                 f"wrap the DataLoader as ResumableDataLoader(loader, worker_rng={saved!r}) and "
                                 "prepare that")
        if not self.iterable and len(state.get("generators", [])) != len(self._generators):
            raise ValueError(f"the loader's order draws from {len(self._generators)} torch generator(s) (the loader's "
                             f"or its sampler's), the checkpoint saved {len(state.get('generators', []))}")

    def load_state_dict(self, state: dict) -> None:
        self.check_state_dict(state)
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        self._drop_workers()  # workers hold copies of the old seed / dataset state
        saved_base = state.get("base_seed_state")
        self._base_seed_state = saved_base.clone() if isinstance(saved_base, torch.Tensor) else None
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
        self._worker_rng = {int(w): _WorkerRNG.from_state(s) for w, s in (state.get("worker_rng_states") or {}).items()}
        if "rng" in state:
            self._epoch_start = {"rng": state["rng"], "generators": [g.clone() for g in state["generators"]]}
        else:
            self._epoch_start = None
            for g, saved in zip(self._generators, state["generators"]):
                g.set_state(saved.clone())


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
