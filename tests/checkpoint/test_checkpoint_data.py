"""ResumableDataLoader: a mid-epoch resume yields exactly the remaining batches, augmentation included."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, WeightedRandomSampler

from harness.checkpoint import Checkpointer, ProjectConfiguration, ResumableDataLoader


class Augmented(Dataset):
    """Every sample draws augmentation noise from python, numpy and torch: the RNG a worker holds."""

    def __len__(self):
        return 24

    def __getitem__(self, i):
        return torch.tensor([float(i), random.random(), float(np.random.rand()), torch.rand(()).item()])


def _loader(workers, sampler=None, shuffle=True, generator=None):
    return DataLoader(Augmented(), batch_size=4, shuffle=shuffle if sampler is None else None, sampler=sampler,
                      num_workers=workers, generator=generator)


def _take(loader, epochs_batches):
    """Iterate like a training loop: `epochs_batches` batches in total, crossing epochs."""
    out = []
    while len(out) < epochs_batches:
        for batch in loader:
            out.append(batch.numpy().tobytes())
            if len(out) >= epochs_batches:
                break
    return out


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # the matrix has more
@pytest.mark.parametrize("stop", [2, 6, 9])  # mid-epoch, epoch boundary (6 batches/epoch), next epoch
def test_mid_epoch_resume_is_exact(tmp_path, workers, stop):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    full = _take(ResumableDataLoader(_loader(workers)), 15)

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    ckpt = Checkpointer(ProjectConfiguration(tmp_path, automatic_checkpoint_naming=True))
    loader = ckpt.prepare(_loader(workers))
    assert _take(loader, stop) == full[:stop]
    ckpt.save_state()

    torch.manual_seed(5), np.random.seed(5), random.seed(5)  # a restarted process, seeded anew
    ckpt2 = Checkpointer(ProjectConfiguration(tmp_path, automatic_checkpoint_naming=True))
    loader2 = ckpt2.prepare(_loader(workers))
    ckpt2.load_state()
    assert _take(loader2, 15 - stop) == full[stop:]


def test_creating_an_iterator_draws_nothing():
    """Draws happen when the first batch is taken, where a plain DataLoader's for loop makes them."""
    loader = ResumableDataLoader(_loader(0, shuffle=True))
    torch.manual_seed(3)
    expected = torch.get_rng_state()
    iter(loader).__next__  # creating the iterator
    it = iter(loader)
    del it
    assert torch.equal(torch.get_rng_state(), expected)


def test_distributed_sampler_epoch_is_set_on_every_iter(tmp_path):
    sampler = DistributedSampler(Augmented(), num_replicas=2, rank=1, shuffle=True, seed=4)
    loader = ResumableDataLoader(_loader(0, sampler=sampler, shuffle=None))
    loader.set_epoch(3)
    list(zip(range(1), loader))
    assert sampler.epoch == 3


def test_user_generator_state_is_saved_per_epoch(tmp_path):
    def make():
        return _loader(0, generator=torch.Generator().manual_seed(11))

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    full = _take(ResumableDataLoader(make()), 14)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    ckpt = Checkpointer()
    loader = ckpt.prepare(make())
    _take(loader, 8)
    ckpt.save_state(tmp_path / "c")
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(make())
    ckpt2.load_state(tmp_path / "c")
    assert _take(loader2, 6) == full[8:]


def test_changed_loader_is_refused(tmp_path):
    ckpt = Checkpointer()
    ckpt.prepare(_loader(0))
    ckpt.save_state(tmp_path / "c")
    ckpt2 = Checkpointer()
    ckpt2.prepare(DataLoader(Augmented(), batch_size=3))
    with pytest.raises(Exception, match="yields 8 batches per epoch, the checkpoint was saved with 6"):
        ckpt2.load_state(tmp_path / "c")


def test_iterable_dataset_without_a_position_is_resumed_by_replay(tmp_path):
    """No state_dict: prepare accepts it, and a resume replays the epoch and drops what was yielded
    (tests/checkpoint/test_checkpoint_replay.py has workers, ranks and the limits)."""
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(10))

    ckpt = Checkpointer()
    loader = ckpt.prepare(DataLoader(Stream(), batch_size=3))
    it = iter(loader)
    first = [next(it).tolist(), next(it).tolist()]
    ckpt.save_state(tmp_path / "c")
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(DataLoader(Stream(), batch_size=3))
    ckpt2.load_state(tmp_path / "c")
    assert first + [b.tolist() for b in loader2] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_in_order_false_is_refused_at_prepare():
    with pytest.raises(ValueError, match="in_order=False .* cannot replay; use in_order=True"):
        Checkpointer().prepare(DataLoader(Augmented(), batch_size=4, num_workers=2, in_order=False))


@pytest.mark.parametrize("kind", ["random", "weighted", "random_generator"])
def test_uninterrupted_run_is_a_plain_dataloaders_run(kind):
    """With num_workers=0, wrapping changes nothing: same batches, same global RNG draws (for the script's
    other draws), the same state of a generator the user gave."""
    def make():
        if kind == "weighted":
            return DataLoader(Augmented(), batch_size=4, sampler=WeightedRandomSampler(torch.ones(24), 24))
        gen = torch.Generator().manual_seed(3) if kind == "random_generator" else None
        return DataLoader(Augmented(), batch_size=4, shuffle=True, generator=gen)

    def run(loader):
        torch.manual_seed(0), np.random.seed(0), random.seed(0)
        out = [b.numpy().tobytes() for _ in range(2) for b in loader]
        return out, torch.get_rng_state(), random.random(), np.random.rand()

    plain, wrapped = run(make()), run(ResumableDataLoader(make()))
    assert plain[0] == wrapped[0]
    assert torch.equal(plain[1], wrapped[1]) and plain[2:] == wrapped[2:]


class _FakeStatefulLoader(DataLoader):
    """A loader that saves its own position (the shape of torchdata's StatefulDataLoader)."""

    def state_dict(self):
        return {"seen": 3}

    def load_state_dict(self, state):
        self.loaded = state


def test_a_loader_with_its_own_state_is_kept_and_saved_through_it(tmp_path):
    ckpt = Checkpointer()
    loader = _FakeStatefulLoader(Augmented(), batch_size=4)
    assert ckpt.prepare(loader) is loader
    ckpt.save_state(tmp_path / "c")
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(_FakeStatefulLoader(Augmented(), batch_size=4))
    ckpt2.load_state(tmp_path / "c")
    assert loader2.loaded == {"seen": 3}
    ckpt3 = Checkpointer()
    ckpt3.prepare(DataLoader(Augmented(), batch_size=4))
    with pytest.raises(Exception, match="another kind of data loader"):
        ckpt3.load_state(tmp_path / "c")


def test_skip_first_batches_moves_an_iterable_loader_at_the_start_of_its_epoch():
    from tests.support.data_loaders import stream_loader

    full = [b.numpy().tobytes() for b in ResumableDataLoader(stream_loader(3, 0, False))]
    ckpt = Checkpointer()
    loader = ckpt.prepare(stream_loader(3, 0, False))
    assert ckpt.skip_first_batches(loader, 3) is loader
    assert [b.numpy().tobytes() for b in loader] == full[3:]
