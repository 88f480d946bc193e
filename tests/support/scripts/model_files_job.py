"""Ranks of the sharded save_model tests (tests/checkpoint/test_checkpoint_model_files_sharded.py), run by the
warm pool.

    model_files_job.py fsdp|deepspeed2|deepspeed3 OUT_DIR

Each rank writes OUT_DIR/ok{rank} when every check passed, or OUT_DIR/err{rank} with the traceback. Every
comparison is of raw bytes (support.checkpoint_jobs.state_bytes), against a reference that does not go
through save_model's gathering: the seeded plain model before wrapping, DTensor.full_tensor, or DeepSpeed's
own consolidation.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import load_file

sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # tests/, last

from harness.checkpoint import load_checkpoint_in_model, save_model  # noqa: E402
from support.checkpoint_jobs import run_rank_job, state_bytes  # noqa: E402


def _plain(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    # 7 and 3 rows do not divide by 2 or 3 ranks: uneven shards, and the last rank's may be empty
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))


def _written(out: str) -> dict:
    return load_file(os.path.join(out, "model.safetensors"))


def _expect_raise(exc, text, fn):
    try:
        fn()
    except exc as e:
        assert text in str(e), str(e)
        return
    raise AssertionError(f"{exc.__name__} not raised")


def _fsdp(rank, world, tmp):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    init = {k: v.clone() for k, v in _plain().state_dict().items()}
    model = fully_shard(_plain(), mesh=mesh)
    files = save_model(model, os.path.join(tmp, "init"))
    assert files == ([os.path.join(tmp, "init", "model.safetensors")] if rank == 0 else [])
    if rank == 0:
        assert state_bytes(_written(os.path.join(tmp, "init"))) == state_bytes(init)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for i in range(2):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(i * 10 + rank))
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    trained = {k: v.full_tensor() for k, v in model.state_dict().items()}  # collective
    assert state_bytes(trained) != state_bytes(init)
    save_model(model, os.path.join(tmp, "trained"), max_shard_size="100B")  # several shards and an index
    dist.barrier()
    if rank == 0:
        names = sorted(os.listdir(os.path.join(tmp, "trained")))
        assert "model.safetensors.index.json" in names and len(names) > 2, names
    # every rank loads the full files into a differently initialised sharded model: its shards are the trained ones
    other = fully_shard(_plain(seed=1), mesh=mesh)
    load_checkpoint_in_model(other, os.path.join(tmp, "trained"), strict=True)
    loaded = {k: v.full_tensor() for k, v in other.state_dict().items()}
    assert state_bytes(loaded) == state_bytes(trained)
    local = {k: v.to_local() for k, v in other.state_dict().items()}
    assert state_bytes(local) == state_bytes({k: v.to_local() for k, v in model.state_dict().items()})


def _deepspeed(rank, world, tmp, stage):
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    init = {k: v.clone() for k, v in _plain().state_dict().items()}
    model = _plain()
    base = torch.optim.AdamW(model.parameters(), lr=1e-2)
    config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
              "zero_allow_untested_optimizer": True, "steps_per_print": 2**31 - 1,
              "zero_optimization": {"stage": stage}}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=base, config=config, dist_init_required=False)
    save_model(engine, os.path.join(tmp, "init"))
    if rank == 0:  # the module's own keys (no "module." prefix) and, under ZeRO-3, not empty partitions
        assert state_bytes(_written(os.path.join(tmp, "init"))) == state_bytes(init)
    for i in range(2):
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(i * 10 + rank))
        engine.backward(engine(x).square().mean())
        engine.step()
    if stage == 3:
        reference = engine._zero3_consolidated_16bit_state_dict()  # DeepSpeed's own gathering (collective)
    else:
        reference = {k: v.clone() for k, v in engine.module.state_dict().items()}
    save_model(engine, os.path.join(tmp, "trained"))
    dist.barrier()
    if rank == 0:
        written = _written(os.path.join(tmp, "trained"))
        assert state_bytes(written) == state_bytes(dict(reference))
        assert state_bytes(written) != state_bytes(init)
    # loading into an engine would leave its optimizer's own copy of the weights stale: refused, by name
    _expect_raise(TypeError, "before deepspeed.initialize",
                  lambda: load_checkpoint_in_model(engine, os.path.join(tmp, "trained")))
    if stage == 3:
        _expect_raise(TypeError, "before deepspeed.initialize",
                      lambda: load_checkpoint_in_model(engine.module, os.path.join(tmp, "trained")))


def main() -> None:
    kind, out = sys.argv[1], sys.argv[2]

    def work(rank, world):
        if kind == "fsdp":
            _fsdp(rank, world, out)
        else:
            _deepspeed(rank, world, out, int(kind.removeprefix("deepspeed")))

    run_rank_job(work, out)


if __name__ == "__main__":
    main()
