"""TorchrunLauncher: the multi-node path, through torchrun's own c10d rendezvous (optionally under srun).

Runs ``[prefix...] python -m torch.distributed.run --nnodes N --nproc-per-node K --rdzv-backend c10d
--rdzv-endpoint HOST:PORT --max-restarts 0 -m harness.launch.rank LOG_DIR script args``; the small
``harness.launch.rank`` entry sends each rank's output to ``LOG_DIR/rank{RANK}.log`` and records its
exit status in ``LOG_DIR/rank{RANK}.exit`` (absent when the rank was killed). With one node and no
endpoint it uses ``--standalone`` (torchrun picks a free port itself). For several nodes, LOG_DIR and
the trace folder must be on a file system that every node sees.

Teardown: torchrun itself stops the other workers when one fails; on a timeout, a stop by
``LaunchSpec.watch`` (polled in the wait loop, about twice a second) or an interrupt the harness sends
torchrun SIGTERM, then SIGKILLs its process group and any remaining process that carries this
launch's HARNESS_LAUNCH_ID (workers run in sessions of their own). If the harness dies, torchrun gets
SIGTERM from the kernel (PR_SET_PDEATHSIG) and stops its workers itself.

Where the stores listen (unlike the pool and subprocess launchers, which bind to loopback only):
torch's TCPStore server ignores its host argument and listens on every interface. torchrun's agent
hosts two stores: the c10d rendezvous store (``--standalone``: a port the OS picks; several nodes:
the port of ``--rdzv-endpoint HOST:PORT``) and, on the node that becomes rank 0, the store it shares
with the workers (a port the OS picks; MASTER_ADDR is that node's name). Both listen on ``*``, not
only on HOST. Binding them to loopback for a single node is not feasible from the command line: the
rendezvous store could be hosted by the harness (``--rdzv-conf is_host=false``), but the shared
worker store is created inside torchrun's agent (and with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 rank 0
of the workers hosts one on ``*`` instead, at a port picked then freed: a race). So a torchrun launch
exposes two unauthenticated stores on every interface of its nodes for its duration; run it on
trusted networks, or use the pool or subprocess launcher on a single node.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time

from harness.launch import reap
from harness.launch.spec import LauncherBase, LaunchResult, LaunchSpec, RankExit, job_env
from harness.launch.supervisor import WATCH_INTERVAL_S

SHUTDOWN_GRACE_S = 5.0


class TorchrunLauncher(LauncherBase):
    def __init__(self, prefix: tuple[str, ...] | list[str] = (), nnodes: int = 1, rdzv_endpoint: str | None = None):
        if not isinstance(nnodes, int) or nnodes < 1:
            raise ValueError(f"nnodes must be an integer >= 1, got {nnodes!r}")
        if nnodes > 1 and rdzv_endpoint is None:
            raise ValueError("several nodes need a rendezvous endpoint HOST:PORT (--rdzv-endpoint)")
        self.prefix = tuple(prefix)
        self.nnodes = nnodes
        self.rdzv_endpoint = rdzv_endpoint

    def command(self, spec: LaunchSpec, launch_id: str) -> list[str]:
        if spec.nproc % self.nnodes:
            raise ValueError(f"nproc {spec.nproc} is not a multiple of nnodes {self.nnodes}")
        if self.rdzv_endpoint is None:
            rdzv = ["--standalone"]
        else:
            rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", self.rdzv_endpoint, "--rdzv-id", launch_id]
        return [*self.prefix, sys.executable, "-m", "torch.distributed.run",
                "--nnodes", str(self.nnodes), "--nproc-per-node", str(spec.nproc // self.nnodes), *rdzv,
                "--max-restarts", "0", "--monitor-interval", "0.1", "--shutdown-timeout", "3",
                "-m", "harness.launch.rank", os.path.abspath(spec.log_dir), *spec.command()]

    def launch(self, spec: LaunchSpec) -> LaunchResult:
        env = job_env(spec)
        launch_id = env["HARNESS_LAUNCH_ID"]
        os.makedirs(spec.log_dir, exist_ok=True)
        t0, started = time.monotonic(), time.time()
        timed_out, stopped = False, None
        with open(os.path.join(spec.log_dir, "torchrun.log"), "ab") as log:
            proc = subprocess.Popen(self.command(spec, launch_id), env=env, cwd=spec.cwd,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True,
                                    preexec_fn=functools.partial(reap.tie_to_parent, os.getpid(), signal.SIGTERM))
        try:
            deadline = t0 + spec.timeout_s
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                try:
                    proc.wait(timeout=min(remaining, WATCH_INTERVAL_S) if spec.watch is not None else remaining)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if spec.watch is not None and time.monotonic() < deadline:
                    reason = spec.watch(time.monotonic() - t0)
                    if reason is not None:
                        stopped = str(reason)
                        break
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(SHUTDOWN_GRACE_S)
                except subprocess.TimeoutExpired:
                    pass
                reap.kill_group(proc.pid)
                proc.wait()
            reap.sweep(launch_id)
        torn_down = timed_out or stopped is not None
        exits = [self._rank_exit(spec, r, started, torn_down) for r in range(spec.nproc)]
        return LaunchResult(exits=exits, timed_out=timed_out, stopped=stopped, wall_s=time.monotonic() - t0,
                            launch_id=launch_id)

    @staticmethod
    def _rank_exit(spec: LaunchSpec, rank: int, started: float, torn_down: bool = False) -> RankExit:
        path = os.path.join(spec.log_dir, f"rank{rank}.exit")
        try:
            with open(path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            return RankExit(rank=rank, pid=None, returncode=None, log_path=spec.log_path(rank),
                            elapsed_s=time.time() - started, torn_down=torn_down)
        return RankExit(rank=rank, pid=record.get("pid"), returncode=record["returncode"],
                        log_path=spec.log_path(rank), elapsed_s=record.get("time", started) - started)
