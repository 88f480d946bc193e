"""Watching an attempt while it runs: progress lines, and a stall limit that catches a hang in seconds.

The launcher calls ``AttemptMonitor.watch(elapsed)`` about twice a second (``LaunchSpec.watch``). It
reads only the tail of each rank's trace file and the file's modification time: which step each rank
last recorded, and when. No rank recording anything for ``stall_s`` seconds stops the attempt.

The default stall limit comes from the baseline (``stall_limit``): STALL_FACTOR times the longest gap
between two consecutive rows of one rank (steps, checkpoint points, start, finish), at least
STALL_FLOOR_S. Before an attempt's first row (imports, process-group setup, loading a checkpoint)
the limit is at least STARTUP_S.
"""

from __future__ import annotations

import json
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
_TAIL_BYTES = 16384


def stall_limit(base_trace) -> float:
    """The stall limit for a trial of this baseline (see the module docstring)."""
    gaps = base_trace.step_times()
    if not gaps:
        return UNKNOWN_STALL_S
    return max(STALL_FLOOR_S, STALL_FACTOR * max(gaps))


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

    def __init__(self, trace_dir: str, nproc: int, attempt: int, *, stall_s: float, say=None):
        self.paths = [os.path.join(trace_dir, rank_trace_file(r)) for r in range(nproc)]
        self.attempt = attempt
        self.stall_s = stall_s
        self.say = say or (lambda line: None)
        self.started = time.time()
        self.next_progress = PROGRESS_EVERY_S
        self.sizes = [self._size(p) for p in self.paths]
        self.active_since = [None] * nproc  # time of this attempt's latest write per rank

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
        now = time.time()
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
        now = time.time()
        latest = max((t for t in self.active_since if t is not None), default=None)
        if latest is None:
            quiet, limit = now - self.started, max(self.stall_s, STARTUP_S)
        else:
            quiet, limit = now - latest, self.stall_s
        if quiet > limit:
            return (f"stalled: no rank recorded anything for {quiet:.0f} s (stall limit {limit:.0f} s, "
                    f"--stall to change); {self.describe()}")
        if elapsed >= self.next_progress:
            self.next_progress = elapsed + PROGRESS_EVERY_S
            self.say(f"attempt {self.attempt}: running for {elapsed:.0f} s; {self.describe()}")
        return None
