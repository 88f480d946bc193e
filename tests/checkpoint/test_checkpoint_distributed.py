"""The checkpointer across 2 gloo ranks: per-rank state stays per rank, saves and loads are collective."""

from __future__ import annotations

import os
import random
import traceback

import numpy as np
import torch
import torch.distributed as dist

from support.checkpoint_jobs import next_draws, state_bytes
from support.spawn import run_ranks

WORLD = 2


def _job(project_dir, rank):
    from harness.checkpoint import Checkpointer, ProjectConfiguration

    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Dropout(0.3),
                                                                          torch.nn.Linear(6, 1)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.utils.data.TensorDataset(torch.arange(64, dtype=torch.float32).reshape(16, 4))
    sampler = torch.utils.data.DistributedSampler(data, num_replicas=WORLD, rank=rank, shuffle=True, seed=3)
    loader = torch.utils.data.DataLoader(data, batch_size=2, sampler=sampler)
    ckpt = Checkpointer(ProjectConfiguration(project_dir, automatic_checkpoint_naming=True, total_limit=2))
    model, opt, loader = ckpt.prepare(model, opt, loader)
    return ckpt, model, opt, loader


def _train(ckpt, model, opt, loader, steps):
    out = []
    while ckpt.step < steps:
        for (x,) in loader:
            loss = (model(x + torch.randn_like(x) * 0.1) ** 2).mean() + float(np.random.rand())
            loss.backward()
            opt.step()
            opt.zero_grad()
            ckpt.step += 1
            out.append(loss.item().hex())
            if ckpt.step >= steps:
                break
    return out


def _worker(rank, store_path, project_dir, result_dir):
    try:
        dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD)
        torch.manual_seed(100 + rank), np.random.seed(100 + rank), random.seed(100 + rank)  # ranks differ
        full = _train(*_job(os.path.join(project_dir, "full"), rank), 14)

        torch.manual_seed(100 + rank), np.random.seed(100 + rank), random.seed(100 + rank)
        job = _job(os.path.join(project_dir, "resumed"), rank)
        _train(*job, 3)
        job[0].save_state()
        _train(*job, 6)
        path = job[0].save_state(blocking=False)
        saved = state_bytes({"m": job[1].module.state_dict(), "o": job[2].state_dict(), "d": job[3].state_dict()})
        draws = next_draws()
        job[0].wait()

        torch.manual_seed(7), np.random.seed(7), random.seed(7)  # nothing of this may survive the load
        again = _job(os.path.join(project_dir, "resumed"), rank)
        assert again[0].load_state() == path
        assert state_bytes({"m": again[1].module.state_dict(), "o": again[2].state_dict(),
                            "d": again[3].state_dict()}) == saved
        assert next_draws() == draws
        again[0].load_state()
        assert _train(*again, 14) == full[6:]
        with open(os.path.join(result_dir, f"ok{rank}"), "w") as f:
            f.write(repr(draws))
    except BaseException:
        with open(os.path.join(result_dir, f"err{rank}"), "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_ranks_save_and_resume_bit_exact(tmp_path):
    run_ranks(_worker, WORLD, lambda r: (r, str(tmp_path / "store"), str(tmp_path / "proj"), str(tmp_path)),
              tmp_path, timeout_s=180)
    # per-rank RNG really is per rank: the two ranks' next draws differ
    assert (tmp_path / "ok0").read_text() != (tmp_path / "ok1").read_text()
    ckpts = sorted(os.listdir(tmp_path / "proj" / "resumed" / "checkpoints"))
    assert ckpts == ["checkpoint_0", "checkpoint_1"]
    files = sorted(os.listdir(tmp_path / "proj" / "resumed" / "checkpoints" / "checkpoint_1"))
    assert files == ["manifest.json", "rank0", "rank1", "shared"]


def test_world_size_one_has_no_collectives(tmp_path):
    from support.checkpoint_jobs import make_job, train

    job = make_job(tmp_path)
    train(job, 2)
    assert not dist.is_initialized()
    assert job[0].save_state().endswith("checkpoint_0")
