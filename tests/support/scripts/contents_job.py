"""Ranks that write the multi-rank checkpoints of tests/harness/contents (run by the warm pool).

    contents_job.py OUT_DIR

Writes, from the same small model after the same steps on every rank:
    OUT_DIR/native_fsdp        a native checkpoint saved under FSDP2 (sharded: DCP inside, dcp/)
    OUT_DIR/native_deepspeed   a native checkpoint saved under DeepSpeed ZeRO-2 (deepspeed/state/)
    OUT_DIR/raw_dcp            torch.distributed.checkpoint.save of the FSDP2 state, nothing else
    OUT_DIR/raw_deepspeed      engine.save_checkpoint(dir, tag="step3") (DeepSpeed's own folder, `latest`)
Each rank writes OUT_DIR/ok{rank} when done, or OUT_DIR/err{rank} with the traceback.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # tests/, last

from harness.checkpoint import Checkpointer, ProjectConfiguration  # noqa: E402
from support.checkpoint_jobs import run_rank_job  # noqa: E402


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))  # uneven shards


def _steps(step, rank, n=3):
    for i in range(n):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(i * 10 + rank))
        step(x)


def _fsdp(rank, world, out):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = fully_shard(_model(), mesh=init_device_mesh("cpu", (world,)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def step(x):
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()

    _steps(step, rank)
    ckpt = Checkpointer(ProjectConfiguration(os.path.join(out, "proj_fsdp")))
    ckpt.prepare(model, opt)
    ckpt.step = 3
    ckpt.save_state(os.path.join(out, "native_fsdp"))
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd, "extra": {"step": 3}}, checkpoint_id=os.path.join(out, "raw_dcp"))


def _deepspeed(rank, world, out):
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    model = _model()
    base = torch.optim.AdamW(model.parameters(), lr=1e-2)
    config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
              "zero_allow_untested_optimizer": True, "steps_per_print": 2**31 - 1,
              "zero_optimization": {"stage": 2, "reduce_bucket_size": 2**16, "allgather_bucket_size": 2**16}}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=base, config=config, dist_init_required=False)

    def step(x):
        engine.backward(engine(x).square().mean())
        engine.step()

    _steps(step, rank)
    ckpt = Checkpointer(ProjectConfiguration(os.path.join(out, "proj_ds")))
    ckpt.prepare(engine, base)
    ckpt.step = 3
    ckpt.save_state(os.path.join(out, "native_deepspeed"))
    engine.save_checkpoint(os.path.join(out, "raw_deepspeed"), tag="step3", client_state={"epoch": 1})


def main() -> None:
    out = sys.argv[1]

    def work(rank, world):
        _fsdp(rank, world, out)
        _deepspeed(rank, world, out)
        dist.barrier()

    run_rank_job(work, out)


if __name__ == "__main__":
    main()
