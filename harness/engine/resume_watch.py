"""Watching a resumed attempt for ranks that restored different checkpoints, while it runs.

Ranks that resume from different steps (per-rank files saved in place, a kill between two ranks'
saves) usually hang at their first mismatched collective, or train on silently. Either way the
answer is known as soon as two ranks have shown where they resumed: a ``checkpoint.loaded`` event
(its step), or, for a rank that loaded nothing, its first step row (the step before it): the rule of
``trace_schema.resumed_from``, which the oracle applies to the whole trace afterwards. The attempt
is stopped then, and judged ``ranks_resumed_apart`` (harness.oracle.verdict), not left to stall.
"""

from __future__ import annotations

import json
import os

from harness.trace_schema import Point, parse_row, rank_trace_file, resumed_from

_LOADED = f'"{Point.LOADED}"'.encode()  # a cheap test before a row is parsed

class ResumeWatch:
    """``check()`` returns a reason to stop the attempt once two ranks restored different steps.

    Made before the attempt is launched: each rank's file is read from its size then (the earlier attempts'
    rows) onwards, every byte once, until the rank's first row that says where it resumed."""

    def __init__(self, trace_dir: str, nproc: int, attempt: int):
        self.paths = [os.path.join(trace_dir, rank_trace_file(r)) for r in range(nproc)]
        self.attempt = attempt
        self.loaded: dict[int, int] = {}
        self.offsets = [_size(p) for p in self.paths]
        self.partial = [b""] * nproc  # a line not yet complete at the last read

    def _scan(self, rank: int, path: str) -> None:
        try:
            with open(path, "rb") as f:
                f.seek(self.offsets[rank])
                data = f.read()
        except OSError:
            return
        self.offsets[rank] += len(data)
        lines = (self.partial[rank] + data).split(b"\n")
        self.partial[rank] = lines.pop()
        for line in lines:
            if _LOADED not in line and b'"kind":"step"' not in line:
                continue
            try:
                row = parse_row(json.loads(line))
            except ValueError:  # a torn or foreign line (RowError is one)
                continue
            step = resumed_from(row) if row.attempt == self.attempt else None
            if step is not None:
                self.loaded.setdefault(rank, step)
            if rank in self.loaded:
                return

    def check(self) -> str | None:
        for r, p in enumerate(self.paths):
            if r not in self.loaded:
                self._scan(r, p)
        if len(set(self.loaded.values())) > 1:
            each = ", ".join(f"rank {r} step {s}" for r, s in sorted(self.loaded.items()))
            return f"ranks resumed from different checkpoints ({each})"
        return None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
