"""Ranks of the strategy tests (tests/checkpoint/test_checkpoint_strategies.py), run by the warm pool.

    strategy_job.py fsdp|deepspeed OUT_DIR

Each rank writes OUT_DIR/ok{rank} when every check passed, or OUT_DIR/err{rank} with the traceback.
Every comparison is of raw bytes (support.checkpoint_jobs.state_bytes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

import torch
import torch.distributed as dist

sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # tests/, last

from harness.checkpoint import (Checkpointer, CorruptCheckpointError, IncompatibleCheckpointError,  # noqa: E402
                                ProjectConfiguration, files)
from harness.checkpoint.strategy import StrategyInfo  # noqa: E402
from support.checkpoint_jobs import run_rank_job, state_bytes  # noqa: E402


class _Raised:
    def __init__(self, exc, match):
        self.exc, self.match, self.value = exc, match, None

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb):
        if typ is None:
            raise AssertionError(f"{self.exc.__name__} not raised (expected one matching {self.match!r})")
        if not issubclass(typ, self.exc) or not re.search(self.match, str(value)):
            return False
        self.value = value
        return True


def _full(obj):
    """DTensors gathered into full tensors (collective: every rank walks the same structure)."""
    if hasattr(obj, "full_tensor"):
        return obj.full_tensor()
    if isinstance(obj, dict):
        return {k: _full(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_full(v) for v in obj)
    return obj


def _model_opt_bytes(model, opt):
    module = getattr(model, "module", model)
    return state_bytes({"model": _full(module.state_dict()), "optimizer": _full(opt.state_dict())})


def _steps(model, opt, n, rank, seed=0):
    for i in range(n):
        g = torch.Generator().manual_seed(seed * 100 + i * 10 + rank)
        x = torch.randn(4, 5, generator=g)
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()


def _raises(exc, match, fn):
    with _Raised(exc, match) as info:
        fn()
    return str(info.value)


def _manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def _check_native_listed(path, sub):
    """Every file under `sub/` is in the manifest with its size and checksum, and nothing else is there."""
    doc = _manifest(path)
    listed = {r["path"]: r for recs in doc["files"].values() for r in recs}
    on_disk = {os.path.relpath(os.path.join(d, n), path) for d, _, names in os.walk(os.path.join(path, sub))
               for n in names}
    assert on_disk and on_disk == {p for p in listed if p.startswith(sub + "/")}
    for rel in on_disk:
        size, digest = files.hash_file(os.path.join(path, rel))
        assert (listed[rel]["size"], listed[rel][files.HASH]) == (size, digest), rel
    return doc


def _flip_byte(path, offset=-1):
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 1]))


# -- FSDP2 -----------------------------------------------------------------------------------------


def _fsdp_worker(rank, world, tmp):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))

    def job(kind, **kw):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))  # uneven shards
        model = fully_shard(model, mesh=mesh) if kind == "fsdp" else torch.nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        ckpt = Checkpointer(ProjectConfiguration(os.path.join(tmp, "proj")), **kw)
        ckpt.prepare(model, opt)
        return ckpt, model, opt

    ckpt, model, opt = job("fsdp")
    full_ckpt = Checkpointer(ProjectConfiguration(os.path.join(tmp, "proj")), fsdp_state_dict="full")
    full_ckpt.prepare(model, opt)
    assert ckpt.strategy.info() == StrategyInfo("fsdp", "dcp", (world,))
    _steps(model, opt, 3, rank)
    sharded = ckpt.save_state(os.path.join(tmp, "sharded"))
    full = full_ckpt.save_state(os.path.join(tmp, "full"))
    ref = _model_opt_bytes(model, opt)

    if rank == 0:
        doc = _check_native_listed(sharded, "dcp")
        assert doc["backend"] == "fsdp" and doc["strategy"]["layout"] == "dcp" and doc["strategy"]["mesh"] == [world]
        assert {f"dcp/__{r}_0.distcp" for r in range(world)} | {"dcp/.metadata"} <= {
            r["path"] for recs in doc["files"].values() for r in recs}
        assert not any(n.startswith("model_") or n.startswith("optimizer_") for n in os.listdir(f"{sharded}/shared"))
        doc = _manifest(full)
        assert doc["backend"] == "fsdp" and doc["strategy"]["layout"] == "replicated"
        assert "dcp" not in os.listdir(full) and "model_0.safetensors" in os.listdir(f"{full}/shared")

    # sharded and full round trips, after the state moved on
    _steps(model, opt, 2, rank, seed=1)
    assert _model_opt_bytes(model, opt) != ref
    assert ckpt.load_state(sharded) == sharded
    assert _model_opt_bytes(model, opt) == ref
    _steps(model, opt, 2, rank, seed=2)
    full_ckpt.load_state(full)
    assert _model_opt_bytes(model, opt) == ref

    # a full state dict loads under DDP (the same bytes); a sharded one is refused, naming both strategies
    d_ckpt, d_model, d_opt = job("ddp")
    d_ckpt.load_state(full)
    assert _model_opt_bytes(d_model, d_opt) == ref
    msg = _raises(IncompatibleCheckpointError, "strategy 'fsdp'.*'replicated'", lambda: d_ckpt.load_state(sharded))
    assert "fsdp_state_dict='full'" in msg
    # DDP -> FSDP2: the full state dict is sharded on load
    _steps(d_model, d_opt, 2, rank, seed=3)
    ddp_ref = _model_opt_bytes(d_model, d_opt)
    from_ddp = d_ckpt.save_state(os.path.join(tmp, "ddp"))
    ckpt.load_state(from_ddp)
    assert _model_opt_bytes(model, opt) == ddp_ref

    # a damaged shard is caught before DCP reads it; a DCP folder without .metadata is refused
    if rank == 0:
        shutil.copytree(sharded, os.path.join(tmp, "bitflip"))
        _flip_byte(os.path.join(tmp, "bitflip", "dcp", f"__{world - 1}_0.distcp"), 100)
        shutil.copytree(sharded, os.path.join(tmp, "nometa"))
        os.remove(os.path.join(tmp, "nometa", "dcp", ".metadata"))
    dist.barrier()
    before = _model_opt_bytes(model, opt)
    _raises(CorruptCheckpointError, rf"__{world - 1}_0.distcp: checksum mismatch",
            lambda: ckpt.load_state(os.path.join(tmp, "bitflip")))
    _raises(CorruptCheckpointError, r"dcp/.metadata: file listed in the manifest is missing",
            lambda: ckpt.load_state(os.path.join(tmp, "nometa")))
    assert _model_opt_bytes(model, opt) == before  # nothing changed

    # what DCP itself refuses (an optimizer whose state the checkpoint lacks) is a checkpoint error naming the
    # folder and each rank's reason, not DCP's CheckpointException (a BaseException, past `except Exception`)
    torch.manual_seed(0)
    other = fully_shard(torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3)), mesh=mesh)
    sgd = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    _steps(other, sgd, 1, rank)
    s_ckpt = Checkpointer(ProjectConfiguration(os.path.join(tmp, "proj")))
    s_ckpt.prepare(other, sgd)
    msg = _raises(IncompatibleCheckpointError, rf"{sharded}: torch.distributed.checkpoint could not load dcp/",
                  lambda: s_ckpt.load_state(sharded))
    assert "rank 0:" in msg and "momentum_buffer" in msg, msg



# -- DeepSpeed ---------------------------------------------------------------------------------------


def _ds_worker(rank, world, tmp):
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    def job(stage):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3))
        base = torch.optim.AdamW(model.parameters(), lr=1e-2)
        config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
                  "zero_allow_untested_optimizer": True, "steps_per_print": 2**31 - 1,
                  "zero_optimization": {"stage": stage, "reduce_bucket_size": 2**16, "allgather_bucket_size": 2**16}}
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=base, config=config, dist_init_required=False)
        ckpt = Checkpointer(ProjectConfiguration(os.path.join(tmp, "proj"), automatic_checkpoint_naming=True))
        ckpt.prepare(engine, base)
        return ckpt, engine, base

    def steps(engine, n, seed):
        for i in range(n):
            x = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed * 100 + i * 10 + rank))
            engine.backward(engine(x).square().mean())
            engine.step()

    def snapshot(engine, base):
        return state_bytes({"module": engine.module.state_dict(), "base": base.state_dict(),
                            "steps": engine.global_steps})

    ckpt, engine, base = job(2)
    assert ckpt.strategy.info() == StrategyInfo("deepspeed", "deepspeed", (world,), 2, "state")
    steps(engine, 3, 0)
    path = ckpt.save_state()
    ref = snapshot(engine, base)
    if rank == 0:
        doc = _check_native_listed(path, "deepspeed")
        assert doc["backend"] == "deepspeed" and doc["strategy"]["zero_stage"] == 2
        with open(os.path.join(path, "deepspeed", "latest")) as f:
            assert f.read() == "state"  # committed with the rest, inside the checkpoint folder
        assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(world)} <= set(
            os.listdir(os.path.join(path, "deepspeed", "state")))
        assert not any(n.startswith(".staging") for n in os.listdir(os.path.dirname(path)))
    steps(engine, 2, 1)
    assert snapshot(engine, base) != ref
    assert ckpt.load_state() == path
    assert snapshot(engine, base) == ref

    if rank == 0:
        shutil.copytree(path, os.path.join(tmp, "bitflip"))
        _flip_byte(os.path.join(tmp, "bitflip", "deepspeed", "state", f"zero_pp_rank_{world - 1}_mp_rank_00_optim_states.pt"))
    dist.barrier()
    _raises(CorruptCheckpointError, rf"zero_pp_rank_{world - 1}_mp_rank_00_optim_states.pt: checksum mismatch",
            lambda: ckpt.load_state(os.path.join(tmp, "bitflip")))
    assert snapshot(engine, base) == ref

    # another ZeRO stage, or DDP, is refused with the saved and the current strategy named
    ckpt3, _, _ = job(3)
    _raises(IncompatibleCheckpointError, "ZeRO stage 2, loading with stage 3", lambda: ckpt3.load_state(path))
    torch.manual_seed(0)
    ddp = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3)))
    d_ckpt = Checkpointer()
    d_ckpt.prepare(ddp, torch.optim.AdamW(ddp.parameters()))
    _raises(IncompatibleCheckpointError, r"strategy 'deepspeed' \(DeepSpeed ZeRO stage 2.*'replicated'",
            lambda: d_ckpt.load_state(path))


def main() -> None:
    kind, out = sys.argv[1], sys.argv[2]
    run_rank_job(lambda rank, world: {"fsdp": _fsdp_worker, "deepspeed": _ds_worker}[kind](rank, world, out), out)


if __name__ == "__main__":
    main()
