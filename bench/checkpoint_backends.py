"""Checkpoint save/load under FSDP2 (DCP) and DeepSpeed ZeRO-2/3: the harness's Checkpointer against the
backend's own bare save/load with the same durability, at world size 2 (gloo, CPU).

    python bench/checkpoint_backends.py [--reps 5] [--width 2048] [--layers 4] [--dir /tmp/...]

Bare saves: `dcp.save(get_state_dict(...), FileSystemWriter(sync_files=True))`, and
`engine.save_checkpoint(dir, tag, save_latest=False)` followed by an fsync of every file it wrote and
of its folders. Ours adds the per-rank state (RNG, step), checksums of every file, the manifest and the
atomic commit (staging folder + rename). Loads: ours verifies checksums first. Reps are interleaved
(ours, bare, ours, bare, ...) in one run; rank 0 prints medians (max over ranks per rep) and ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _model(width: int, layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    mods = []
    for _ in range(layers):
        mods += [torch.nn.Linear(width, width), torch.nn.GELU()]
    return torch.nn.Sequential(*mods)


def _train_once(forward, backward, step, width):
    x = torch.randn(4, width)
    backward(forward(x).square().mean())
    step()


def _timed(fn) -> float:
    dist.barrier()
    t0 = time.perf_counter()
    fn()
    dist.barrier()
    out = torch.tensor([time.perf_counter() - t0])
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return float(out)


def _fsync_tree(root: str, owned) -> None:
    for folder, _, names in os.walk(root):
        for n in names:
            if owned(n):
                with open(os.path.join(folder, n), "rb") as f:
                    os.fsync(f.fileno())
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def _bench(name, ours_save, bare_save, ours_load, bare_load, reps, results):
    times = {k: [] for k in ("ours save", "bare save", "ours load", "bare load")}
    for i in range(reps):
        times["ours save"].append(_timed(lambda: ours_save(i)))
        times["bare save"].append(_timed(lambda: bare_save(i)))
        times["ours load"].append(_timed(lambda: ours_load(i)))
        times["bare load"].append(_timed(lambda: bare_load(i)))
    results[name] = {k: statistics.median(v) for k, v in times.items()}


def _fsdp(args, rank, world, root, results):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from harness.checkpoint import Checkpointer

    model = fully_shard(_model(args.width, args.layers), mesh=init_device_mesh("cpu", (world,)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _train_once(model, lambda loss: loss.backward(), opt.step, args.width)
    ckpt = Checkpointer()
    ckpt.prepare(model, opt)
    group = dist.new_group(backend="gloo")

    def bare_save(i):
        msd, osd = get_state_dict(model, [opt])
        dcp.save({"model": msd, "optim": osd}, process_group=group,
                 storage_writer=dcp.FileSystemWriter(f"{root}/fsdp-bare-{i}", sync_files=True))

    def bare_load(i):
        msd, osd = get_state_dict(model, [opt])
        dcp.load({"model": msd, "optim": osd}, process_group=group,
                 storage_reader=dcp.FileSystemReader(f"{root}/fsdp-bare-{i}"))
        set_state_dict(model, [opt], model_state_dict=msd, optim_state_dict=osd)

    _bench("FSDP2 sharded (DCP)", lambda i: ckpt.save_state(f"{root}/fsdp-ours-{i}"), bare_save,
           lambda i: ckpt.load_state(f"{root}/fsdp-ours-{i}"), bare_load, args.reps, results)


def _deepspeed(args, rank, world, root, stage, results):
    import deepspeed

    from harness.checkpoint import Checkpointer

    model = _model(args.width, args.layers)
    base = torch.optim.AdamW(model.parameters(), lr=1e-3)
    config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "steps_per_print": 2**31 - 1,
              "zero_allow_untested_optimizer": True,
              "zero_optimization": {"stage": stage, "reduce_bucket_size": 2**22, "allgather_bucket_size": 2**22}}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=base, config=config, dist_init_required=False)
    _train_once(engine, engine.backward, engine.step, args.width)
    ckpt = Checkpointer()
    ckpt.prepare(engine, base)
    mine = f"zero_pp_rank_{rank}_"

    def bare_save(i):
        folder = f"{root}/ds{stage}-bare-{i}"
        engine.save_checkpoint(folder, tag="state", save_latest=False)
        _fsync_tree(folder, lambda n: mine in n or (rank == 0 and "zero_pp_rank_" not in n))

    _bench(f"DeepSpeed ZeRO-{stage}", lambda i: ckpt.save_state(f"{root}/ds{stage}-ours-{i}"), bare_save,
           lambda i: ckpt.load_state(f"{root}/ds{stage}-ours-{i}"),
           lambda i: engine.load_checkpoint(f"{root}/ds{stage}-bare-{i}", tag="state", load_lr_scheduler_states=False),
           args.reps, results)


def _rank(rank, world, args, store):
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update(LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    root = args.dir
    results: dict = {}
    try:
        _fsdp(args, rank, world, root, results)
        if not args.no_deepspeed:
            for stage in (2, 3):
                _deepspeed(args, rank, world, root, stage, results)
        if rank == 0:
            n = sum(p.numel() for p in _model(args.width, args.layers).parameters())
            print(f"\n{n / 1e6:.1f}M parameters (fp32) + AdamW state, world size {world}, {args.reps} interleaved reps, "
                  "medians of the max over ranks", file=sys.stderr)
            print(f"{'':24} {'ours save':>10} {'bare save':>10} {'ratio':>7} {'ours load':>10} {'bare load':>10} "
                  f"{'ratio':>7}", file=sys.stderr)
            for name, r in results.items():
                print(f"{name:24} {r['ours save'] * 1e3:8.0f}ms {r['bare save'] * 1e3:8.0f}ms "
                      f"{r['ours save'] / r['bare save']:6.2f}x {r['ours load'] * 1e3:8.0f}ms "
                      f"{r['bare load'] * 1e3:8.0f}ms {r['ours load'] / r['bare load']:6.2f}x", file=sys.stderr)
    finally:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder, removed at the end)")
    p.add_argument("--no-deepspeed", action="store_true")
    args = p.parse_args()
    own = args.dir is None
    args.dir = args.dir or tempfile.mkdtemp(prefix="bench-ckpt-backends-")
    try:
        mp.start_processes(_rank, args=(2, args, os.path.join(args.dir, "store")), nprocs=2, start_method="spawn")
    finally:
        if own:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
