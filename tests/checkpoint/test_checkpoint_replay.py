"""Plain IterableDatasets (no state_dict) are resumed by replay: each worker (or the main process) iterates
its copy again and drops the samples it had yielded, as torchdata's StatefulDataLoader does.

Accelerate's own pattern (accelerate/test_utils/scripts/test_distributed_data_loop.py,
_test_stateful_dataloader_save_state_resume), written anew with the Checkpointer in place of the
Accelerator: save_state inside the loop after batch 2, finish the epoch, load_state, and the loader
yields exactly the batches after batch 2 again; at 1, 2 and 3 ranks. Then workers (each its own count),
persistent workers, the main process's RNG streams, and the limit (a dataset that is not deterministic).
"""

from __future__ import annotations

import os
import traceback

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from harness.checkpoint import Checkpointer
from support.spawn import run_ranks


class DummyIterableDataset(IterableDataset):
    """Accelerate's test dataset: yields the values it holds; no state_dict."""

    def __init__(self, data):
        self.data = data

    def __iter__(self):
        yield from self.data


class ShardedCounter(IterableDataset):
    """Worker w yields its own range of `sizes[w]` ints (all of them in the main process); no state_dict."""

    def __init__(self, sizes):
        self.sizes = sizes

    def __iter__(self):
        info = get_worker_info()
        if info is None:
            yield from range(sum(self.sizes))
            return
        start = sum(self.sizes[:info.id])
        yield from range(start, start + self.sizes[info.id])


def identity(x):
    return x


def _accelerate_pattern(ckpt, make_loader, folder):
    """Iterate, save_state after batch 2 inside the loop, finish the epoch; load_state; iterate again."""
    loader = ckpt.prepare(make_loader())
    untrained, save_step = [], 2
    for step, batch in enumerate(loader):
        if step == save_step:
            ckpt.save_state(folder)
        if step > save_step:
            untrained.append(batch)
    ckpt.load_state(folder)
    resumed = list(loader)
    return untrained, resumed


@pytest.mark.parametrize("workers", [0, 2])
def test_accelerates_iterable_save_state_pattern(tmp_path, workers):
    torch.manual_seed(0)
    values = torch.as_tensor(range(32))[torch.randperm(32)]  # shuffled, as Accelerate's test does
    untrained, resumed = _accelerate_pattern(
        Checkpointer(), lambda: DataLoader(DummyIterableDataset(values), batch_size=4, num_workers=workers),
        tmp_path / "c")
    # With two workers each yields all 32 values (the dataset does not shard): 16 batches, interleaved.
    assert len(untrained) == (8 if workers == 0 else 16) - 3
    assert len(resumed) == len(untrained)
    for b1, b2 in zip(untrained, resumed):
        assert torch.equal(b1, b2)


def _interrupted(make, interrupt, folder):
    """torchdata's shape, through save_state/load_state into a fresh Checkpointer and loader."""
    ckpt = Checkpointer()
    it = iter(ckpt.prepare(make()))
    for _ in range(interrupt):
        next(it)
    ckpt.save_state(folder)
    expected = list(it)
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(make())
    ckpt2.load_state(folder)
    return expected, list(loader2)


@pytest.mark.parametrize("batch_size,interrupt,persistent", [
    (None, 1, False), (None, 40, True), (3, 1, True), (3, 5, False), (3, 13, False)])
def test_each_worker_replays_its_own_count(tmp_path, batch_size, interrupt, persistent):
    """Uneven shards (worker 1 ends first); the interrupt lands on every worker of the round-robin."""
    expected, got = _interrupted(
        lambda: DataLoader(ShardedCounter([20, 7, 15]), batch_size=batch_size, num_workers=3,
                           persistent_workers=persistent, collate_fn=identity), interrupt, tmp_path / "c")
    assert got == expected and len(expected) > 0


class DrawsButDeterministic(IterableDataset):
    """Deterministic samples, but every step draws from the global torch RNG (in the main process, the training
    loop's stream): a replay must not shift what the loop draws next."""

    def __iter__(self):
        for i in range(12):
            torch.rand(())
            yield i


def test_replay_in_the_main_process_leaves_the_global_rng_alone(tmp_path):
    def run(loader, n):
        out = []
        for batch in loader:
            out.append((batch.tolist(), torch.rand(()).item()))  # the training loop draws after every batch
            if len(out) == n:
                break
        return out

    torch.manual_seed(0)
    full = run(Checkpointer().prepare(DataLoader(DrawsButDeterministic(), batch_size=2)), 6)
    torch.manual_seed(0)
    ckpt = Checkpointer()
    first = run(ckpt.prepare(DataLoader(DrawsButDeterministic(), batch_size=2)), 2)
    ckpt.save_state(tmp_path / "c")
    torch.manual_seed(9)
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(DataLoader(DrawsButDeterministic(), batch_size=2))
    ckpt2.load_state(tmp_path / "c")  # restores the global RNG as it was after batch 2's draw
    assert first + run(loader2, 4) == full


def test_an_iterable_that_yields_less_on_replay_is_an_error_naming_it(tmp_path):
    class Shrinking(IterableDataset):
        passes = 0

        def __iter__(self):
            Shrinking.passes += 1
            return iter(range(10 if Shrinking.passes == 1 else 3))

    ckpt = Checkpointer()
    it = iter(ckpt.prepare(DataLoader(Shrinking(), batch_size=2)))
    next(it), next(it), next(it)
    ckpt.save_state(tmp_path / "c")
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(DataLoader(Shrinking(), batch_size=2))
    ckpt2.load_state(tmp_path / "c")
    with pytest.raises(ValueError, match=r"IterableDataset .*Shrinking by replay: its iterator ended after 3 "
                                         r"sample\(s\), but it had yielded 6 before the checkpoint.*state_dict\(\)"):
        list(loader2)


def test_a_dataset_that_gained_state_dict_is_refused(tmp_path):
    class WithState(DummyIterableDataset):
        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    ckpt = Checkpointer()
    it = iter(ckpt.prepare(DataLoader(DummyIterableDataset(range(8)), batch_size=2)))
    next(it)
    ckpt.save_state(tmp_path / "c")
    ckpt2 = Checkpointer()
    ckpt2.prepare(DataLoader(WithState(range(8)), batch_size=2))
    with pytest.raises(Exception, match=r"by replaying it \(no state_dict\), this loader's dataset by its state_dict"):
        ckpt2.load_state(tmp_path / "c")


# -- Accelerate's pattern at 2 and 3 ranks -----------------------------------------------------------

def _rank(rank, world, tmp):
    try:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
        torch.manual_seed(0)  # the same shuffle on every rank; each rank takes its shard, as a user would
        values = torch.as_tensor(range(32 * world))[torch.randperm(32 * world)][rank::world]
        untrained, resumed = _accelerate_pattern(
            Checkpointer(), lambda: DataLoader(DummyIterableDataset(values), batch_size=4), os.path.join(tmp, "c"))
        gathered = [None] * world
        dist.all_gather_object(gathered, (untrained, resumed))
        assert all(len(u) == 5 and len(r) == len(u) for u, r in gathered), [len(u) for u, _ in gathered]
        for r, (u, res) in enumerate(gathered):
            assert all(torch.equal(a, b) for a, b in zip(u, res)), f"rank {r}: resumed batches differ"
        assert len({tuple(u[0].tolist()) for u, _ in gathered}) == world  # the ranks held different data
        open(os.path.join(tmp, f"ok{rank}"), "w").close()
    except BaseException:
        with open(os.path.join(tmp, f"err{rank}"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_accelerates_iterable_save_state_pattern_across_ranks(tmp_path, world):
    run_ranks(_rank, world, lambda r: (r, world, str(tmp_path)), tmp_path, timeout_s=120)
    assert all((tmp_path / f"ok{r}").exists() for r in range(world))
