"""Benchmark: save/load a ~512 MB training state with the reference checkpointer, side by side.

    python bench/checkpoint_io.py [--tensors 8] [--dim 4096] [--reps 5] [--dir DIR]

Compares, in one run, interleaved, medians over --reps:
  save  ours (sync: fsync + xxh3 checksums + manifest + atomic rename)
        safetensors.torch.save_file (no fsync)   torch.save (no fsync)   dd conv=fsync (the disk's limit)
  async ours with blocking=False: how long the caller is stalled, and the total until wait() returns
  load  ours (checksums verified, copied into the model)  vs  safetensors load_file + touching every byte,
        both from a cold page cache (posix_fadvise DONTNEED): a resumed job reads what an earlier process wrote
Every save starts after os.sync(), so no run pays for the previous run's dirty pages.
Targets (the issue): sync save >= 1.0x save_file; load >= 0.9x load_file+touch; async stall <= 0.15x sync save;
async total (until wait() returns) <= 1.2x a sync save. Durability: ours fsyncs (files, folders, manifest,
rename), safetensors/torch.save do not, dd does. The async save's parts are printed too (the copy into host
buffers, which is the stall, and the background write + commit), so its floor shows: total >= copy + write.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import torch
import xxhash
from safetensors.torch import load_file, save_file

from harness.checkpoint import Checkpointer


class Weights(torch.nn.Module):
    def __init__(self, n: int, dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(dim, dim, generator=g)) for _ in range(n)])


def timed(fn) -> float:
    os.sync()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def evict(folder_or_file: str) -> None:
    """Drop a file's (or a folder's files') pages from the page cache: both loads then read from disk."""
    paths = [folder_or_file] if os.path.isfile(folder_or_file) else [
        os.path.join(r, n) for r, _, names in os.walk(folder_or_file) for n in names]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def touch(tensors: dict) -> None:
    for t in tensors.values():
        xxhash.xxh3_64_intdigest(t.numpy())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tensors", type=int, default=8)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder under the current one)")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-ckpt-", dir=args.dir or ".")
    model = Weights(args.tensors, args.dim)
    state = {f"w.{i}": p.data for i, p in enumerate(model.w)}
    size = sum(t.numel() * t.element_size() for t in state.values())
    print(f"state: {args.tensors} x {args.dim}x{args.dim} fp32 = {size / 2**20:.0f} MiB; {args.reps} reps; dir {root}")
    ckpt = Checkpointer()
    ckpt.prepare(model)
    parts = _time_async_parts(ckpt)
    runs: dict[str, list[float]] = {}
    n = 0

    def fresh(name: str) -> str:
        nonlocal n
        n += 1
        return os.path.join(root, f"{name}-{n}")

    try:
        for rep in range(args.reps):
            # The sync and the async save alternate which goes first, and every save starts with the same page
            # cache: what a measurement wrote and no later step reads is deleted at once (written files crowd the
            # page cache, and the next save then pays for evicting them).
            out = fresh("ours")

            def sync_save():
                runs.setdefault("save: ours (sync, fsync+checksums)", []).append(timed(lambda: ckpt.save_state(out)))

            def async_save():
                out_async = fresh("async")
                os.sync()
                t0 = time.perf_counter()
                ckpt.save_state(out_async, blocking=False)
                t1 = time.perf_counter()
                ckpt.wait()
                t2 = time.perf_counter()
                runs.setdefault("async: caller stall", []).append(t1 - t0)
                runs.setdefault("async: total until wait()", []).append(t2 - t0)
                runs.setdefault("async: of which host copies (stall)", []).append(parts.pop("copy", 0.0))
                runs.setdefault("async: of which background write+commit", []).append(parts.pop("write", 0.0))
                shutil.rmtree(out_async)

            for save in ((sync_save, async_save) if rep % 2 == 0 else (async_save, sync_save)):
                save()
            st_file = fresh("st")
            runs.setdefault("save: safetensors save_file", []).append(timed(lambda: save_file(state, st_file)))
            pt_file = fresh("pt")
            runs.setdefault("save: torch.save", []).append(timed(lambda: torch.save(state, pt_file)))
            os.remove(pt_file)
            dd_file = fresh("dd")
            dd = ["dd", "if=/dev/zero", f"of={dd_file}", "bs=16M", f"count={size // 2**24}", "conv=fsync", "status=none"]
            runs.setdefault("save: dd conv=fsync (disk limit)", []).append(timed(lambda: subprocess.run(dd, check=True)))
            os.remove(dd_file)
            target = Weights(args.tensors, args.dim, seed=1)
            loader = Checkpointer()
            loader.prepare(target)
            evict(out)
            runs.setdefault("load: ours (verify + into model)", []).append(timed(lambda: loader.load_state(out)))
            assert all(torch.equal(a, b) for a, b in zip(target.w, model.w))
            evict(st_file)
            runs.setdefault("load: safetensors load_file + touch", []).append(timed(lambda: touch(load_file(st_file))))
            runs.setdefault("load: safetensors, page cache hot", []).append(timed(lambda: touch(load_file(st_file))))
            for name in os.listdir(root):
                shutil.rmtree(os.path.join(root, name)) if os.path.isdir(os.path.join(root, name)) else os.remove(os.path.join(root, name))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in runs.items()}
    width = max(map(len, med))
    for k, v in med.items():
        print(f"  {k:<{width}}  median {v * 1000:8.1f} ms  {size / v / 1e9:6.2f} GB/s  (min {min(runs[k]) * 1000:.1f})")
    sync = med["save: ours (sync, fsync+checksums)"]
    ratios = [
        ("sync save vs save_file (no fsync)", med["save: safetensors save_file"] / sync, ">= 1.0", 1.0),
        ("sync save vs torch.save (no fsync)", med["save: torch.save"] / sync, "", None),
        ("sync save vs dd conv=fsync", med["save: dd conv=fsync (disk limit)"] / sync, "", None),
        ("load vs load_file + touch", med["load: safetensors load_file + touch"] / med["load: ours (verify + into model)"], ">= 0.9", 0.9),
        ("async stall / sync save", med["async: caller stall"] / sync, "<= 0.15", -0.15),
        ("async total / sync save", med["async: total until wait()"] / sync, "<= 1.2", -1.2),
        ("async copy + write (if not overlapped)", (med["async: of which host copies (stall)"]
                                                + med["async: of which background write+commit"]) / sync, "", None),
    ]
    print("ratios (speed of ours relative to the other, > 1 means ours is faster; async rows: time / sync save):")
    for name, value, target, floor in ratios:
        ok = "" if not target else ("  PASS" if (value >= floor if floor > 0 else value <= -floor) else "  MISS")
        print(f"  {name:<36} {value:6.2f}x  {('target ' + target) if target else ''}{ok}")


def _time_async_parts(ckpt: Checkpointer) -> dict:
    """Time the async save's copy into host buffers (the caller's stall) and its background write + commit, per
    save. The two overlap (the thread writes each tensor once it is copied): total ~ max(copy, write) + the rest."""
    parts: dict[str, float] = {}

    def timed(name, fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
        return run

    from harness.checkpoint.host_copy import HostCopies

    HostCopies.run = timed("copy", HostCopies.run)
    ckpt._background = timed("write", ckpt._background)
    return parts


if __name__ == "__main__":
    main()
