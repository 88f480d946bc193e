"""SubprocessLauncher: each rank is a fresh ``python script.py`` (for --no-pool, benchmarks, fallback).

The rendezvous TCPStore is hosted in this process (torch is imported here at the first launch, on
the calling thread), listening on ``LaunchSpec.master_addr`` only (loopback by default; see
``harness.launch.store``) at a port the OS picks. Teardown, timeout, ``watch`` and reaping follow
the fork server's rules (``harness.launch.supervisor``): a rank that exits abnormally gets the
others' process groups SIGKILLed at once; every rank runs in its own session and dies with this
process (PR_SET_PDEATHSIG); after the launch, any process still carrying its HARNESS_LAUNCH_ID (a
descendant that left its rank's process group) is killed.
"""

from __future__ import annotations

import functools
import os
import select
import subprocess
import sys
import time

from harness import run_env
from harness.launch import determinism, reap
from harness.launch.spec import LauncherBase, LaunchResult, LaunchSpec, job_env, rank_env
from harness.launch.supervisor import RankSupervisor


def host_store(addr: str):
    """A rendezvous TCPStore server in this process, listening on ``addr`` only: (store, host, port)."""
    from harness.launch.store import host_store as host

    return host(addr)


class SubprocessLauncher(LauncherBase):
    def replay_args(self) -> tuple[str, ...]:
        return ("--launcher", "subprocess")

    def launch(self, spec: LaunchSpec) -> LaunchResult:
        env = job_env(spec)
        os.makedirs(spec.log_dir, exist_ok=True)
        store, host, port = host_store(spec.master_addr)
        t0 = time.monotonic()
        procs: list[subprocess.Popen] = []
        pidfds: dict[int, int] = {}  # rank -> pidfd
        preexec = functools.partial(reap.tie_to_parent, os.getpid())
        try:
            # Auto mode's hooks and the GPU determinism settings are installed in the rank entry before the
            # script runs (harness.launch.rank).
            via_entry = env.get(run_env.AUTO) == "1" or determinism.wanted(env)
            entry = ["-m", "harness.launch.rank", "--inherit-stdio"] if via_entry else []
            for r in range(spec.nproc):
                with open(spec.log_path(r), "ab") as log:
                    procs.append(subprocess.Popen(
                        [sys.executable, *entry, *spec.command()], env=rank_env(env, r, spec.nproc, host, port),
                        cwd=spec.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True, preexec_fn=preexec))
            for r, p in enumerate(procs):
                pidfds[r] = os.pidfd_open(p.pid)

            def wait(timeout: float) -> None:
                select.select([pidfds[r] for r in supervisor.running()], [], [], timeout)
                return None

            supervisor = RankSupervisor([p.pid for p in procs], [spec.log_path(r) for r in range(spec.nproc)],
                                        t0=t0, timeout_s=spec.timeout_s, wait=wait,
                                        reap_rank=lambda r: procs[r].wait(), watch=spec.watch)
            outcome = supervisor.run()
        finally:
            for p in procs:  # ranks started before a failure to start the others
                if p.returncode is None:  # a reaped rank's pid may already belong to someone else
                    reap.kill_group(p.pid)
            for p in procs:
                p.wait()
            for fd in pidfds.values():
                os.close(fd)
            del store
            reap.sweep(env[run_env.LAUNCH_ID])  # descendants that left the ranks' groups
        return LaunchResult(exits=outcome.exits, timed_out=outcome.timed_out, stopped=outcome.stopped,
                            wall_s=time.monotonic() - t0, launch_id=env[run_env.LAUNCH_ID])
