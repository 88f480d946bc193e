"""Data loaders with workers: the user's worker_init_fn, torchdata's StatefulDataLoader passed through, and
scenarios of torchdata's own StatefulDataLoader tests (test_state_dict.py) run on ours with only the loader
swapped, the state going through Checkpointer.save_state/load_state. All slow: they start worker processes."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, Sampler, get_worker_info

from harness.checkpoint import Checkpointer, ResumableDataLoader
from tests.support.data_loaders import Augmented, map_loader, seed_all, stream_loader

pytestmark = pytest.mark.slow


def seed_worker(base, worker_id):
    # The user's code in a worker sees the user's dataset, as with a plain DataLoader.
    assert isinstance(get_worker_info().dataset, Augmented), type(get_worker_info().dataset)
    torch.manual_seed(base + worker_id)
    random.seed(base + worker_id)
    np.random.seed(base + worker_id)


def _worker_loader(base, persistent=False, shuffle=False):
    return DataLoader(Augmented(), batch_size=3, shuffle=shuffle, num_workers=2, persistent_workers=persistent,
                      worker_init_fn=functools.partial(seed_worker, base))


def _bytes(loader, epochs=1):
    return [b.numpy().tobytes() for _ in range(epochs) for b in loader]


def test_worker_init_fn_seeding_takes_effect():
    seed_all(0)
    one = _bytes(ResumableDataLoader(_worker_loader(1)))
    seed_all(0)
    again = _bytes(ResumableDataLoader(_worker_loader(1)))
    seed_all(0)
    two = _bytes(ResumableDataLoader(_worker_loader(2)))
    assert one == again
    assert all(a != b for a, b in zip(one, two))  # every batch's augmentation follows the user's seeds


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("stop", [3, 7])  # of 7 batches per epoch: mid-epoch (odd: the next batch's worker is 1)
def test_worker_init_fn_seeding_resumes_exactly(tmp_path, persistent, stop):
    seed_all(0)
    full = _bytes(ResumableDataLoader(_worker_loader(5, persistent, shuffle=True)), epochs=2)
    seed_all(0)
    ckpt = Checkpointer()
    loader = ckpt.prepare(_worker_loader(5, persistent, shuffle=True))
    first = []
    for b in loader:
        first.append(b.numpy().tobytes())
        if len(first) == stop:
            break
    ckpt.save_state(tmp_path / "c")
    seed_all(99)
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(_worker_loader(5, persistent, shuffle=True))
    ckpt2.load_state(tmp_path / "c")
    rest = _bytes(loader2) + _bytes(loader2)
    assert first + rest[: len(full) - stop] == full


def test_reseed_workers_false_keeps_torchs_worker_seeding():
    seed_all(0)
    plain = _bytes(_worker_loader(3))
    seed_all(0)
    ours = _bytes(ResumableDataLoader(_worker_loader(3), reseed_workers=False))
    assert plain == ours


def test_stateful_dataloader_is_passed_through_and_resumes_its_order(tmp_path):
    from torchdata.stateful_dataloader import StatefulDataLoader

    def make():
        return StatefulDataLoader(Augmented(), batch_size=4, shuffle=True, num_workers=2,
                                  generator=torch.Generator().manual_seed(1))

    full = [b[:, 0].tolist() for b in make()]
    ckpt = Checkpointer()
    loader = make()
    assert ckpt.prepare(loader) is loader
    it = iter(loader)
    first = [next(it)[:, 0].tolist() for _ in range(2)]
    ckpt.save_state(tmp_path / "c")
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(make())
    ckpt2.load_state(tmp_path / "c")
    # The sample order resumes; StatefulDataLoader re-seeds its workers, so the augmentation columns may not.
    assert first + [b[:, 0].tolist() for b in loader2] == full


def test_iterable_dataset_saved_mid_epoch_needs_the_same_num_workers(tmp_path):
    ckpt = Checkpointer()
    loader = ckpt.prepare(stream_loader(3, 2, False))
    next(iter(loader))
    ckpt.save_state(tmp_path / "c")
    ckpt2 = Checkpointer()
    ckpt2.prepare(stream_loader(3, 0, False))
    with pytest.raises(Exception, match="saved mid-epoch with num_workers=2, this loader has 0"):
        ckpt2.load_state(tmp_path / "c")


# -- scenarios of torchdata's test_state_dict.py, loader swapped ---------------------------------

def identity(x):
    return x


class ShardedGenerator(IterableDataset):
    """Worker w yields its own range of `sizes[w]` consecutive ints (all of them without workers), keeps its
    position in `i`, resumes at the next iter() after load_state_dict, and starts over after an exhausted pass."""

    def __init__(self, sizes):
        self.sizes = sizes
        self.i = 0
        self.resume = None

    def __iter__(self):
        info = get_worker_info()
        sizes = self.sizes if info is not None else [sum(self.sizes)]
        wid = info.id if info is not None else 0
        self.i, self.resume = (self.resume or 0), None
        start = sum(sizes[:wid])
        for v in range(start + self.i, start + sizes[wid]):
            self.i += 1
            yield v
        self.i = 0

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.resume = state["i"]


class RandomPick(Dataset):
    """Ignores the index and picks a sample with the torch RNG: randomness drawn inside the workers."""

    def __len__(self):
        return 100

    def __getitem__(self, i):
        return int(torch.randint(100, (1,)).item())


class CountingSampler(Sampler):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


def _interrupted(make, interrupt, tmp_path):
    """torchdata's shape: take `interrupt` batches, snapshot, the rest of that iterator is expected from a new
    loader restored from the snapshot."""
    seed_all(0)
    ckpt = Checkpointer()
    loader = ckpt.prepare(make())
    it = iter(loader)
    for _ in range(interrupt):
        next(it)
    ckpt.save_state(tmp_path / "c")
    expected = list(it)
    seed_all(7)
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(make())
    ckpt2.load_state(tmp_path / "c")
    return expected, list(loader2)


CASES = [(bs, interrupt, pw) for bs in (None, 7) for interrupt in (0, 1, 10) for pw in (False, True)]


@pytest.mark.parametrize("batch_size,interrupt,persistent", CASES)
def test_torchdata_generator_iterable(tmp_path, batch_size, interrupt, persistent):
    expected, got = _interrupted(lambda: DataLoader(ShardedGenerator([0, 100, 37]), batch_size=batch_size,
                                                    num_workers=3, persistent_workers=persistent,
                                                    collate_fn=identity), interrupt, tmp_path)
    assert got == expected


@pytest.mark.parametrize("batch_size,interrupt,persistent", CASES)
def test_torchdata_map_random_sampler_with_random_samples(tmp_path, batch_size, interrupt, persistent):
    def make():
        sampler = RandomSampler(RandomPick(), generator=torch.Generator().manual_seed(13))
        return DataLoader(RandomPick(), batch_size=batch_size, sampler=sampler, num_workers=3,
                          persistent_workers=persistent, collate_fn=identity)

    expected, got = _interrupted(make, interrupt, tmp_path)
    assert got == expected


@pytest.mark.parametrize("workers", [0, 3])
@pytest.mark.parametrize("batch_size,interrupt", [(None, 10), (7, 1)])
def test_torchdata_custom_sampler(tmp_path, workers, batch_size, interrupt):
    expected, got = _interrupted(lambda: DataLoader(RandomPick(), batch_size=batch_size, sampler=CountingSampler(100),
                                                    num_workers=workers, collate_fn=identity), interrupt, tmp_path)
    assert got == expected


@pytest.mark.parametrize("kind", ["map", "map_per_batch", "iterable"])
def test_persistent_workers_continue_a_broken_off_epoch_and_follow_set_epoch(kind):
    """In one process: break out mid-epoch and iterate again (the workers prefetched beyond the break), then
    jump with set_epoch: the same batches as a loader that never broke off. Persistent workers carry their
    RNGs across epochs, as torch's do, so epoch 4 after epochs 0 and 1 equals a fresh loader's epoch 4 only
    where what the workers draw does not depend on their past: per-batch seeding, or an iterable whose
    randomness is its own state."""
    def make():
        return stream_loader(3, 2, True) if kind == "iterable" else map_loader("sequential", 4, 2, True)

    def wrap(loader):
        return ResumableDataLoader(loader, worker_rng="per_batch" if kind == "map_per_batch" else "restore")

    def epochs(loader, which):
        out = []
        for e in which:
            loader.set_epoch(e)
            out += [b.numpy().tobytes() for b in loader]
        return out

    seed_all(0)
    want = epochs(wrap(make()), [0, 1, 4])
    seed_all(0)
    loader = wrap(make())
    got = []
    for b in loader:
        got.append(b.numpy().tobytes())
        if len(got) == 2:
            break
    got += [b.numpy().tobytes() for b in loader]  # the rest of epoch 0
    got += epochs(loader, [1, 4])
    assert got == want
    seed_all(0)
    fresh = wrap(make())
    fresh.set_epoch(4)
    at_4 = [b.numpy().tobytes() for b in fresh]
    if kind == "map":
        assert at_4 != want[-len(at_4):]  # the workers' RNGs went on from epoch 1
    else:
        assert at_4 == want[-len(at_4):]
