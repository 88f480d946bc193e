"""Watching an attempt while it runs: progress lines, and a stall limit that catches a hang in seconds.

The launcher calls ``AttemptMonitor.watch(elapsed)`` about twice a second (``LaunchSpec.watch``). It
reads only the tail of each rank's trace file and the file's modification time: which step each rank
last recorded, and when. No rank recording anything for ``stall_s`` seconds stops the attempt.

The default stall limit comes from the baseline (``stall_limit``): STALL_FACTOR times the longest gap
between two consecutive rows of one rank (steps, checkpoint points, start, finish), at least
STALL_FLOOR_S. Before an attempt's first row (imports, process-group setup, loading a checkpoint)
the limit is at least STARTUP_S.

The limit is in seconds of a fair share of the machine, so load alone never makes a stall: the
monitor re-reads the load at each check (``LoadGauge``) and counts each second of quiet as
1 / max(1, load / CPUs) of a second, where load is the larger of the 1-minute load average and a
5-second average of the processes runnable now (the load average lags a burst by a minute). Six
concurrent trials of 2 ranks on 2 CPUs give each rank about a sixth of a core: the limit stretches
about sixfold while that lasts, and shrinks back when the load goes. The baseline's gaps are taken
as measured on an unloaded machine (a baseline measured under load has longer gaps, hence a longer
limit). The stretch is at most MAX_LOAD_FACTOR; ``--timeout`` bounds every launch regardless.

``is_stall(verdict, outcome)``: whether a trial's verdict is one that load alone can cause (a stall,
or a hang before any resume); ``harness fuzz`` and ``harness certify`` retry those and never count
them as resume bugs.
"""

from __future__ import annotations

import json
import math
import os
import time

from harness.trace_schema import rank_trace_file

#: Multiple of the baseline's longest gap between two rows that counts as a stall.
STALL_FACTOR = 20.0
#: The stall limit is never shorter than this (a loaded machine pauses processes for seconds).
STALL_FLOOR_S = 15.0
#: Until the attempt records its first row, the limit is at least this (interpreter and torch start-up).
STARTUP_S = 60.0
#: Without timed rows in the baseline (an older cache entry), this limit is used.
UNKNOWN_STALL_S = 120.0
#: How often a progress line is printed while an attempt runs.
PROGRESS_EVERY_S = 10.0
#: The stall limit stretches with the load by at most this factor (``--timeout`` bounds a launch anyway).
MAX_LOAD_FACTOR = 32.0
#: Time constant of the average of the runnable processes (seconds).
RUNNABLE_TAU_S = 5.0
_TAIL_BYTES = 16384


def stall_limit(base_trace) -> float:
    """The stall limit for a trial of this baseline, on an unloaded machine (see the module docstring)."""
    gaps = base_trace.step_times()
    if not gaps:
        return UNKNOWN_STALL_S
    return max(STALL_FLOOR_S, STALL_FACTOR * max(gaps))


def is_stall(verdict, outcome) -> bool:
    """Whether a trial's verdict is one that machine load alone can cause, never a resume bug: a stall
    (no rank recorded anything for the stall limit), or a hang before any resume (``timeout`` with
    verdict error: attempt 0 ran past --timeout). A hang after a resume (``timeout``, fail) is not."""
    from harness.oracle import Outcome, VerdictKind

    outcome = str(outcome)
    return outcome == Outcome.STALL or (outcome == Outcome.TIMEOUT and str(verdict) == VerdictKind.ERROR)


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def read_load() -> tuple[float, int | None]:
    """(1-minute load average, processes runnable now or None) of the machine."""
    try:
        with open("/proc/loadavg") as f:
            fields = f.read().split()
        return float(fields[0]), int(fields[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0], None
    except (AttributeError, OSError):
        return 0.0, None


class LoadGauge:
    """How many times over the machine is loaded: max(1, load / CPUs), re-read at each call (see the
    module docstring). ``read`` and ``cpus`` are for tests."""

    def __init__(self, *, cpus: int | None = None, read=read_load, clock=time.monotonic):
        self.cpus = cpus or available_cpus()
        self._read, self._clock = read, clock
        self._runnable: float | None = None  # its average over about RUNNABLE_TAU_S
        self._t: float | None = None
        self.load = 0.0  # the load of the last reading

    def factor(self) -> float:
        load1, running = self._read()
        now = self._clock()
        if running is not None:
            running = max(0, running - 1)  # this process, which is running while it reads
            if self._runnable is None:
                self._runnable = float(running)
            else:
                w = 1.0 - math.exp(-max(0.0, now - self._t) / RUNNABLE_TAU_S)
                self._runnable += w * (running - self._runnable)
            self._t = now
        self.load = max(load1, self._runnable or 0.0)
        return min(MAX_LOAD_FACTOR, max(1.0, self.load / self.cpus))


def _secs(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}".removesuffix(".0")


def _last_row(path: str, attempt: int):
    """(last step recorded in `attempt`, whether the rank recorded any row in it) from a file's tail."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            lines = f.read().split(b"\n")
    except OSError:
        return None, False
    seen = False
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or row.get("attempt", 0) != attempt:
            if seen or (isinstance(row, dict) and row.get("attempt", 0) < attempt):
                break
            continue
        seen = True
        if row.get("kind") in ("step", "event", "fault") and isinstance(row.get("step"), int):
            return row["step"], True
    return None, seen


class AttemptMonitor:
    """Progress and stall detection for one attempt, from its trace files (see the module docstring)."""

    def __init__(self, trace_dir: str, nproc: int, attempt: int, *, stall_s: float, say=None,
                 gauge: LoadGauge | None = None, clock=time.time):
        self.paths = [os.path.join(trace_dir, rank_trace_file(r)) for r in range(nproc)]
        self.attempt = attempt
        self.stall_s = stall_s
        self.say = say or (lambda line: None)
        self.gauge = gauge or LoadGauge()
        self._clock = clock  # wall time, as the trace files' modification times
        self.started = clock()
        self.next_progress = PROGRESS_EVERY_S
        self.sizes = [self._size(p) for p in self.paths]
        self.active_since = [None] * nproc  # time of this attempt's latest write per rank
        self._since = None  # start of the current quiet spell (the latest write, or the start)
        self._checked = None  # when the quiet spell was last counted
        self._quiet = 0.0  # its length in seconds of a fair share of the machine (load-weighted)
        self._peak = 1.0  # the highest load factor seen during it

    @staticmethod
    def _size(path: str) -> int:
        try:
            return os.stat(path).st_size
        except OSError:
            return 0

    def _poll(self) -> None:
        for r, p in enumerate(self.paths):
            try:
                st = os.stat(p)
            except OSError:
                continue
            if st.st_size != self.sizes[r]:
                self.sizes[r] = st.st_size
                self.active_since[r] = st.st_mtime

    def status(self) -> list[tuple[int, int | None, float | None]]:
        """Per rank: (rank, last step of this attempt, seconds since it last recorded anything)."""
        now = self._clock()
        out = []
        for r, p in enumerate(self.paths):
            step, _ = _last_row(p, self.attempt) if self.active_since[r] is not None else (None, False)
            t = self.active_since[r]
            out.append((r, step, None if t is None else now - t))
        return out

    def describe(self) -> str:
        parts = []
        for r, step, ago in self.status():
            if ago is None:
                parts.append(f"rank {r}: no row yet")
            else:
                parts.append(f"rank {r}: step {step if step is not None else '-'} ({ago:.0f} s ago)")
        return "; ".join(parts)

    def watch(self, elapsed: float) -> str | None:
        """Called by the launcher while the ranks run: returns a reason to stop them, or None."""
        self._poll()
        now = self._clock()
        latest = max((t for t in self.active_since if t is not None), default=None)
        since = self.started if latest is None else latest
        limit = max(self.stall_s, STARTUP_S) if latest is None else self.stall_s
        factor = self.gauge.factor()
        if since != self._since:  # a rank wrote: a new quiet spell begins
            self._since, self._checked, self._quiet, self._peak = since, since, 0.0, 1.0
        self._quiet += max(0.0, now - self._checked) / factor  # a second under load n counts 1/n
        self._checked = now
        self._peak = max(self._peak, factor)
        if self._quiet > limit:
            quiet = now - since
            load = (f", stretched to {_secs(quiet)} s by the machine's load (load {self.gauge.load:.1f} on "
                    f"{self.gauge.cpus} CPU(s), up to {self._peak:.1f}x)" if self._peak > 1.0 else "")
            return (f"stalled: no rank recorded anything for {_secs(quiet)} s (stall limit {_secs(limit)} s{load}, "
                    f"--stall to change); {self.describe()}")
        if elapsed >= self.next_progress:
            self.next_progress = elapsed + PROGRESS_EVERY_S
            self.say(f"attempt {self.attempt}: running for {elapsed:.0f} s; {self.describe()}")
        return None
