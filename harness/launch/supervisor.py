"""RankSupervisor: wait for the ranks of one launch, tear them down, reap them.

One loop for the launchers that own their rank processes (the fork server's zygote and the
``SubprocessLauncher``); each supplies how to wait for an event and how to reap a rank.

Rules, as a job manager applies them:

- when a rank exits, its whole process group is SIGKILLed while its zombie still pins the group id
  (stray descendants of a finished rank do not outlive it), then the rank is reaped;
- when a rank exits abnormally (nonzero, or by a signal), the other ranks' process groups are
  SIGKILLed at once and those ranks are marked ``torn_down``;
- a launch past its deadline is torn down the same way and marked ``timed_out``;
- ``watch(elapsed_s)`` (``LaunchSpec.watch``) is called about every ``WATCH_INTERVAL_S`` while every
  rank still runs; a string it returns tears the launch down and becomes ``stopped``; so does a
  reason returned by ``wait`` (e.g. the harness asked the zygote to kill the launch);
- every rank is killed and reaped on every path: an exception anywhere in the loop (a ``watch``
  that raises, Ctrl-C) kills and reaps what still runs, then propagates.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from harness.launch import reap
from harness.launch.spec import RankExit

WATCH_INTERVAL_S = 0.5  # how often watch() is called while the ranks run
TORN_DOWN_POLL_S = 1.0  # wait() timeout once the ranks were killed (an exit wakes it up before)


@dataclass
class Supervised:
    """How a supervised launch ended: one exit per rank (in rank order)."""

    exits: list[RankExit]
    timed_out: bool = False
    stopped: str | None = None


def _waitpid_exitcode(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class RankSupervisor:
    """Supervise ``pids`` (``pids[r]`` is rank r: a child of this process that leads its own process
    group) until every rank has exited and been reaped.

    wait(timeout): block for at most ``timeout`` seconds, returning early when a rank may have exited
        (a pidfd became readable, a SIGCHLD arrived); returns a reason to stop the launch, or None.
    reap_rank(rank): reap that rank, which has exited, and return its exit code as subprocess does
        (-N for signal N); default ``os.waitpid``. A ``subprocess.Popen`` rank passes ``Popen.wait``.
    watch(elapsed_s): see the module docstring; it runs in the caller's process and thread.
    """

    def __init__(self, pids: Sequence[int], log_paths: Sequence[str], *, t0: float, timeout_s: float,
                 wait: Callable[[float], str | None], reap_rank: Callable[[int], int] | None = None,
                 watch: Callable[[float], str | None] | None = None):
        if len(pids) != len(log_paths):
            raise ValueError("one log path per rank")
        self.pids = list(pids)
        self.log_paths = list(log_paths)
        self.t0 = t0
        self.deadline = t0 + timeout_s
        self.wait = wait
        self.reap_rank = reap_rank or (lambda r: _waitpid_exitcode(self.pids[r]))
        self.watch = watch
        self.exits: dict[int, RankExit] = {}
        self.torn_down: set[int] = set()
        self.timed_out = False
        self.stopped: str | None = None
        self._killed = False  # a teardown happened (failure, timeout or stop)

    def running(self) -> list[int]:
        """Ranks not reaped yet."""
        return [r for r in range(len(self.pids)) if r not in self.exits]

    def run(self) -> Supervised:
        next_watch = self.t0 + WATCH_INTERVAL_S
        try:
            while True:
                self._poll()
                if len(self.exits) == len(self.pids):
                    break
                now = time.monotonic()
                if now >= self.deadline and not self.timed_out and self.stopped is None:
                    self.timed_out = True
                    self.teardown()
                if self.watch is not None and not self._killed and now >= next_watch:
                    reason = self.watch(now - self.t0)
                    now = time.monotonic()
                    next_watch = now + WATCH_INTERVAL_S
                    if reason is not None:
                        self.stop(str(reason))
                if self._killed:
                    timeout = TORN_DOWN_POLL_S
                else:
                    wake = min(self.deadline, next_watch) if self.watch is not None else self.deadline
                    timeout = max(0.0, wake - now)
                reason = self.wait(timeout)
                if reason is not None:
                    self.stop(reason)
        except BaseException:
            self.kill_and_reap()
            raise
        return Supervised(exits=[self.exits[r] for r in range(len(self.pids))], timed_out=self.timed_out,
                          stopped=self.stopped)

    def stop(self, reason: str) -> None:
        """Tear the launch down; ``reason`` becomes ``stopped`` unless a teardown already happened."""
        if not self._killed:
            self.stopped = reason
        self.teardown()

    def teardown(self) -> None:
        """SIGKILL the process group of every rank still running; mark those ranks torn down."""
        self._killed = True
        for r in self.running():
            self.torn_down.add(r)
            reap.kill_group(self.pids[r])

    def kill_and_reap(self) -> None:
        """Kill every rank still running and reap it (the exceptional path)."""
        live = self.running()
        for r in live:
            reap.kill_group(self.pids[r])
        for r in live:
            try:
                self.reap_rank(r)
            except ChildProcessError:
                pass

    def _poll(self) -> None:
        """Record the ranks that have exited: kill each one's group while its zombie pins the group id,
        then reap it; an abnormal exit tears the others down."""
        for r in self.running():
            pid = self.pids[r]
            try:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                    continue
                reap.kill_group(pid)
            except ChildProcessError:
                pass  # reaped behind our back (its group id may be reused now): reap_rank says what it can
            try:
                code = self.reap_rank(r)
            except ChildProcessError:
                code = None
            self.exits[r] = RankExit(rank=r, pid=pid, returncode=code, log_path=self.log_paths[r],
                                     elapsed_s=time.monotonic() - self.t0, torn_down=r in self.torn_down)
            if code != 0:
                self.teardown()
