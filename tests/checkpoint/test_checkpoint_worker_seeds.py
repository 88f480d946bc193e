"""Worker seeding as PyTorch has it, on the loader `Checkpointer.prepare` returns.

PyTorch's own checks (test/test_dataloader.py: test_worker_seed, test_worker_seed_reproducibility,
test_worker_init_fn), written anew: inside a worker, `torch.initial_seed()` is base_seed + worker_id
with the base seed a plain DataLoader draws, a `worker_init_fn` that seeds torch, numpy or random
decides what the dataset sees, and numpy and random are seeded per worker without one. Then both at
once: the prepared loader's uninterrupted run is the plain DataLoader's run, bytes-equal, and a resume
through save_state/load_state continues it exactly (the workers' RNG states are restored).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from harness.checkpoint import Checkpointer, ResumableDataLoader


class SeedDataset(Dataset):
    """Each sample: the worker's torch.initial_seed(), its id and the seed torch says it set."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        info = get_worker_info()
        return torch.tensor([torch.initial_seed(), info.id, info.seed])


class Draws(Dataset):
    """Each sample draws from torch, numpy and random in the worker that loads it (augmentation)."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.tensor([i, get_worker_info().id, torch.randint(2**31, ()).item(), int(np.random.randint(2**31)),
                             random.getrandbits(31)])


def seed_torch(worker_id):
    torch.manual_seed(12345)


def seed_numpy_and_random(worker_id):
    np.random.seed(100 + worker_id)
    random.seed(200 + worker_id)


def seed_all_from_torch(worker_id):
    # The recipe of torch's reproducibility notes: numpy and random follow the seed torch gave the worker.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def _rows(loader, epochs=1):
    return [row for _ in range(epochs) for batch in loader for row in batch.tolist()]


def _prepared(loader):
    return Checkpointer().prepare(loader)


def test_each_worker_is_seeded_base_seed_plus_worker_id():
    def make():
        return DataLoader(SeedDataset(6), batch_size=1, num_workers=3)

    torch.manual_seed(3)
    plain = _rows(make())
    torch.manual_seed(3)
    ours = _rows(_prepared(make()))
    assert ours == plain  # the base seed is the one the plain DataLoader draws from the global RNG
    seeds = {wid: seed for seed, wid, _ in ours}
    assert sorted(seeds) == [0, 1, 2]
    assert all(seeds[w] == seeds[0] + w for w in seeds)
    assert all(seed == torch_said for seed, _, torch_said in ours)  # get_worker_info().seed


def test_worker_seeds_are_reproducible_with_a_generator():
    def make():
        return DataLoader(SeedDataset(6), batch_size=1, num_workers=3, generator=torch.Generator().manual_seed(42))

    torch.manual_seed(1)
    first = _rows(_prepared(make()))
    torch.manual_seed(2)  # the base seed comes from the loader's generator, not the global RNG
    again = _rows(_prepared(make()))
    assert first == again == _rows(make())


def test_worker_init_fn_seeding_torch_is_what_the_dataset_sees():
    loader = _prepared(DataLoader(SeedDataset(4), batch_size=2, num_workers=2, worker_init_fn=seed_torch))
    rows = _rows(loader, epochs=2)
    assert len(rows) == 8 and all(seed == 12345 for seed, _, _ in rows)


def test_worker_init_fn_seeding_numpy_and_random_sticks():
    class FirstDraws(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.tensor([get_worker_info().id, int(np.random.randint(2**31)), random.getrandbits(31)])

    torch.manual_seed(0)
    rows = _rows(_prepared(DataLoader(FirstDraws(), batch_size=1, num_workers=2, worker_init_fn=seed_numpy_and_random)))
    for wid, np_draw, py_draw in rows:  # each worker's first draws, as the user's seeds give them
        assert np_draw == np.random.RandomState(100 + wid).randint(2**31)
        assert py_draw == random.Random(200 + wid).getrandbits(31)


def test_numpy_and_random_without_a_worker_init_fn_are_seeded_per_worker_as_torch_does():
    def make():
        return DataLoader(Draws(), batch_size=1, num_workers=2)

    torch.manual_seed(5)
    plain = _rows(make())
    torch.manual_seed(5)
    ours = _rows(_prepared(make()))
    assert ours == plain
    first = {row[1]: row[2:] for row in reversed(ours)}  # each worker's first draws
    assert first[0] != first[1]  # workers do not share numpy's or random's state (pytorch#5059)


def test_per_batch_seeding_replaces_the_users_seeds():
    """The other mode, switched on explicitly: augmentation is a function of the batch's position only."""
    loader = ResumableDataLoader(DataLoader(SeedDataset(4), batch_size=2, num_workers=2, worker_init_fn=seed_torch),
                                 worker_rng="per_batch")
    assert not any(seed == 12345 for seed, _, _ in _rows(loader))
    with pytest.raises(ValueError, match="worker_rng must be one of"):
        ResumableDataLoader(DataLoader(SeedDataset(4)), worker_rng="off")


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("stop", [4, 7])  # of 5 batches per epoch: mid-epoch at worker 1; in the next epoch at worker 0
def test_the_plain_run_with_user_seeds_resumes_exactly(tmp_path, persistent, stop):
    def make():
        return DataLoader(Draws(), batch_size=2, shuffle=True, num_workers=3, persistent_workers=persistent,
                          worker_init_fn=seed_all_from_torch)

    torch.manual_seed(0)
    plain_loader = make()
    plain = [b.numpy().tobytes() for _ in range(2) for b in plain_loader]
    del plain_loader
    torch.manual_seed(0)
    ckpt = Checkpointer()
    loader = ckpt.prepare(make())
    first = []
    while len(first) < stop:
        for b in loader:
            first.append(b.numpy().tobytes())
            if len(first) == stop:
                break
    assert first == plain[:stop]  # uninterrupted: the plain DataLoader's batches
    ckpt.save_state(tmp_path / "c")
    torch.manual_seed(77), np.random.seed(77), random.seed(77)  # a restarted process, seeded anew
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(make())
    ckpt2.load_state(tmp_path / "c")
    rest = []
    while len(first) + len(rest) < len(plain):
        rest += [b.numpy().tobytes() for b in loader2]
    assert first + rest == plain


def test_workers_draw_what_they_draw_under_accelerates_prepare():
    """In one process the swap from the Accelerator changes nothing inside the workers either."""
    pytest.importorskip("accelerate")
    from accelerate import Accelerator

    def run(loader):
        torch.manual_seed(0), np.random.seed(0), random.seed(0)
        return [b.numpy().tobytes() for _ in range(2) for b in loader]

    def make():
        return DataLoader(Draws(), batch_size=3, shuffle=True, num_workers=2, worker_init_fn=seed_all_from_torch)

    assert run(_prepared(make())) == run(Accelerator(cpu=True).prepare(make()))


def test_a_checkpoint_with_worker_rngs_needs_the_same_workers_and_mode(tmp_path):
    def make(workers=2):
        return DataLoader(Draws(), batch_size=2, num_workers=workers)

    ckpt = Checkpointer()
    it = iter(ckpt.prepare(make()))
    next(it), next(it), next(it)
    ckpt.save_state(tmp_path / "c")
    other = Checkpointer()
    other.prepare(make(3))
    with pytest.raises(Exception, match="RNG states of 2 DataLoader workers, this loader has num_workers=3"):
        other.load_state(tmp_path / "c")
    per_batch = Checkpointer()
    per_batch.prepare(ResumableDataLoader(make(), worker_rng="per_batch"))
    with pytest.raises(Exception, match=r"worker_rng='restore', this one has worker_rng='per_batch'.*"
                                        r"ResumableDataLoader\(loader, worker_rng='restore'\)"):
        per_batch.load_state(tmp_path / "c")
    del it
