"""Per-rank and per-node folders, at 2 and 3 gloo ranks: refused before anything is written, or, with
`save_on_each_node=True`, one complete checkpoint per node (nodes simulated by LOCAL_RANK/LOCAL_WORLD_SIZE)."""

from __future__ import annotations

import json
import os
import traceback

import pytest
import torch.distributed as dist
from support.spawn import run_ranks

pytestmark = pytest.mark.slow


def _worker(rank, world, local_sizes, scenario, tmp):
    """One rank; `local_sizes` are the nodes' LOCAL_WORLD_SIZEs, ranks numbered node by node as torchrun does."""
    leaders = [sum(local_sizes[:n]) for n, size in enumerate(local_sizes) for _ in range(size)]
    os.environ.update(LOCAL_RANK=str(rank - leaders[rank]), LOCAL_WORLD_SIZE=str(leaders.count(leaders[rank])))
    try:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
        globals()[scenario](rank, world, leaders, tmp)
        open(os.path.join(tmp, f"ok{rank}"), "w").close()
    except BaseException:
        with open(os.path.join(tmp, f"err{rank}"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run(tmp_path, local_sizes, scenario):
    world = sum(local_sizes)
    run_ranks(_worker, world, lambda r: (r, world, local_sizes, scenario, str(tmp_path)), tmp_path)


def _job(project_dir, **config):
    from support.checkpoint_jobs import make_job

    return make_job(project_dir, **config)


def _expect_save_error(job, folder, *patterns):
    from harness.checkpoint import CheckpointSaveError

    with pytest.raises(CheckpointSaveError) as err:
        job[0].save_state(folder)
    for p in patterns:
        assert p in str(err.value), (p, str(err.value))


# -- scenarios, run on every rank ------------------------------------------------------------------

def each_rank_its_own_folder(rank, world, leaders, tmp):
    """The bug of issue 10: refused on every rank, naming every rank and folder, and nothing is written."""
    from support.checkpoint_jobs import train

    job = _job(os.path.join(tmp, "shared_project"))
    train(job, 2)
    folders = [os.path.join(tmp, f"disk{r}", "ckpt") for r in range(world)]
    _expect_save_error(job, folders[rank], "the ranks name different folders", "nothing was written",
                       *(f"rank {r}: {folders[r]}" for r in range(world)), "save_on_each_node=True",
                       "If your test harness gives each rank its own temporary folder",
                       "share one folder across the ranks instead: create it on rank 0 and send its path")
    assert not any(os.path.exists(os.path.join(tmp, f"disk{r}")) for r in range(world))
    own = _job(os.path.join(tmp, f"project{rank}"))  # automatic names under per-rank project folders: the same
    with pytest.raises(Exception, match="the ranks name different folders"):
        own[0].save_state()
    assert job[0].save_state(os.path.join(tmp, "good")) == os.path.join(tmp, "good")  # collectives still in step
    dist.barrier()
    assert sorted(os.listdir(os.path.join(tmp, "good"))) == ["manifest.json", *(f"rank{r}" for r in range(world)), "shared"]


def per_rank_temporary_folders_on_one_node(rank, world, leaders, tmp):
    """A test harness giving every rank its own temporary folder: save_on_each_node=True does not make that
    work (one copy per node, not per rank), and the message says what does."""
    import tempfile

    own = tempfile.mkdtemp(dir=tmp)
    job = _job(os.path.join(tmp, "p"), save_on_each_node=True)
    _expect_save_error(job, os.path.join(own, "ckpt"), f"the ranks of one node (ranks {list(range(world))}) name "
                       "different folders", "nothing was written", "one copy per node, not per rank",
                       "if your test harness gives each rank its own temporary folder, share one folder across the "
                       "ranks of each node")
    dist.barrier()
    assert not os.listdir(own)


def a_rank_that_cannot_see_the_folder(rank, world, leaders, tmp):
    """The same path on every rank but node-local disks (simulated): found before any file is written."""
    from harness.checkpoint import storage

    job = _job(os.path.join(tmp, "p"))
    if rank == world - 1:
        storage.read_token = lambda staging: None  # as if rank 0's staging folder were on another machine
    folder = os.path.join(tmp, "ckpt")
    _expect_save_error(job, folder, f"rank {world - 1}: does not see the staging folder", "nothing was written")
    dist.barrier()
    assert not os.path.exists(folder) and os.listdir(tmp).count(".staging-ckpt") == 0


def one_checkpoint_per_node(rank, world, leaders, tmp):
    import random

    import numpy as np
    import torch

    from harness.checkpoint import IncompatibleCheckpointError
    from support.checkpoint_jobs import full_state, next_draws, train

    project = os.path.join(tmp, f"node{leaders[rank]}")  # each node's local disk
    job = _job(project, save_on_each_node=True, total_limit=1)
    train(job, 2)
    job[0].save_state()
    train(job, 3)  # the same on every rank (replicated state, as under DDP) ...
    random.seed(rank), torch.manual_seed(rank), np.random.seed(rank)  # ... but per-rank RNG differs
    path = job[0].save_state()
    saved, draws = full_state(job), next_draws()
    dist.barrier()
    members = [r for r in range(world) if leaders[r] == leaders[rank]]
    assert sorted(os.listdir(os.path.join(project, "checkpoints"))) == ["checkpoint_1"]  # total_limit, per node
    assert sorted(os.listdir(path)) == ["manifest.json", *(f"rank{r}" for r in members), "shared"]
    with open(os.path.join(path, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["ranks"] == members and manifest["world_size"] == world
    assert sorted(manifest["files"]) == sorted(["shared", *(f"rank{r}" for r in members)])

    torch.manual_seed(99), np.random.seed(99)
    again = _job(project, save_on_each_node=True, total_limit=1)
    assert again[0].load_state() == path
    assert full_state(again) == saved
    assert next_draws() == draws

    first_node = os.path.join(tmp, "node0", "checkpoints", "checkpoint_1")  # not every rank's node
    with pytest.raises(IncompatibleCheckpointError, match="must load the folder of its own node"):
        again[0].load_state(first_node)


def nodes_that_share_the_folder(rank, world, leaders, tmp):
    """save_on_each_node=True on a shared filesystem: both nodes' writers would write one folder."""
    job = _job(os.path.join(tmp, "p"), save_on_each_node=True)
    folder = os.path.join(tmp, "ckpt")
    _expect_save_error(job, folder, "created by another node's writer", "nothing was written")
    dist.barrier()
    assert not os.path.exists(folder) and not os.path.exists(os.path.join(tmp, ".staging-ckpt"))


# -- tests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("local_sizes", [(2,), (1, 2)], ids=["2-ranks", "3-ranks"])
def test_ranks_naming_different_folders_are_refused_before_writing(tmp_path, local_sizes):
    _run(tmp_path, list(local_sizes), "each_rank_its_own_folder")


@pytest.mark.parametrize("local_sizes", [(2,), (3,)], ids=["2-ranks", "3-ranks"])
def test_per_rank_temporary_folders_on_one_node_are_refused_saying_what_to_do(tmp_path, local_sizes):
    _run(tmp_path, list(local_sizes), "per_rank_temporary_folders_on_one_node")


@pytest.mark.parametrize("local_sizes", [(2,), (3,)], ids=["2-ranks", "3-ranks"])
def test_a_rank_that_does_not_see_the_folder_is_found_before_writing(tmp_path, local_sizes):
    _run(tmp_path, list(local_sizes), "a_rank_that_cannot_see_the_folder")


@pytest.mark.parametrize("local_sizes", [(1, 1), (2, 1)], ids=["2-nodes-of-1", "nodes-of-2-and-1"])
def test_save_on_each_node_writes_and_loads_one_checkpoint_per_node(tmp_path, local_sizes):
    _run(tmp_path, list(local_sizes), "one_checkpoint_per_node")


def test_save_on_each_node_refuses_a_folder_the_nodes_share(tmp_path):
    _run(tmp_path, [1, 1], "nodes_that_share_the_folder")
