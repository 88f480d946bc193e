"""Data positions across 2 and 3 gloo ranks: each rank resumes its own loaders exactly, mid-epoch, with a
DistributedSampler and workers, and with a sampler drawing from that rank's own global RNG."""

from __future__ import annotations

import gc
import os
import traceback

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler
from support.spawn import run_ranks

pytestmark = pytest.mark.slow


def _loaders(rank, world):
    from tests.support.data_loaders import Augmented, Stream

    ds = Augmented()
    sharded = DataLoader(ds, batch_size=2, num_workers=2,
                         sampler=DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=3))
    weighted = DataLoader(ds, batch_size=2, sampler=WeightedRandomSampler(torch.ones(len(ds)), len(ds) // world))
    stream = DataLoader(Stream(), batch_size=2)
    return sharded, weighted, stream


def _take(loaders, n):
    from tests.support.data_loaders import record

    out, its = [], [None] * len(loaders)
    while len(out) < n:
        row = []
        for i, loader in enumerate(loaders):
            if its[i] is None:
                its[i] = iter(loader)
            try:
                row.append(next(its[i]))
            except StopIteration:
                its[i] = iter(loader)
                row.append(next(its[i]))
        out.append(b"".join(record(b) for b in row))
    return out


def _worker(rank, world, store, project, results):
    from harness.checkpoint import Checkpointer
    from tests.support.data_loaders import seed_all

    try:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
        seed_all(100 + rank)  # ranks draw differently
        full = _take(Checkpointer().prepare(*_loaders(rank, world)), 9)
        seed_all(100 + rank)
        ckpt = Checkpointer()
        first = _take(ckpt.prepare(*_loaders(rank, world)), 4)
        ckpt.save_state(os.path.join(project, "c"))
        seed_all(7)
        ckpt2 = Checkpointer()
        loaders = ckpt2.prepare(*_loaders(rank, world))
        ckpt2.load_state(os.path.join(project, "c"))
        # The rows were taken with iterators kept across the save; the resumed loaders continue each epoch.
        rest = _take(loaders, 5)
        assert first + rest == full, f"rank {rank}: resumed batches differ"
        with open(os.path.join(results, f"ok{rank}"), "wb") as f:
            f.write(full[0])
        # Loader iterators caught in reference cycles still own worker processes; collect them now, or
        # multiprocessing's exit handler SIGTERMs those workers and torch's SIGCHLD handler fails the exit.
        del loaders
        gc.collect()
    except BaseException:
        with open(os.path.join(results, f"err{rank}"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_resumes_its_data_position(tmp_path, world):
    run_ranks(_worker, world, lambda r: (r, world, str(tmp_path / "store"), str(tmp_path), str(tmp_path)), tmp_path,
              timeout_s=300)
    firsts = {(tmp_path / f"ok{r}").read_bytes() for r in range(world)}
    assert len(firsts) == world  # the ranks really read different data
