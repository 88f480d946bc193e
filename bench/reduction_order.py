"""Benchmark: the per-step cost of an order-invariant gradient reduction vs DDP's default, at 2, 3, 4 ranks.

    python bench/reduction_order.py [--world 2 3 4] [--width 1024] [--layers 4] [--batch 16] [--reps 9] [--steps 4]
                                    [--variants default fixed_layout ready_order] [--bucket-cap-mb MB]
                                    [--backend gloo|nccl] [--device cpu|cuda]

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
                  (Checkpointer(deterministic_reduction="fixed_layout"))
  ready_order     DDP's all-reduce on the layout DDP rebuilt in the "default" model (readiness order),
                  recorded (bucket_layout_state) and restored on a new model before its first forward
                  (restore_bucket_layout), as in a process resumed by the checkpointer's default; a
                  fresh process of the default runs exactly "default"

With --backend nccl --device cuda (bench/gpu_check.sh, step e) each rank uses GPU `rank` (one GPU per
rank: NCCL normally refuses two ranks on one device), and the timings synchronize the GPU.

The variants to time are --variants (default: default fixed_layout ready_order; the hooks are much
slower on gloo, add them by name). The load of the machine (os.getloadavg, as `uptime` prints it) is
printed before and after: on a shared machine quote it with the numbers.

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

from harness.checkpoint.reduction import (bucket_layout, bucket_layout_state, pin_bucket_layout,
                                          rank_ordered_allgather_hook, rank_ordered_allreduce_hook,
                                          restore_bucket_layout, track_bucket_layout)
from harness.launch.rank import finish_interpreter

VARIANTS = ["default", "allgather", "reduce_scatter", "fixed_layout", "ready_order"]


def build(variant: str, args, recorded: dict | None = None) -> torch.nn.parallel.DistributedDataParallel:
    torch.manual_seed(0)
    layers = []
    for _ in range(args.layers):
        layers += [torch.nn.Linear(args.width, args.width), torch.nn.GELU()]
    kw = {} if args.bucket_cap_mb is None else {"bucket_cap_mb": args.bucket_cap_mb}
    if args.device == "cuda":
        kw["device_ids"] = [torch.cuda.current_device()]
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(*layers).to(args.device), **kw)
    if variant == "allgather":
        model.register_comm_hook(None, rank_ordered_allgather_hook)
    elif variant == "reduce_scatter":
        model.register_comm_hook(None, rank_ordered_allreduce_hook)
    elif variant == "fixed_layout":
        assert pin_bucket_layout(model)
    elif variant == "ready_order":
        assert track_bucket_layout(model)
        assert restore_bucket_layout(model, recorded) == "ready_order", "the recorded layout was not restored"
    return model


def step(model, x) -> None:
    model(x).square().mean().backward()
    for p in model.parameters():
        p.grad = None


def sync(args) -> None:
    if args.device == "cuda":
        torch.cuda.synchronize()
    dist.barrier()


def worker(rank: int, world: int, store: str, args, out) -> None:
    torch.set_num_threads(1)
    if args.device == "cuda":
        torch.cuda.set_device(rank)
        dist.init_process_group(args.backend, init_method=f"file://{store}", rank=rank, world_size=world,
                                device_id=torch.device("cuda", rank))
    else:
        dist.init_process_group(args.backend, init_method=f"file://{store}", rank=rank, world_size=world)
    variants = args.variants
    x = torch.randn(args.batch, args.width, generator=torch.Generator().manual_seed(rank)).to(args.device)
    recorder = build("default", args)  # a fresh process under the checkpointer: DDP rebuilds as it does
    track_bucket_layout(recorder)
    step(recorder, x), step(recorder, x)
    recorded = bucket_layout_state(recorder)
    models = {v: build(v, args, recorded) for v in variants}
    for m in models.values():  # first iteration + the bucket rebuild, then a steady one
        step(m, x), step(m, x)
    layouts = {v: bucket_layout(m) for v, m in models.items() if v in ("default", "fixed_layout", "ready_order")}
    if "ready_order" in layouts and "default" in layouts:
        assert layouts["ready_order"] == layouts["default"], layouts  # the restored layout is DDP's own
    times: dict = {v: [] for v in variants}
    for rep in range(args.reps):
        order = variants[rep % len(variants):] + variants[:rep % len(variants)]  # rotate: no variant always first
        for v in order:
            sync(args)
            t = time.perf_counter()
            for _ in range(args.steps):
                step(models[v], x)
            sync(args)
            times[v].append((time.perf_counter() - t) / args.steps)
    if rank == 0:
        out.put(({v: statistics.median(ts) for v, ts in times.items()}, layouts))
    dist.destroy_process_group()
    os._exit(finish_interpreter())  # no interpreter teardown: it can abort a spawned gloo rank (tests/support/spawn.py)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["default", "fixed_layout", "ready_order"])
    p.add_argument("--bucket-cap-mb", type=float, default=None, help="DDP's bucket_cap_mb (default: DDP's)")
    p.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    if args.device == "cuda" and torch.cuda.device_count() < max(args.world):
        p.error(f"--device cuda: {max(args.world)} ranks need as many GPUs, {torch.cuda.device_count()} visible")
    if args.variants[0] != "default":
        p.error("--variants: the first must be default (the ratios' base)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    params = args.layers * (args.width * args.width + args.width)
    print(f"MLP {args.layers} x Linear({args.width}, {args.width}): {params / 1e6:.1f}M parameters "
          f"({params * 4 / 2**20:.0f} MiB of fp32 gradients), batch {args.batch} per rank, {args.backend} on "
          f"{args.device}, "
          f"{args.reps} reps x {args.steps} steps, median ms per step (forward + backward + reduction)")
    print("load average before (1, 5, 15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    ctx = mp.get_context("spawn")
    rows = []
    for world in args.world:
        with tempfile.TemporaryDirectory() as tmp:
            out = ctx.SimpleQueue()
            mp.start_processes(worker, args=(world, os.path.join(tmp, "store"), args, out), nprocs=world,
                               start_method="spawn")
            rows.append((world, *out.get()))
    variants = args.variants
    print(f"{'ranks':>5}  " + "  ".join(f"{v:>22}" for v in variants))
    for world, med, _ in rows:
        base = med["default"]
        print(f"{world:>5}  " + "  ".join(f"{med[v] * 1e3:9.1f} ms ({med[v] / base:5.2f}x)" for v in variants))
    if "ready_order" in variants and "fixed_layout" in variants:
        print("ready_order / fixed_layout: " + ", ".join(
            f"{world} ranks {med['ready_order'] / med['fixed_layout']:.3f}x" for world, med, _ in rows))
    for name, layout in rows[0][2].items():
        print(f"layout {name}: {_brief(layout)}")
    print("load average after (1, 5, 15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


def _brief(layout: list) -> str:
    return f"{len(layout)} bucket(s): " + " | ".join(" ".join(map(str, b)) for b in layout)


if __name__ == "__main__":
    main()
