"""Checkpoint save/load under FSDP2 (DCP) and DeepSpeed ZeRO-2/3: the harness's Checkpointer against the
backend's own bare save/load with the same durability, at world size 2 (gloo, CPU).

    python bench/checkpoint_backends.py [--reps 5] [--width 2048] [--layers 4] [--dir /tmp/...] [--breakdown]

Bare saves: `dcp.save(get_state_dict(...), FileSystemWriter(sync_files=True))`, and
`engine.save_checkpoint(dir, tag, save_latest=False)` followed by an fsync of every file it wrote and
of its folders. Ours adds the per-rank state (RNG, step), checksums of every file, the manifest and the
atomic commit (staging folder + rename). Loads: ours verifies checksums first. Reps are interleaved
(ours, bare, ours, bare, ...) in one run; rank 0 prints medians (max over ranks per rep) and ratios.
Durability is the same on both sides: every file fsynced (and its folder), nothing else.

`--micro` runs, instead, one process without a process group: the hashing parts alone, each against the
same operation without them (interleaved, order rotated per rep): DCP's writer with and without hashing
as it writes; DCP's reader bare, after verification reading from the verified mapping (ours), and after
verification reading the page cache again; a 100 MB torch.save + fsync (DeepSpeed's file) bare, hashed
through a mapping (ours) and read back in chunks (what the checkpointer did before).

`--breakdown` also times, on rank 0, the parts of our save and load (inclusive times, medians over the
reps; nested parts overlap): what the backend itself does (`dcp.save`, `engine.save_checkpoint`,
`dcp.load`, ...) against what the checkpointer adds (checksums, our own files, the agreement between
ranks, manifest and commit). That is the floor: ours can be no faster than the backend's part.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.launch.rank import finish_interpreter


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


class _Breakdown:
    """Inclusive time spent in chosen functions (rank 0's), accumulated while they are wrapped."""

    def __init__(self) -> None:
        self.acc: dict[str, float] = {}
        self.parts: dict[str, dict[str, dict[str, list[float]]]] = {}  # bench -> op -> label -> per rep

    def wrap(self, owner, name: str, label: str) -> None:
        fn = getattr(owner, name)
        acc = self.acc

        @functools.wraps(fn)
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[label] = acc.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)

    def run(self, bench: str, op: str, fn):
        before = dict(self.acc)
        out = fn()
        for label, total in self.acc.items():
            if total != before.get(label, 0.0):
                self.parts.setdefault(bench, {}).setdefault(op, {}).setdefault(label, []).append(
                    total - before.get(label, 0.0))
        return out


BREAKDOWN: _Breakdown | None = None


def _install_breakdown(engine=None) -> None:
    """Wrap the parts of a save and a load that --breakdown reports (idempotent per object)."""
    import torch.distributed.checkpoint as dcp

    from harness.checkpoint import comm, files, layout, manager, state, strategy

    b = BREAKDOWN
    if b is None:
        return
    if not getattr(dcp, "_bench_wrapped", False):
        dcp._bench_wrapped = True
        for owner, name, label in [
            (dcp, "save", "backend: dcp.save"), (dcp, "load", "backend: dcp.load"),
            (strategy.FSDPStrategy, "_dcp_state", "backend: get state dicts (ours)"),
            (strategy, "_hash_owned", "checksums: backend files (+fsync dirs)"),
            (files, "hash_file", "checksums: files hashed after writing"),
            (layout, "write_files", "own files: write+hash+fsync"),
            (layout, "write_manifest", "manifest: write"),
            (manager.Checkpointer, "_target", "agree: folder name"),
            (manager.Checkpointer, "_create_staging", "staging folder"),
            (manager.Checkpointer, "_snapshot", "snapshot (incl. backend save)"),
            (manager.Checkpointer, "_commit", "commit (manifest, rename)"),
            (comm.Comm, "all_gather_json", "agree: all_gather_json (all calls)"),
            (manager, "read_manifest", "load: read manifest"),
            (files, "read_tensors", "load: own files (verify+parse)"),
            (files, "read_json", "load: own json (verify+parse)"),
            (strategy.Strategy, "verify_native", "load: verify backend files (base)"),
            (strategy.FSDPStrategy, "verify_native", "load: verify backend files"),
            (strategy.DeepSpeedStrategy, "verify_native", "load: verify backend files"),
            (strategy, "_check_dcp_keys", "load: check .metadata keys"),
            (state.Registry, "validate", "load: validate against registry"),
            (state.Registry, "apply", "load: apply per-rank state"),
            (manager.Checkpointer, "_read", "load: _read (all checks)"),
            (manager.Checkpointer, "_apply", "load: _apply (backend load + state)"),
        ]:
            b.wrap(owner, name, label)
    if engine is not None and not getattr(engine, "_bench_wrapped", False):
        engine._bench_wrapped = True
        b.wrap(engine, "save_checkpoint", "backend: engine.save_checkpoint")
        b.wrap(engine, "load_checkpoint", "backend: engine.load_checkpoint")


def _bench(name, ours_save, bare_save, ours_load, bare_load, reps, results):
    times = {k: [] for k in ("ours save", "bare save", "ours load", "bare load")}
    for i in range(reps):
        for key, fn in (("ours save", ours_save), ("bare save", bare_save), ("ours load", ours_load),
                        ("bare load", bare_load)):
            if BREAKDOWN is not None:
                times[key].append(_timed(lambda: BREAKDOWN.run(name, key, lambda: fn(i))))
            else:
                times[key].append(_timed(lambda: fn(i)))
    results[name] = {k: statistics.median(v) for k, v in times.items()}


def _fsdp(args, rank, world, root, results):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from harness.checkpoint import Checkpointer

    _install_breakdown()
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
    _install_breakdown(engine)
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
    global BREAKDOWN
    if args.breakdown and rank == 0:
        BREAKDOWN = _Breakdown()
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
            if BREAKDOWN is not None:
                print("\nbreakdown (rank 0, inclusive, medians over the reps; nested parts overlap):", file=sys.stderr)
                for name, ops in BREAKDOWN.parts.items():
                    for op, labels in ops.items():
                        print(f"  {name} / {op}: total {results[name][op] * 1e3:.0f}ms", file=sys.stderr)
                        for label, vals in sorted(labels.items()):
                            print(f"      {label:44} {statistics.median(vals) * 1e3:8.1f}ms", file=sys.stderr)
    finally:
        dist.destroy_process_group()
    os._exit(finish_interpreter())  # no interpreter teardown: it can abort a spawned gloo rank (tests/support/spawn.py)


def _micro(args) -> None:
    """The hashing parts alone, in this process (see the module docstring)."""
    import warnings

    import torch.distributed.checkpoint as dcp
    import xxhash

    from harness.checkpoint import files, strategy
    from harness.checkpoint.hashing_storage import HashingFileSystemWriter, VerifiedFileSystemReader
    from harness.checkpoint.strategy import StrategyInfo

    warnings.filterwarnings("ignore")  # DCP warns that it runs without a process group
    root = args.dir
    state = {"model_0": {f"w{i}": torch.randn(args.width, args.width) for i in range(6)}}
    mb = sum(t.numel() * 4 for t in state["model_0"].values()) / 2**20

    def fsync_path(p):
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    def read_back(path):  # the previous implementation of files.hash_file: read back in 16 MiB chunks
        h = xxhash.xxh3_128()
        with open(path, "rb") as f:
            while chunk := f.read(16 << 20):
                h.update(chunk)
            os.fsync(f.fileno())

    def verified(folder, records):
        st = strategy.FSDPStrategy([], state_dict="sharded")
        st.verify_native(folder, records, 0, 1, StrategyInfo("fsdp", "dcp", (1,)), [])
        return st

    saved = os.path.join(root, "saved")
    writer = HashingFileSystemWriter(os.path.join(saved, "dcp"), sync_files=True)
    dcp.save(state, storage_writer=writer)
    records = writer.records(saved)
    target = {"model_0": {k: torch.zeros_like(v) for k, v in state["model_0"].items()}}

    def dcp_save(cls):
        def run(i):
            dcp.save(state, storage_writer=cls(os.path.join(root, f"dcp-{cls.__name__}-{i}"), sync_files=True))
            shutil.rmtree(os.path.join(root, f"dcp-{cls.__name__}-{i}"))
        return run

    def load_ours(i):
        st = verified(saved, records)
        dcp.load(target, storage_reader=VerifiedFileSystemReader(os.path.join(saved, "dcp"), st._verified,
                                                                 st._listed, saved))
        st._verified.release()

    def load_page_cache(i):
        verified(saved, records)._verified.release()
        dcp.load(target, storage_reader=dcp.FileSystemReader(os.path.join(saved, "dcp")))

    def ds(after):
        def run(i):
            p = os.path.join(root, f"ds-{i}.pt")
            torch.save(state["model_0"], p)
            after(p)
            os.remove(p)
        return run

    groups = {
        f"DCP save, {mb:.0f} MiB, sync_files": {"bare FileSystemWriter": dcp_save(dcp.FileSystemWriter),
                                                "ours: HashingFileSystemWriter": dcp_save(HashingFileSystemWriter)},
        f"DCP load, {mb:.0f} MiB, page cache hot": {
            "bare FileSystemReader": lambda i: dcp.load(target, storage_reader=dcp.FileSystemReader(
                os.path.join(saved, "dcp"))),
            "ours: verify, read the verified mapping": load_ours,
            "verify, then DCP reads the page cache": load_page_cache},
        f"torch.save {mb:.0f} MiB + fsync (DeepSpeed)": {"bare": ds(fsync_path),
                                                          "ours: hash via mapping": ds(files.hash_file),
                                                          "before: read back in chunks": ds(read_back)},
    }
    for title, variants in groups.items():
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for i in range(args.reps):
            for name in names[i % len(names):] + names[:i % len(names)]:
                os.sync()
                t0 = time.perf_counter()
                variants[name](i)
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times[names[0]])
        print(f"{title} ({args.reps} reps, medians)", file=sys.stderr)
        for name in names:
            med = statistics.median(times[name])
            print(f"  {name:42} {med * 1e3:8.1f}ms {med / base:6.2f}x", file=sys.stderr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder, removed at the end)")
    p.add_argument("--no-deepspeed", action="store_true")
    p.add_argument("--breakdown", action="store_true", help="also time the parts of our save and load (rank 0)")
    p.add_argument("--micro", action="store_true", help="only the hashing parts, in one process (see above)")
    args = p.parse_args()
    own = args.dir is None
    args.dir = args.dir or tempfile.mkdtemp(prefix="bench-ckpt-backends-")
    try:
        if args.micro:
            _micro(args)
            return
        mp.start_processes(_rank, args=(2, args, os.path.join(args.dir, "store")), nprocs=2, start_method="spawn")
    finally:
        if own:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
