"""Benchmark: the per-step cost of an order-invariant gradient reduction vs DDP's default, at 2, 3, 4 ranks.

    python bench/reduction_order.py [--world 2 3 4] [--width 1024] [--layers 4] [--batch 16] [--reps 9] [--steps 4]

For each world size, one gloo job (torch.multiprocessing, OMP_NUM_THREADS=1 per rank) builds the same
MLP (--layers Linear(width, width), ~4.2M parameters at the defaults: 16 MiB of fp32 gradients, in
DDP's default buckets) once per variant, warms each up (so DDP has rebuilt its buckets), then times
--steps forward+backward steps (the gradient reduction included; no optimizer) per variant per rep,
the variants interleaved within each rep. It prints, per world size, the median time per step of
each variant over --reps and its ratio to DDP's default:

  default         DDP's built-in all-reduce (ring order depends on the bucket layout: not resume-exact at >= 3)
  allgather       rank_ordered_allgather_hook: all-gather each bucket, sum the ranks in rank order
  reduce_scatter  rank_ordered_allreduce_hook: all-to-all + rank-ordered sum of one chunk + all-gather
                  (what Checkpointer(deterministic_reduction="rank_ordered") installs)
  fixed_layout    DDP's all-reduce with the bucket rebuild pinned to parameter order
                  (reducer._push_all_rebuilt_params(), a private API): same layout in every iteration

Every rank runs on its own process; with more ranks than cores they share cores, as on this 2-core dev
machine, which makes the compute part slower too: compare ratios within one world size.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.checkpoint.reduction import rank_ordered_allgather_hook, rank_ordered_allreduce_hook

VARIANTS = ["default", "allgather", "reduce_scatter", "fixed_layout"]


def build(variant: str, args) -> torch.nn.parallel.DistributedDataParallel:
    torch.manual_seed(0)
    layers = []
    for _ in range(args.layers):
        layers += [torch.nn.Linear(args.width, args.width), torch.nn.GELU()]
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(*layers))
    if variant == "allgather":
        model.register_comm_hook(None, rank_ordered_allgather_hook)
    elif variant == "reduce_scatter":
        model.register_comm_hook(None, rank_ordered_allreduce_hook)
    elif variant == "fixed_layout":
        model.reducer._push_all_rebuilt_params()
    return model


def step(model, x) -> None:
    model(x).square().mean().backward()
    for p in model.parameters():
        p.grad = None


def worker(rank: int, world: int, store: str, args, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    models = {v: build(v, args) for v in VARIANTS}
    x = torch.randn(args.batch, args.width, generator=torch.Generator().manual_seed(rank))
    for m in models.values():  # first iteration + the bucket rebuild, then a steady one
        step(m, x), step(m, x)
    times: dict = {v: [] for v in VARIANTS}
    for rep in range(args.reps):
        order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[:rep % len(VARIANTS)]  # rotate: no variant always first
        for v in order:
            dist.barrier()
            t = time.perf_counter()
            for _ in range(args.steps):
                step(models[v], x)
            dist.barrier()
            times[v].append((time.perf_counter() - t) / args.steps)
    if rank == 0:
        out.put({v: statistics.median(ts) for v, ts in times.items()})
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    params = args.layers * (args.width * args.width + args.width)
    print(f"MLP {args.layers} x Linear({args.width}, {args.width}): {params / 1e6:.1f}M parameters "
          f"({params * 4 / 2**20:.0f} MiB of fp32 gradients), batch {args.batch} per rank, gloo, "
          f"{args.reps} reps x {args.steps} steps, median ms per step (forward + backward + reduction)")
    ctx = mp.get_context("spawn")
    rows = []
    for world in args.world:
        with tempfile.TemporaryDirectory() as tmp:
            out = ctx.SimpleQueue()
            mp.start_processes(worker, args=(world, os.path.join(tmp, "store"), args, out), nprocs=world,
                               start_method="spawn")
            rows.append((world, out.get()))
    print(f"{'ranks':>5}  " + "  ".join(f"{v:>22}" for v in VARIANTS))
    for world, med in rows:
        base = med["default"]
        print(f"{world:>5}  " + "  ".join(f"{med[v] * 1e3:9.1f} ms ({med[v] / base:5.2f}x)" for v in VARIANTS))


if __name__ == "__main__":
    main()
