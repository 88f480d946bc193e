"""SubprocessLauncher: each rank is a fresh ``python script.py`` (for --no-pool, benchmarks, fallback).

The rendezvous TCPStore is hosted in this process on a port the OS picks (torch is imported here at
the first launch). Teardown, timeout and reaping follow the same rules as the fork server: a rank
that exits abnormally gets the others' process groups SIGKILLed at once; every rank runs in its own
session and dies with this process (PR_SET_PDEATHSIG); after the launch, any process still carrying
its HARNESS_LAUNCH_ID (a descendant that left its rank's process group) is killed.
"""

from __future__ import annotations

import functools
import os
import select
import subprocess
import sys
import time

from harness.launch import reap
from harness.launch.spec import LauncherBase, LaunchResult, LaunchSpec, RankExit, job_env, rank_env


def host_store(addr: str):
    """A rendezvous TCPStore server in this process; ranks join it as clients."""
    from torch.distributed import TCPStore

    return TCPStore(addr, 0, is_master=True, wait_for_workers=False)


class SubprocessLauncher(LauncherBase):
    def launch(self, spec: LaunchSpec) -> LaunchResult:
        env = job_env(spec)
        os.makedirs(spec.log_dir, exist_ok=True)
        store = host_store(spec.master_addr)
        t0 = time.monotonic()
        procs: list[subprocess.Popen] = []
        exits: dict[int, RankExit] = {}
        torn_down: set[int] = set()
        timed_out = False

        def teardown() -> None:
            for r, p in enumerate(procs):
                if r not in exits:
                    torn_down.add(r)
                    reap.kill_group(p.pid)

        pidfds: dict[int, int] = {}
        preexec = functools.partial(reap.tie_to_parent, os.getpid())
        try:
            for r in range(spec.nproc):
                with open(spec.log_path(r), "ab") as log:
                    procs.append(subprocess.Popen(
                        [sys.executable, *spec.command()], env=rank_env(env, r, spec.nproc, spec.master_addr, store.port),
                        cwd=spec.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True, preexec_fn=preexec))
            pidfds = {os.pidfd_open(p.pid): r for r, p in enumerate(procs)}
            deadline = t0 + spec.timeout_s
            while len(exits) < spec.nproc:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not timed_out:
                    timed_out = True
                    teardown()
                waiting = [fd for fd, r in pidfds.items() if r not in exits]
                readable, _, _ = select.select(waiting, [], [], max(remaining, 0) if not timed_out else 1.0)
                for fd in readable:
                    r = pidfds[fd]
                    p = procs[r]
                    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
                    reap.kill_group(p.pid)  # strays of this rank, while its zombie pins the group id
                    code = p.wait()
                    exits[r] = RankExit(rank=r, pid=p.pid, returncode=code, log_path=spec.log_path(r),
                                        elapsed_s=time.monotonic() - t0, torn_down=r in torn_down)
                    if code != 0:
                        teardown()
        finally:
            for p in procs:
                if p.returncode is None:  # a reaped rank's pid may already belong to someone else
                    reap.kill_group(p.pid)
            for p in procs:
                p.wait()
            for fd in pidfds:
                os.close(fd)
            del store
            reap.sweep(env["HARNESS_LAUNCH_ID"])  # descendants that left the ranks' groups
        return LaunchResult(exits=[exits[r] for r in range(spec.nproc)], timed_out=timed_out,
                            wall_s=time.monotonic() - t0, launch_id=env["HARNESS_LAUNCH_ID"])
