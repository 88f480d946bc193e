"""The data-loader resume matrix: every cell resumes bytes-exactly through Checkpointer.save_state/load_state.

Cells: samplers (sequential, random with and without a generator, weighted, subset, a custom batch
sampler drawing lazily from the global RNGs) x batch size (4, None) x workers (0; 2; 2 persistent)
x snapshot (mid-epoch, at the epoch boundary, in the next epoch); and an iterable dataset x batch
size (3, None) x the same workers and snapshots. The resumed run (a fresh Checkpointer and fresh
loader objects, the global RNGs seeded differently before the load) must yield the same bytes, and
the training loop's global RNG draws between batches must match too.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.checkpoint import Checkpointer
from tests.support.data_loaders import SAMPLERS, map_loader, per_epoch, seed_all, stream_loader, take

WORKERS = [(0, False), (2, False), (2, True)]
STOPS = ["mid", "boundary", "next"]
FAST = {("random", 4, 0, "mid"), ("custom_batch", None, 0, "next"), ("weighted", None, 0, "mid")}


def _stop(where: str, L: int) -> int:
    return {"mid": L // 2, "boundary": L, "next": L + L // 2}[where]


def _check(make, tmp_path, where: str) -> None:
    L = per_epoch(make)
    total, stop = 2 * L + 2, _stop(where, L)
    seed_all(0)
    ckpt = Checkpointer()
    full = take(ckpt.prepare(make()), total, L)

    seed_all(0)
    ckpt = Checkpointer()
    loader = ckpt.prepare(make())
    first = take(loader, stop, L)
    assert first == full[:stop]
    ckpt.save_state(tmp_path / "c")

    seed_all(12345)  # a restarted process, seeded anew
    ckpt2 = Checkpointer()
    loader2 = ckpt2.prepare(make())
    ckpt2.load_state(tmp_path / "c")
    rest = take(loader2, total - stop, L, stop)
    assert len(rest) == len(full[stop:])
    for k, (got, want) in enumerate(zip(rest, full[stop:])):
        assert got == want, f"batch {stop + k} (of {L} per epoch) differs after resuming at {stop}"


def _map_cells():
    for sampler in SAMPLERS:
        for bs in (4, None):
            if sampler == "custom_batch" and bs is None:
                continue  # a batch sampler sets the batches itself
            for workers, persistent in WORKERS:
                for where in STOPS:
                    fast = (sampler, bs, workers, where) in FAST
                    marks = () if fast else (pytest.mark.slow,)
                    yield pytest.param(sampler, bs, workers, persistent, where, marks=marks,
                                       id=f"{sampler}-bs{bs}-w{workers}{'p' if persistent else ''}-{where}")


@pytest.mark.parametrize("sampler,batch_size,workers,persistent,where", list(_map_cells()))
def test_map_style_cell_resumes_exactly(tmp_path, sampler, batch_size, workers, persistent, where):
    _check(lambda: map_loader(sampler, batch_size, workers, persistent), tmp_path, where)


def _iterable_cells():
    for bs in (3, None):
        for workers, persistent in WORKERS:
            for where in STOPS:
                fast = (bs, workers, where) == (3, 0, "mid")
                yield pytest.param(bs, workers, persistent, where, marks=() if fast else (pytest.mark.slow,),
                                   id=f"bs{bs}-w{workers}{'p' if persistent else ''}-{where}")


@pytest.mark.parametrize("batch_size,workers,persistent,where", list(_iterable_cells()))
def test_iterable_cell_resumes_exactly(tmp_path, batch_size, workers, persistent, where):
    _check(lambda: stream_loader(batch_size, workers, persistent), tmp_path, where)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["map", "iterable"])
def test_spawned_workers_resume_exactly(tmp_path, kind):
    """Workers started with spawn get pickled copies of the wrappers (not forked ones)."""
    if kind == "map":
        _check(lambda: map_loader("random", 4, 2, True, multiprocessing_context="spawn"), tmp_path, "mid")
    else:
        _check(lambda: stream_loader(3, 2, False, multiprocessing_context="spawn"), tmp_path, "next")


@pytest.mark.slow
@pytest.mark.parametrize("kind,args", [
    ("map", ["random", "4", "2", "0"]),
    ("map", ["weighted", "None", "0", "0"]),
    ("iterable", ["3", "2", "1"]),
])
def test_resume_in_a_new_process(tmp_path, kind, args):
    if kind == "map":
        make = lambda: map_loader(args[0], None if args[1] == "None" else int(args[1]), int(args[2]), args[3] == "1")  # noqa: E731
    else:
        make = lambda: stream_loader(int(args[0]), int(args[1]), args[2] == "1")  # noqa: E731
    L = per_epoch(make)
    total, stop = 2 * L + 2, L // 2 + 1
    seed_all(0)
    full = take(Checkpointer().prepare(make()), total, L)
    seed_all(0)
    ckpt = Checkpointer()
    take(ckpt.prepare(make()), stop, L)
    ckpt.save_state(tmp_path / "c")
    out = tmp_path / "batches.bin"
    subprocess.run([sys.executable, "-m", "tests.support.data_loaders", str(tmp_path / "c"), str(out), kind, *args,
                    str(total - stop), str(L), str(stop)], check=True, timeout=300)
    data, rest = out.read_bytes(), []
    while data:
        n = int.from_bytes(data[:4], "little")
        rest.append(data[4:4 + n])
        data = data[4 + n:]
    assert rest == full[stop:]
