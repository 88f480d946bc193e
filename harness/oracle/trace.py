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
from dataclasses import dataclass
from pathlib import Path

from harness.trace_schema import (RANK_TRACE_RE, EventRow, FaultRow, FinishRow, Point, Row, RowError, StepRow,
                                  final_leaves_file, final_tensors_file, parse_row)


class TraceError(ValueError):
    """A trace folder that cannot be read as a trace."""


def _parse(line: bytes) -> Row:
    try:
        return parse_row(json.loads(line))
    except RowError as e:
        raise ValueError(str(e)) from None


def _recover(line: bytes) -> Row | None:
    """The complete row at the end of a line that starts with a torn one, if any."""
    pos = line.find(b"{", 1)
    while pos > 0:
        try:
            return _parse(line[pos:])
        except ValueError:
            pos = line.find(b"{", pos + 1)
    return None


def _read_rows(path: Path, warnings: list[str]) -> list[Row]:
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


@dataclass(frozen=True)
class AttemptSummary:
    """What one attempt of a run did, read from its rows."""

    attempt: int
    first_step: int | None
    last_step: int | None
    fault: FaultRow | None  # the first fault row of the attempt (the fault fired)
    finished: bool  # every rank of the trace recorded a finish row in this attempt
    finished_ranks: tuple[int, ...]
    committed_steps: tuple[int, ...]  # checkpoints complete up to the end of this attempt (Trace.complete_checkpoints)
    loaded: tuple[EventRow, ...]  # checkpoint.loaded events of this attempt

    @property
    def resumed_from(self) -> int | None:
        """The step of the checkpoint this attempt loaded, if it loaded one."""
        return self.loaded[0].event_step if self.loaded else None

    def to_json(self) -> dict:
        return {"attempt": self.attempt, "first_step": self.first_step, "last_step": self.last_step,
                "fault": _row_json(self.fault) if self.fault else None, "finished": self.finished,
                "finished_ranks": list(self.finished_ranks), "committed_steps": list(self.committed_steps),
                "loaded": [_row_json(e) for e in self.loaded]}


def _row_json(row: Row) -> dict:
    from harness.trace_schema import row_to_json

    return row_to_json(row)


class Trace:
    """All rows of one run (baseline or trial), by rank, in file order."""

    def __init__(self, path: Path, rows: dict[int, list[Row]], warnings: list[str]):
        self.path = Path(path)
        self._rows = rows
        self.warnings = warnings
        self.ranks = sorted(rows)

    def __repr__(self) -> str:
        return f"Trace({str(self.path)!r}, ranks={self.ranks}, attempts={self.attempts()})"

    def rows(self, rank: int) -> list[Row]:
        return self._rows.get(rank, [])

    def _kind(self, cls: type, rank: int | None = None, attempt: int | None = None) -> list:
        ranks = self.ranks if rank is None else [rank]
        return [row for r in ranks for row in self.rows(r)
                if isinstance(row, cls) and (attempt is None or row.attempt == attempt)]

    def steps(self, rank: int, attempt: int | None = None) -> list[StepRow]:
        return self._kind(StepRow, rank, attempt)

    def attempts(self) -> list[int]:
        return sorted({row.attempt for r in self.ranks for row in self.rows(r)})

    def faults(self) -> list[FaultRow]:
        """Fault rows of all ranks, by attempt, then rank."""
        return sorted(self._kind(FaultRow), key=lambda row: row.attempt)

    def events(self, name: str | None = None) -> list[EventRow]:
        """Event rows of all ranks (rank order, file order within a rank)."""
        return [row for row in self._kind(EventRow) if name is None or row.name == name]

    def event_names(self) -> dict[str, int]:
        """Every point name recorded, with the most times one rank reached it in one attempt."""
        counts: dict[tuple, int] = {}
        for row in self._kind(EventRow):
            key = (row.name, row.rank, row.attempt)
            counts[key] = counts.get(key, 0) + 1
        out: dict[str, int] = {}
        for (name, _, _), n in counts.items():
            out[name] = max(out.get(name, 0), n)
        return out

    def finished(self, rank: int, attempt: int | None = None) -> bool:
        return bool(self._kind(FinishRow, rank, attempt))

    def final_file(self, rank: int) -> Path | None:
        """The final-state safetensors of `rank`: the file its finish row names, else the default path."""
        for row in reversed(self._kind(FinishRow, rank)):
            if row.file and (self.path / row.file).is_file():
                return self.path / row.file
        default = self.path / final_tensors_file(rank)
        return default if default.is_file() else None

    def final_json(self, rank: int) -> Path | None:
        """The final non-tensor leaves of `rank` (beside the safetensors file)."""
        f = self.final_file(rank)
        j = f.with_suffix(".json") if f else self.path / final_leaves_file(rank)
        return j if j.is_file() else None

    def last_step(self) -> int:
        """The highest step any rank recorded (0 with none)."""
        return max((row.step for r in self.ranks for row in self.steps(r)), default=0)

    def step_times(self) -> list[float]:
        """Gaps in seconds between consecutive timed rows of one rank and attempt (start, steps, events)."""
        gaps = []
        for r in self.ranks:
            prev = {}
            for row in self.rows(r):
                t = getattr(row, "time", None)
                if not isinstance(t, (int, float)):
                    continue
                if row.attempt in prev:
                    gaps.append(max(0.0, t - prev[row.attempt]))
                prev[row.attempt] = t
        return gaps

    def complete_checkpoints(self, attempt: int) -> set[int]:
        """Steps whose checkpoint is complete in ``attempt``, by the rule of module ``committed_steps``.

        A ``checkpoint.committed`` event of the checkpointer (no ``via``) is its own atomic commit. One that
        auto mode records after a save call returned (``info.via``: ``torch.save``...) says only that this
        one file is written: the script's checkpoint of step s is complete when no rank has a save of step s
        still in flight, and every rank of the attempt trained past step s (recorded a later step) or
        finished. A two-phase commit (every rank saves, a barrier, rank 0 points ``latest`` at it) is
        therefore complete only once every rank is past its barrier."""
        events = [e for e in self.events() if e.attempt == attempt]
        steps: set[int] = set()
        auto: dict[int, list] = {}
        for e in events:
            if e.name != Point.COMMITTED or not isinstance(e.event_step, int):
                continue
            via = e.info.get("via") if isinstance(e.info, dict) else None
            if via is None or via == "auto":
                steps.add(e.event_step)
            else:
                auto.setdefault(e.event_step, []).append(e)
        if not auto:
            return steps
        ranks = [r for r in self.ranks if any(row.attempt == attempt for row in self.rows(r))]
        top = {r: max((row.step for row in self.steps(r, attempt)), default=-1) for r in ranks}
        done = {r for r in ranks if self.finished(r, attempt)}
        vias = {e.info.get("via") for es in auto.values() for e in es}
        for s, commits in auto.items():
            in_flight = False
            for r in ranks:
                begun = sum(1 for e in events if e.rank == r and e.name in vias and e.step == s)
                ended = sum(1 for e in commits if e.rank == r)
                in_flight |= begun > ended
            if not in_flight and all(r in done or top[r] > s for r in ranks):
                steps.add(s)
        return steps

    def attempt_summary(self) -> list[AttemptSummary]:
        """One summary per attempt: steps run, the fault that ended it, finish, checkpoints committed, loads."""
        out, committed = [], set()
        all_faults, all_events = self.faults(), self.events()
        for a in self.attempts():
            steps = [row.step for r in self.ranks for row in self.steps(r, a)]
            faults = [row for row in all_faults if row.attempt == a]
            events = [row for row in all_events if row.attempt == a]
            committed |= self.complete_checkpoints(a)
            finished = tuple(r for r in self.ranks if self.finished(r, a))
            out.append(AttemptSummary(
                attempt=a, first_step=min(steps, default=None), last_step=max(steps, default=None),
                fault=faults[0] if faults else None,
                finished=bool(self.ranks) and len(finished) == len(self.ranks), finished_ranks=finished,
                committed_steps=tuple(sorted(s for s in committed if isinstance(s, int))),
                loaded=tuple(e for e in events if e.name == Point.LOADED)))
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
        m = RANK_TRACE_RE.match(f.name)
        if m:
            rank = int(m.group(1))
            rows[rank] = _read_rows(f, warnings)
            bad = sum(1 for row in rows[rank] if row.rank != rank)
            if bad:
                warnings.append(f"{f.name}: {bad} row(s) carry another rank number")
    if not rows:
        warnings.append(f"{path}: no rank*.jsonl files")
    return Trace(path, rows, warnings)
