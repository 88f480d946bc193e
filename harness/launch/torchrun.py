"""TorchrunLauncher: the multi-node path, through torchrun's own c10d rendezvous (optionally under srun).

Runs ``[prefix...] python -m torch.distributed.run --nnodes N --nproc-per-node K --rdzv-backend c10d
--rdzv-endpoint HOST:PORT --rdzv-id LAUNCH_ID --rdzv-conf join_timeout=T,read_timeout=T --max-restarts 0
-m harness.launch.rank LOG_DIR script args``; the small ``harness.launch.rank`` entry sends each rank's
output to ``LOG_DIR/rank{RANK}.log`` and records its exit status in ``LOG_DIR/rank{RANK}.exit`` (absent
when the rank was killed). With one node and no endpoint it uses ``--standalone`` (torchrun picks a free
port itself). For several nodes, LOG_DIR and the trace folder must be on a file system that every node sees.

Who starts the agents of several nodes (docs/multinode.md): with a prefix (``srun --nodes N
--ntasks-per-node 1 --kill-on-bad-exit=1``), the prefix starts one agent per node, each with the same
command line and so the same rendezvous id; without a prefix, the N agents all run on this machine (a
rehearsal of a multi-node job on one machine; the endpoint is then an address of this machine). An agent
that cannot reach the endpoint, or whose peers do not all join, gives up after ``rdzv_timeout_s``
(torchrun's defaults wait up to 10 minutes); the launch then raises LaunchError naming the endpoint.

Teardown: torchrun itself stops the other workers when one fails; on a timeout, a stop by
``LaunchSpec.watch`` (polled in the wait loop, about twice a second) or an interrupt the harness sends
torchrun SIGTERM, then SIGKILLs its process group and any remaining process that carries this
launch's HARNESS_LAUNCH_ID (workers run in sessions of their own). If the harness dies, torchrun gets
SIGTERM from the kernel (PR_SET_PDEATHSIG) and stops its workers itself. With several agents on this machine, an agent
that fails gets the others stopped the same way at once (their ranks could otherwise wait forever for
the dead peers; under srun, ``--kill-on-bad-exit=1`` does this).

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
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

from harness import run_env
from harness.launch import reap
from harness.launch.spec import LauncherBase, LaunchError, LaunchResult, LaunchSpec, RankExit, job_env, log_tail
from harness.launch.supervisor import WATCH_INTERVAL_S

SHUTDOWN_GRACE_S = 5.0
#: How long an agent waits to reach the rendezvous endpoint, and for all nodes to join.
DEFAULT_RDZV_TIMEOUT_S = 20
#: What torchrun's agent logs when the rendezvous failed (the store unreachable, or a join timeout).
_RDZV_FAILURE = re.compile(r"Rendezvous(Connection|Timeout|Closed)Error|DistNetworkError|gai error")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6ADDR]:PORT`` too) -> (host, port); ValueError naming the endpoint otherwise."""
    host, sep, port = endpoint.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"rendezvous endpoint {endpoint!r}: expected HOST:PORT with a port in 1-65535")
    return host, int(port)


class TorchrunLauncher(LauncherBase):
    def __init__(self, prefix: tuple[str, ...] | list[str] = (), nnodes: int = 1, rdzv_endpoint: str | None = None,
                 rdzv_timeout_s: float = DEFAULT_RDZV_TIMEOUT_S):
        if not isinstance(nnodes, int) or nnodes < 1:
            raise ValueError(f"nnodes must be an integer >= 1, got {nnodes!r}")
        if nnodes > 1 and rdzv_endpoint is None:
            raise ValueError("several nodes need a rendezvous endpoint HOST:PORT (--rdzv-endpoint)")
        if rdzv_endpoint is not None:
            parse_endpoint(rdzv_endpoint)
        if not rdzv_timeout_s > 0:
            raise ValueError(f"the rendezvous timeout must be > 0 seconds, got {rdzv_timeout_s!r}")
        self.prefix = tuple(prefix)
        self.nnodes = nnodes
        self.rdzv_endpoint = rdzv_endpoint
        self.rdzv_timeout_s = rdzv_timeout_s
        self._resolved = False

    @property
    def remote(self) -> bool:
        return bool(self.prefix)

    def replay_args(self) -> tuple[str, ...]:
        args = ["--launcher", "torchrun"]
        if self.prefix:
            args += ["--launch-prefix", shlex.join(self.prefix)]
        if self.nnodes != 1:
            args += ["--nnodes", str(self.nnodes)]
        if self.rdzv_endpoint is not None:
            args += ["--rdzv-endpoint", self.rdzv_endpoint]
        if self.rdzv_timeout_s != DEFAULT_RDZV_TIMEOUT_S:
            args += ["--rdzv-timeout", f"{self.rdzv_timeout_s:g}"]
        return tuple(args)

    @property
    def local_agents(self) -> int:
        """Agents this launcher starts itself: one, or (several nodes, no prefix) one per node on this machine."""
        return self.nnodes if self.nnodes > 1 and not self.prefix else 1

    def command(self, spec: LaunchSpec, launch_id: str) -> list[str]:
        if spec.nproc % self.nnodes:
            raise ValueError(f"nproc {spec.nproc} is not a multiple of nnodes {self.nnodes}")
        if self.rdzv_endpoint is None:
            rdzv = ["--standalone"]
        else:
            timeout = f"{self.rdzv_timeout_s:g}"
            rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", self.rdzv_endpoint, "--rdzv-id", launch_id,
                    "--rdzv-conf", f"join_timeout={timeout},read_timeout={timeout}"]
        return [*self.prefix, sys.executable, "-m", "torch.distributed.run",
                "--nnodes", str(self.nnodes), "--nproc-per-node", str(spec.nproc // self.nnodes), *rdzv,
                "--max-restarts", "0", "--monitor-interval", "0.1", "--shutdown-timeout", "3",
                "-m", "harness.launch.rank", os.path.abspath(spec.log_dir), *spec.command()]

    def _check_endpoint(self) -> None:
        """An endpoint whose host does not resolve fails at once, not after the agents' timeout."""
        if self.rdzv_endpoint is None or self._resolved:
            return
        host, port = parse_endpoint(self.rdzv_endpoint)
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise LaunchError(f"rendezvous endpoint {self.rdzv_endpoint}: host {host!r} does not resolve "
                              f"({e.strerror or e}); give --rdzv-endpoint the name or address of the node that "
                              f"hosts the rendezvous") from None
        self._resolved = True

    def agent_logs(self, spec: LaunchSpec) -> list[str]:
        if self.local_agents == 1:
            return [os.path.join(spec.log_dir, "torchrun.log")]
        return [os.path.join(spec.log_dir, f"torchrun-node{i}.log") for i in range(self.local_agents)]

    def launch(self, spec: LaunchSpec) -> LaunchResult:
        self._check_endpoint()
        env = job_env(spec)
        launch_id = env[run_env.LAUNCH_ID]
        os.makedirs(spec.log_dir, exist_ok=True)
        cmd = self.command(spec, launch_id)
        t0, started = time.monotonic(), time.time()
        timed_out, stopped = False, None
        procs: list[subprocess.Popen] = []
        try:
            for path in self.agent_logs(spec):
                with open(path, "ab") as log:
                    procs.append(subprocess.Popen(
                        cmd, env=env, cwd=spec.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=functools.partial(reap.tie_to_parent, os.getpid(), signal.SIGTERM)))
            deadline = t0 + spec.timeout_s
            while True:
                running = [p for p in procs if p.poll() is None]
                if not running:
                    break
                if len(running) < len(procs) and any(p.returncode != 0 for p in procs if p.poll() is not None):
                    break  # an agent failed: its peers' ranks may wait forever; they are stopped below
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                wait = remaining if spec.watch is None and len(procs) == 1 else min(remaining, WATCH_INTERVAL_S)
                try:
                    running[0].wait(timeout=wait)
                    continue
                except subprocess.TimeoutExpired:
                    pass
                if spec.watch is not None and time.monotonic() < deadline:
                    reason = spec.watch(time.monotonic() - t0)
                    if reason is not None:
                        stopped = str(reason)
                        break
        finally:
            self._stop(procs)
            reap.sweep(launch_id)
        torn_down = timed_out or stopped is not None
        exits = [self._rank_exit(spec, r, started, torn_down) for r in range(spec.nproc)]
        result = LaunchResult(exits=exits, timed_out=timed_out, stopped=stopped, wall_s=time.monotonic() - t0,
                              launch_id=launch_id)
        if not result.ok and not torn_down:
            self._raise_if_rendezvous_failed(spec, result)
        return result

    @staticmethod
    def _stop(procs: list[subprocess.Popen]) -> None:
        """SIGTERM the agents still running (torchrun stops its workers), then kill what is left."""
        live = [p for p in procs if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        grace = time.monotonic() + SHUTDOWN_GRACE_S
        for p in live:
            try:
                p.wait(max(0.0, grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            reap.kill_group(p.pid)
            p.wait()

    def _raise_if_rendezvous_failed(self, spec: LaunchSpec, result: LaunchResult) -> None:
        """No rank started and an agent logged a rendezvous failure: say which endpoint, not "rank 0 failed"."""
        if self.rdzv_endpoint is None or any(os.path.exists(e.log_path) for e in result.exits):
            return
        for path in self.agent_logs(spec):
            lines = [ln.strip() for ln in log_tail(path, 200).splitlines() if _RDZV_FAILURE.search(ln)]
            if lines:
                raise LaunchError(
                    f"the torchrun agents could not rendezvous at {self.rdzv_endpoint} within "
                    f"{self.rdzv_timeout_s:g} s: nothing listens there, or not all {self.nnodes} nodes joined "
                    f"(the endpoint must be a node of the job, reachable from every node; more time: "
                    f"--rdzv-timeout); the agent said: {lines[-1][:300]} (log {path})")

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
