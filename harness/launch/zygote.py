"""The fork server ("zygote"): a process with torch already imported that forks rank processes.

Started by ``ForkServerLauncher``; talks JSON lines over its stdin/stdout (moved to private fds, so a
stray print cannot corrupt the protocol; its stderr is a log file).

    harness -> zygote   {"op": "launch", "nproc", "script" | "module", "args", "cwd", "env",
                         "log_dir", "timeout_s", "master_addr", "store"?: "kept" | "per-launch"}
                        {"op": "kill", "reason"?}   tear the running launch down ("reason": why, which
                                                    the done event reports as "stopped")
                        end of input                kill everything and exit (the harness is gone)
    zygote -> harness   {"event": "ready", "pid", "threads"}
                        {"event": "started", "pids", "port", "host"}
                        {"event": "done", "exits": [...], "timed_out", "stopped"}
                        {"event": "error", "message"}

It must stay single-threaded, so a fork copies a clean process: it never runs torch ops and never
creates a TCPStore. The rendezvous stores live in a child forked from it, the store host, started at
the first launch and kept: it gives each launch a fresh store, made ahead while the previous launch
ran, listening on the launch's master_addr only (loopback by default; ``harness.launch.store``).
``"store": "per-launch"`` in a launch message forks a store process for that launch instead (the
old way, for side-by-side benchmarks).

The ranks are supervised by ``harness.launch.supervisor.RankSupervisor`` (the teardown rules are
there): a rank that exits abnormally gets the other ranks' process groups SIGKILLed at once; a
rank's whole process group is killed when it exits; a launch past its timeout is killed and marked
timed out; a kill request stops it. The zygote is a child subreaper: descendants of ranks that were
orphaned are killed and reaped after each launch.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
import traceback

# What training scripts import, so a forked rank finds it imported: DDP's constructor alone imports
# torch._dynamo, which is slow to import. Each of these imports leaves the process single-threaded.
PRELOAD = ("torch", "torch.distributed", "torch.nn", "torch.nn.parallel", "torch.optim", "torch.utils.data",
           "torch._dynamo", "torch.distributed.checkpoint", "torch.distributed.fsdp", "torch.distributed.tensor",
           "numpy", "safetensors", "safetensors.torch", "xxhash", "harness.probe", "harness.probe.digest",
           "harness.faults")
OPTIONAL_PRELOAD = ("harness.checkpoint",)
TORCH_LEGACY_DEFAULT_SEED = 67280421310721


#: Where a launch's rendezvous store comes from (the launch message's "store"): the kept store host
#: (``harness.launch.store.serve_stores``, the default), or a process forked for the launch (the old way,
#: kept for side-by-side benchmarks).
STORE_KEPT, STORE_PER_LAUNCH = "kept", "per-launch"


def _kill_and_reap(pid: int) -> None:
    """SIGKILL a child of this process and wait for it (gone already: nothing to do)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class _Shutdown(Exception):
    pass


class Zygote:
    def __init__(self, ctl_in: int, ctl_out: int):
        from harness.launch import reap

        self.reap = reap
        self.ctl_in, self.ctl_out = ctl_in, ctl_out
        self.pid = os.getpid()
        self.inbuf = b""
        self.eof = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness decides; it is in its own session
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.private_fds = [ctl_in, ctl_out, self.wake_r, self.wake_w]
        self.store_host: tuple[int, int, int] | None = None  # (pid, requests fd, replies fd), once started
        import torch

        self.torch_seed_is_fixed = torch.initial_seed() == TORCH_LEGACY_DEFAULT_SEED

    def _on_sigterm(self, *_):
        raise _Shutdown()

    # -- protocol ------------------------------------------------------------------------------
    def send(self, **event) -> None:
        data = (json.dumps(event) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.ctl_out, data):]
        except BrokenPipeError:
            self.eof = True  # the harness is gone

    def read_message(self, timeout: float | None) -> dict | None:
        """The next control message, or None on timeout / SIGCHLD wake-up / end of input."""
        if b"\n" not in self.inbuf:
            watched = [self.wake_r] if self.eof else [self.ctl_in, self.wake_r]
            readable, _, _ = select.select(watched, [], [], timeout)
            if self.wake_r in readable:
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if self.ctl_in in readable:
                chunk = os.read(self.ctl_in, 65536)
                if chunk:
                    self.inbuf += chunk
                else:
                    self.eof = True
        if b"\n" in self.inbuf:
            line, self.inbuf = self.inbuf.split(b"\n", 1)
            return json.loads(line)
        return None

    def serve(self) -> None:
        self.send(event="ready", pid=self.pid, threads=len(os.listdir("/proc/self/task")))
        while not self.eof:
            msg = self.read_message(None)
            self.reap_orphans()
            if msg is None:
                continue
            if msg.get("op") == "launch":
                try:
                    self.send(event="done", **self.run_launch(msg))
                except _Shutdown:
                    raise
                except Exception as e:
                    traceback.print_exc()
                    self.send(event="error", message=f"{type(e).__name__}: {e}")
            # "kill" outside a launch: nothing to do

    # -- processes -----------------------------------------------------------------------------
    def fork(self, child) -> int:
        """Fork; the child runs ``child()`` with the zygote's signal setup and private fds undone."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for fd in self.private_fds + (list(self.store_host[1:]) if self.store_host else []):
                os.close(fd)
            if not self.reap.die_with_parent() or os.getppid() != self.pid:
                os._exit(1)
            child()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    def kept_store(self, addr: str) -> tuple[str, int]:
        """A fresh rendezvous store for one launch from the store host (``harness.launch.store.serve_stores``),
        started on first use and kept across launches: (host for MASTER_ADDR, port). A store host that
        died or does not answer is replaced once."""
        for _ in range(2):
            if self.store_host is None:
                self.store_host = self.start_store_host()
            pid, requests_w, replies_r = self.store_host
            try:
                os.write(requests_w, f"{addr}\n".encode())
                readable, _, _ = select.select([replies_r], [], [], 60)
                line = os.read(replies_r, 256) if readable else b""
            except OSError:
                line = b""
            if line.startswith(b"error "):
                raise RuntimeError(f"the rendezvous store cannot listen on {addr}: {line[6:].decode().strip()}")
            if line.strip():
                port, host = line.decode().split()
                return host, int(port)
            self.stop_store_host()
        raise RuntimeError("the rendezvous store host did not answer (see the zygote log)")

    def start_store_host(self) -> tuple[int, int, int]:
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()

        def host():
            os.close(requests_w)
            os.close(replies_r)
            from harness.launch.store import serve_stores

            serve_stores(requests_r, replies_w)

        pid = self.fork(host)
        os.close(requests_r)
        os.close(replies_w)
        return pid, requests_w, replies_r

    def stop_store_host(self) -> None:
        if self.store_host is None:
            return
        pid, requests_w, replies_r = self.store_host
        self.store_host = None
        for fd in (requests_w, replies_r):
            os.close(fd)
        _kill_and_reap(pid)

    def start_store(self, addr: str) -> tuple[int, str, int, int]:
        """Fork a child hosting the rendezvous TCPStore, listening on ``addr`` only, on a port the OS
        picks (``harness.launch.store``): (pid, host for MASTER_ADDR, port, keepalive fd)."""
        port_r, port_w = os.pipe()
        alive_r, alive_w = os.pipe()

        def host():
            os.close(port_r)
            os.close(alive_w)
            from harness.launch.store import host_store

            store, host, port = host_store(addr)
            os.write(port_w, f"{port} {host}\n".encode())
            os.read(alive_r, 1)  # until the zygote closes its end
            os._exit(0)

        pid = self.fork(host)
        os.close(port_w)
        os.close(alive_r)
        try:
            readable, _, _ = select.select([port_r], [], [], 60)
            line = os.read(port_r, 256) if readable else b""
        finally:
            os.close(port_r)
        if not line.strip():
            os.close(alive_w)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise RuntimeError("the rendezvous store did not start (see the zygote log)")
        port, host = line.decode().split()
        return pid, host, int(port), alive_w

    def fork_rank(self, msg: dict, rank: int, env: dict) -> int:
        from harness.launch import rank as rank_main

        def become_rank():
            os.setpgid(0, 0)
            rank_main.redirect_stdio(os.path.join(msg["log_dir"], f"rank{rank}.log"))
            os.environ.clear()
            os.environ.update(env)
            if msg.get("cwd"):
                os.chdir(msg["cwd"])
            self.reseed()
            rank_main.run_and_exit(msg.get("script"), msg.get("module"), msg.get("args", []))

        pid = self.fork(become_rank)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it first, or already exited
        return pid

    def reseed(self) -> None:
        """Fresh RNG states, as a new interpreter would have: a fork must not hide nondeterminism."""
        import random

        import numpy as np
        import torch

        random.seed()
        np.random.seed()
        if self.torch_seed_is_fixed:
            torch.manual_seed(TORCH_LEGACY_DEFAULT_SEED)
        else:
            torch.seed()

    def run_launch(self, msg: dict) -> dict:
        from dataclasses import asdict

        from harness.launch.spec import rank_env
        from harness.launch.supervisor import RankSupervisor

        t0 = time.monotonic()
        nproc = int(msg["nproc"])
        log_dir = msg["log_dir"]
        os.makedirs(log_dir, exist_ok=True)
        if msg.get("store", STORE_KEPT) == STORE_KEPT:
            store_pid, store_alive = None, None
            host, port = self.kept_store(msg["master_addr"])
        else:
            store_pid, host, port, store_alive = self.start_store(msg["master_addr"])
        pids: list[int] = []  # rank -> pid

        def wait(timeout: float) -> str | None:
            """A control message or a SIGCHLD wake-up; a kill request or end of input stops the launch."""
            msg_in = self.read_message(timeout)
            if self.eof:
                return "the harness is gone"
            if msg_in is not None and msg_in.get("op") == "kill":
                return str(msg_in.get("reason") or "killed by the harness")
            return None

        try:
            for r in range(nproc):
                pids.append(self.fork_rank(msg, r, rank_env(msg["env"], r, nproc, host, port)))
            self.send(event="started", pids=pids, port=port, host=host)
            supervisor = RankSupervisor(pids, [os.path.join(log_dir, f"rank{r}.log") for r in range(nproc)],
                                        t0=t0, timeout_s=float(msg["timeout_s"]), wait=wait)
            outcome = supervisor.run()
        except BaseException:
            for pid in pids:  # ranks forked before a failure to fork the others (the supervisor reaped its own)
                self.reap.kill_group(pid)
            for pid in pids:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            raise
        finally:
            if store_pid is not None:
                os.close(store_alive)
                _kill_and_reap(store_pid)
            self.reap_orphans()
        return {"timed_out": outcome.timed_out, "stopped": outcome.stopped,
                "exits": [asdict(e) for e in outcome.exits]}

    def reap_orphans(self, everything: bool = False) -> None:
        """Kill and reap descendants of finished ranks that were re-parented to the zygote (``everything``:
        the store host too)."""
        kept = None if everything or self.store_host is None else self.store_host[0]
        orphans = [pid for pid in _children(self.pid) if pid != kept]
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in orphans:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def main(log_path: str | None = None) -> None:
    """Serve until end of input. ``log_path``: where stderr goes, deleted at exit if nothing was logged."""
    ctl_in, ctl_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # stray prints go to the zygote's log, never into the protocol
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    for name in OPTIONAL_PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as e:  # being written, or broken: ranks import it themselves
            print(f"zygote: optional preload {name} failed: {e}", file=sys.stderr)
    from harness.launch import reap

    reap.become_subreaper()
    import gc

    gc.collect()
    gc.freeze()  # forked ranks neither scan nor copy-on-write the preloaded objects when they collect
    zygote = Zygote(ctl_in, ctl_out)
    try:
        zygote.serve()
    except _Shutdown:
        pass
    finally:
        # End of input or SIGTERM: nothing must outlive the zygote. A rank leads its own process
        # group: kill the groups, then reap_orphans kills and reaps every child.
        for pid in _children(zygote.pid):
            reap.kill_group(pid)
        zygote.reap_orphans(everything=True)
        if log_path and os.path.isfile(log_path) and os.path.getsize(log_path) == 0:
            os.unlink(log_path)
    os._exit(0)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


if __name__ == "__main__":
    main()
