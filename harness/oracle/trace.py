"""Read a recorded trace folder (docs/design.md, section 2) after the processes are gone.

    trace_dir/rank{r}.jsonl               one JSON row per line, appended across attempts
    trace_dir/final/rank{r}.safetensors   final tensors (probe.finish), "/"-joined keys
    trace_dir/final/rank{r}.json          final non-tensor leaves, same keys

A SIGKILL lands between two `os.write` calls, so rows are whole in practice. Still, a line that is not
valid JSON is tolerated in the two shapes a torn write can leave, each reported in `Trace.warnings`:
the last line of the file (skipped), or a torn row that the next attempt's row was appended to
(the complete row at the end of the line is kept). Any other bad line raises TraceError.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_RANK_FILE = re.compile(r"^rank(\d+)\.jsonl$")


class TraceError(ValueError):
    """A trace folder that cannot be read as a trace."""


def _parse(line: bytes):
    row = json.loads(line)
    if not isinstance(row, dict) or "kind" not in row:
        raise ValueError("not a trace row")
    return row


def _recover(line: bytes) -> dict | None:
    """The complete row at the end of a line that starts with a torn one, if any."""
    pos = line.find(b"{", 1)
    while pos > 0:
        try:
            return _parse(line[pos:])
        except ValueError:
            pos = line.find(b"{", pos + 1)
    return None


def _read_rows(path: Path, warnings: list[str]) -> list[dict]:
    lines = path.read_bytes().split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(_parse(line))
            continue
        except ValueError:
            pass
        row = _recover(line)
        if row is not None:
            rows.append(row)
            warnings.append(f"{path.name} line {i + 1}: a torn row, followed by a complete one (kept)")
        elif i == last:
            warnings.append(f"{path.name} line {i + 1}: skipped a torn last line ({len(line)} bytes)")
        else:
            raise TraceError(f"{path}: line {i + 1} is not a valid trace row: {line[:80]!r}")
    return rows


def event_step(row: dict):
    """The step of an event row: its info's `step` (e.g. the checkpoint's), else the last step seen."""
    info = row.get("info") or {}
    return info["step"] if isinstance(info, dict) and "step" in info else row.get("step")


class Trace:
    """All rows of one run (baseline or trial), by rank, in file order."""

    def __init__(self, path: Path, rows: dict[int, list[dict]], warnings: list[str]):
        self.path = Path(path)
        self._rows = rows
        self.warnings = warnings
        self.ranks = sorted(rows)

    def __repr__(self) -> str:
        return f"Trace({str(self.path)!r}, ranks={self.ranks}, attempts={self.attempts()})"

    def rows(self, rank: int) -> list[dict]:
        return self._rows.get(rank, [])

    def _kind(self, kind: str, rank: int | None = None, attempt: int | None = None) -> list[dict]:
        ranks = self.ranks if rank is None else [rank]
        return [
            row for r in ranks for row in self.rows(r)
            if row.get("kind") == kind and (attempt is None or row.get("attempt", 0) == attempt)
        ]

    def steps(self, rank: int, attempt: int | None = None) -> list[dict]:
        return self._kind("step", rank, attempt)

    def attempts(self) -> list[int]:
        return sorted({row.get("attempt", 0) for r in self.ranks for row in self.rows(r)})

    def faults(self) -> list[dict]:
        """Fault rows of all ranks, by attempt, then rank."""
        return sorted(self._kind("fault"), key=lambda row: row.get("attempt", 0))

    def events(self, name: str | None = None) -> list[dict]:
        """Event rows of all ranks (rank order, file order within a rank)."""
        return [row for row in self._kind("event") if name is None or row.get("name") == name]

    def finished(self, rank: int, attempt: int | None = None) -> bool:
        return bool(self._kind("finish", rank, attempt))

    def final_file(self, rank: int) -> Path | None:
        """The final-state safetensors of `rank`: the file its finish row names, else the default path."""
        for row in reversed(self._kind("finish", rank)):
            if row.get("file") and (self.path / row["file"]).is_file():
                return self.path / row["file"]
        default = self.path / "final" / f"rank{rank}.safetensors"
        return default if default.is_file() else None

    def final_json(self, rank: int) -> Path | None:
        """The final non-tensor leaves of `rank` (beside the safetensors file)."""
        f = self.final_file(rank)
        j = f.with_suffix(".json") if f else self.path / "final" / f"rank{rank}.json"
        return j if j.is_file() else None

    def last_step(self) -> int:
        """The highest step any rank recorded (0 with none)."""
        return max((row["step"] for r in self.ranks for row in self.steps(r)), default=0)

    def attempt_summary(self) -> list[dict]:
        """One dict per attempt: steps run, the fault that ended it, finish, checkpoints committed so far, loads."""
        out, committed = [], set()
        all_faults, all_events = self.faults(), self.events()
        for a in self.attempts():
            steps = [row["step"] for r in self.ranks for row in self.steps(r, a)]
            faults = [row for row in all_faults if row.get("attempt", 0) == a]
            events = [row for row in all_events if row.get("attempt", 0) == a]
            committed |= {event_step(e) for e in events if e.get("name") == "checkpoint.committed"}
            out.append({
                "attempt": a,
                "first_step": min(steps, default=None),
                "last_step": max(steps, default=None),
                "fault": faults[0] if faults else None,
                "finished": bool(self.ranks) and all(self.finished(r, a) for r in self.ranks),
                "committed_steps": sorted(s for s in committed if s is not None),
                "loaded": [e for e in events if e.get("name") == "checkpoint.loaded"],
            })
        return out


def load_trace(trace_dir) -> Trace:
    """Parse every rank{r}.jsonl of a trace folder. A Trace passes through unchanged."""
    if isinstance(trace_dir, Trace):
        return trace_dir
    path = Path(trace_dir)
    if not path.is_dir():
        raise TraceError(f"no trace folder at {path}")
    rows, warnings = {}, []
    for f in sorted(path.iterdir()):
        m = _RANK_FILE.match(f.name)
        if m:
            rank = int(m.group(1))
            rows[rank] = _read_rows(f, warnings)
            bad = sum(1 for row in rows[rank] if row.get("rank", rank) != rank)
            if bad:
                warnings.append(f"{f.name}: {bad} row(s) carry another rank number")
    if not rows:
        warnings.append(f"{path}: no rank*.jsonl files")
    return Trace(path, rows, warnings)
