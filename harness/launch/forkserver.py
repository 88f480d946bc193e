"""ForkServerLauncher: ranks forked from a warm zygote with torch already imported (the default).

A launch costs a fork plus the script's own work, instead of a fresh interpreter importing torch
in every rank. The zygote is started when the launcher is created, so its import overlaps the
caller's other work (baseline lookup, argument parsing). One zygote serves the launches whose
start-up environment (PYTHONHASHSEED, OMP_NUM_THREADS, PYTHONPATH, ...) matches its own; another
environment gets another zygote. ``PYTHONHASHSEED=random`` cannot be emulated by forking, so such
launches go to a SubprocessLauncher.

Launches through one launcher run one at a time (a lock serialises them); ``close()`` may be called
from another thread during a launch. ``LaunchSpec.watch`` runs here, in the harness: while the ranks
run, the events from the zygote are read with a short timeout so that it is called about twice a
second, and a reason it returns is sent to the zygote as ``{"op": "kill", "reason": ...}``.

``store``: where each launch's rendezvous store comes from: ``"kept"`` (default), a store host the
zygote keeps across launches, which has a fresh store ready for each; ``"per-launch"``, a store process
forked for each launch (the old way: a fork and a store start-up more per launch, about 40 ms on a
lightly loaded 2-core machine and 130 ms at load 12, bench/trial_speed.py; for side-by-side benchmarks). Its
default comes from ``HARNESS_POOL_STORE`` when set, so a benchmark can choose it for a whole command.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import weakref

from harness import run_env
from harness.launch import reap
from harness.launch.spec import (LauncherBase, LaunchError, LaunchResult, LaunchSpec, RankExit, base_env, job_env,
                                 log_tail, startup_env)
from harness.launch.supervisor import WATCH_INTERVAL_S

_HARNESS_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ZYGOTE_BOOT = ("import sys; sys.path.append(sys.argv[1]); "
                "from harness.launch.zygote import main; main(log_path=sys.argv[2])")
READY_TIMEOUT_S = 180.0
REPLY_GRACE_S = 30.0  # how long past a launch's own timeout the zygote may take to answer
STORES = ("kept", "per-launch")  # harness.launch.zygote.STORE_KEPT, STORE_PER_LAUNCH (not imported here)
STORE_ENV = run_env.POOL_STORE  # the default of ``store`` (a benchmark's knob: bench/fuzz_throughput.py)
CLOSE_WAIT_S = 10.0  # how long close() waits for a launch in another thread to end before stopping its zygote


class _Zygote:
    """The harness side of one zygote process."""

    def __init__(self, env: dict[str, str], store: str = "kept"):
        self.store = store
        fd, self.log_path = tempfile.mkstemp(prefix="harness-zygote-", suffix=".log")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE_BOOT, _HARNESS_ROOT, self.log_path],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fd, env=env,
                start_new_session=True, close_fds=True, bufsize=0)
        finally:
            os.close(fd)
        self.buf = b""
        self.ready: dict | None = None
        self.rank_pids: list[int] = []  # of the launch in flight

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self) -> str:
        return log_tail(self.log_path, 20)

    def send(self, msg: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        except (BrokenPipeError, ValueError):
            raise LaunchError(f"the fork server died; its log {self.log_path} ends:\n{self.log_tail()}") from None

    def read_event(self, deadline: float) -> dict | None:
        """The next event, or None when the deadline passed. Raises LaunchError if the zygote died."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise LaunchError(f"the fork server exited (code {self.proc.wait()}); "
                                      f"its log {self.log_path} ends:\n{self.log_tail()}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self) -> dict:
        if self.ready is None:
            event = self.read_event(time.monotonic() + READY_TIMEOUT_S)
            if event is None or event.get("event") != "ready":
                raise LaunchError(f"the fork server did not start; its log {self.log_path} ends:\n{self.log_tail()}")
            self.ready = event
        return self.ready

    def kill_ranks(self) -> None:
        for pid in self.rank_pids:
            reap.kill_group(pid)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the zygote (it kills whatever it forked); its log is kept only if it died by itself."""
        self.kill_ranks()
        died_by_itself = self.proc.poll() not in (None, 0)
        if self.ready is None and self.proc.poll() is None:
            reap.kill_group(self.proc.pid)  # still importing, so it has forked nothing: no need to wait
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # end of input: the zygote kills everything and exits
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                reap.kill_group(self.proc.pid)
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if not died_by_itself:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass

    def launch(self, spec: LaunchSpec, env: dict[str, str]) -> LaunchResult:
        self.wait_ready()
        t0 = time.monotonic()
        self.send({"op": "launch", "nproc": spec.nproc, "script": spec.script, "module": spec.module,
                   "args": list(spec.args), "cwd": spec.cwd or os.getcwd(), "env": env,
                   "log_dir": os.path.abspath(spec.log_dir), "timeout_s": spec.timeout_s,
                   "master_addr": spec.master_addr, "store": self.store})
        deadline = t0 + spec.timeout_s + REPLY_GRACE_S
        watch, next_watch = spec.watch, t0 + WATCH_INTERVAL_S
        try:
            while True:
                wake = min(deadline, next_watch) if watch is not None and self.rank_pids else deadline
                event = self.read_event(wake)
                if event is None:
                    now = time.monotonic()
                    if now >= deadline:
                        raise LaunchError(f"the fork server did not answer within "
                                          f"{spec.timeout_s + REPLY_GRACE_S:.0f} s")
                    if watch is not None and self.rank_pids and now >= next_watch:
                        reason = watch(now - t0)
                        next_watch = time.monotonic() + WATCH_INTERVAL_S
                        if reason is not None:
                            watch = None  # once: the zygote tears the launch down and reports "stopped"
                            self.send({"op": "kill", "reason": str(reason)})
                    continue
                if event.get("event") == "started":
                    self.rank_pids = event["pids"]
                    next_watch = t0 + WATCH_INTERVAL_S
                elif event.get("event") in ("done", "error"):
                    break
        except BaseException:
            self.abort()
            raise
        self.rank_pids = []
        if event["event"] == "error":
            raise LaunchError(f"the fork server could not launch: {event.get('message')}; "
                              f"its log {self.log_path} ends:\n{self.log_tail()}")
        return LaunchResult(exits=[RankExit(**e) for e in event["exits"]], timed_out=event["timed_out"],
                            stopped=event.get("stopped"), wall_s=time.monotonic() - t0,
                            launch_id=env[run_env.LAUNCH_ID])

    def abort(self) -> None:
        """Interrupted (Ctrl-C) or broken mid-launch: kill the ranks from here at once, then let the
        zygote report the launch as done so the protocol stays in step; otherwise retire the zygote."""
        self.kill_ranks()
        try:
            self.send({"op": "kill"})
            grace = time.monotonic() + 5.0
            while (event := self.read_event(grace)) is not None and event.get("event") != "done":
                pass
            if event is None:
                raise LaunchError("no answer")
            self.rank_pids = []
        except BaseException:
            self.close(timeout=1.0)


class ForkServerLauncher(LauncherBase):
    """Launch ranks by forking them from a warm zygote (see the module docstring)."""

    def __init__(self, store: str | None = None):
        store = store or os.environ.get(STORE_ENV) or "kept"
        if store not in STORES:
            raise ValueError(f"store must be one of {', '.join(STORES)}, got {store!r} (from the argument or "
                             f"{STORE_ENV})")
        self._store = store
        self._zygotes: dict[tuple, _Zygote] = {}
        self._fallback = None
        self._lock = threading.Lock()  # one launch at a time; close() waits for it
        self._closed = False
        _LIVE.add(self)
        self._zygote_for(base_env())

    def _zygote_for(self, env: dict[str, str]) -> _Zygote:
        key = startup_env(env)
        zygote = self._zygotes.get(key)
        if zygote is None or not zygote.alive():
            if zygote is not None:
                zygote.close()
            zygote = self._zygotes[key] = _Zygote({k: v for k, v in env.items() if k != run_env.LAUNCH_ID},
                                                  self._store)
        return zygote

    def launch(self, spec: LaunchSpec) -> LaunchResult:
        env = job_env(spec)
        if env.get("PYTHONHASHSEED", "random") in ("", "random"):
            with self._lock:
                if self._closed:
                    raise LaunchError("this launcher is closed")
                if self._fallback is None:
                    from harness.launch.subproc import SubprocessLauncher

                    self._fallback = SubprocessLauncher()
                fallback = self._fallback
            return fallback.launch(spec)
        with self._lock:
            if self._closed:
                raise LaunchError("this launcher is closed")
            return self._zygote_for(env).launch(spec, env)

    def close(self) -> None:
        """Stop the zygotes. Safe from another thread during a launch: that launch's ranks are killed at
        once (it returns with them killed, or raises LaunchError), then the zygotes are stopped."""
        self._closed = True
        for zygote in list(self._zygotes.values()):
            zygote.kill_ranks()  # ends a launch in flight in another thread within moments
        locked = self._lock.acquire(timeout=CLOSE_WAIT_S)
        try:
            for zygote in list(self._zygotes.values()):
                zygote.close()
            self._zygotes.clear()
            if self._fallback is not None:
                self._fallback.close()
        finally:
            if locked:
                self._lock.release()


_LIVE: "weakref.WeakSet[ForkServerLauncher]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for launcher in list(_LIVE):
        launcher.close()

