"""Run a function as several spawned rank processes and check that every rank succeeded.

Each rank's target writes ``err{rank}`` (a traceback) into ``result_dir`` when it fails; a rank still alive
after ``timeout_s`` is killed. The assertion names every failing rank's traceback.

A rank ends through ``exit_after`` (its atexit handlers run, then ``os._exit``), as the harness's own ranks
do: a spawned process's full interpreter teardown can abort after the work succeeded, when a gloo thread
still reaches for the GIL (pytorch/pytorch#179291 describes it), and that is torch's exit, not the code under test.
"""

from __future__ import annotations

import os

import torch.multiprocessing as mp

from harness.launch.rank import exit_after


def run_ranks(target, world: int, args_of_rank, result_dir, timeout_s: float = 240) -> None:
    """``target(*args_of_rank(rank))`` in ``world`` spawned processes; assert all exited 0 with no ``err*`` file."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=exit_after, args=(target, *args_of_rank(r))) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout_s)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    errors = [open(os.path.join(result_dir, f"err{r}")).read() for r in range(world)
              if os.path.exists(os.path.join(result_dir, f"err{r}"))]
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in procs] == [0] * world
