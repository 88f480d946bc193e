"""The search space of a fuzz campaign, derived from the baseline's trace, and the classes of a fault.

``FaultSpace.from_trace(trace, nproc=..., max_faults=...)`` reads what the uninterrupted run did:

- its steps (1..last), the points it reached (``probe.point`` names, the reference checkpointer's, and
  in auto mode the script's own save calls ``torch.save``, ``safetensors.save_file``, ``dcp.save``,
  ``deepspeed.save_checkpoint`` and ``checkpoint.committed`` after each; with the most occurrences one
  rank reached in the run), read through ``harness.engine.baseline.BaselineProfile``;
- the complete checkpoints, by the oracle's rule (``Trace.complete_checkpoints``: an auto-mode save of
  step s is complete once every rank trained past s): the steps just before, at and just after each
  one are boundaries;
- epoch ends, from a step extra named ``epoch`` (the steps where it changes);
- accumulation boundaries: the steps whose accumulation window is not the usual one, from a step
  extra named ``window``/``accum``/``micro`` (the built-in scenarios record ``window``), else from the
  number of ``microbatch``-like point events between two steps;
- the first and the last step;
- for each point, its boundary occurrences: the first and last occurrence between two steps (the
  first and last file of a save, the first and last micro-batch of a window), and the save calls
  that are not the first of their step (a kill between two files of one checkpoint).

``space.strategy()`` is ``harness.strategies.fault_plans`` over that space, the boundaries after the
first complete checkpoint favoured: a kill before it has nothing to resume from (``no resume
tested``), so those values are not weighted up (``FaultSpace.before_first_checkpoint`` tells them;
``EarlyKillGate`` admits one such plan per class, as the campaign runs them). A plan whose later
fault cannot fire (``FaultSpace.unreachable``) is never drawn.
``space.classes(fault)`` names what a fault exercises, for the campaign's coverage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from harness.engine.baseline import BaselineProfile, _harness_own_file
from harness.faults import SIGNALS, Fault
from harness.trace_schema import AUTO_SAVE_POINTS, Point, SAVE_POINTS as CHECKPOINTER_SAVE_POINTS

#: Points inside a save: the reference checkpointer's, and the save calls auto mode sees (before each call).
SAVE_POINTS = (*CHECKPOINTER_SAVE_POINTS, *AUTO_SAVE_POINTS)
#: Step extras whose change marks an epoch boundary.
EPOCH_KEYS = ("epoch",)
#: Step extras holding the size of the step's accumulation window.
WINDOW_KEYS = ("window", "accum", "accumulation", "micro", "microbatches")
#: Substrings of point names called once per micro-batch.
MICRO_POINT_HINTS = ("micro", "accum")

# Coverage classes (``FaultSpace.classes``).
FIRST_STEP, LAST_STEP, INTERIOR_STEP = "first step", "last step", "interior step"
BEFORE_CHECKPOINT, AFTER_CHECKPOINT = "just before a checkpoint", "just after a checkpoint"
EPOCH_END, ACCUM_BOUNDARY = "epoch end", "accumulation boundary"
MID_SAVE, AFTER_COMMIT, AFTER_LOAD = "mid-save", "after commit", "after load"
MID_ACCUM, USER_POINT, BOUNDARY_OCCURRENCE = "mid-accumulation", "user point", "boundary occurrence"
BETWEEN_FILES = "between two files"  # the k-th save call (k >= 2) of one step: one checkpoint's files half written


def _is_micro(name: str) -> bool:
    return any(h in name.lower() for h in MICRO_POINT_HINTS)


def _leaf_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class FaultSpace:
    """Where faults can go in one job (steps, points, ranks, signals) and which values are boundaries."""

    nproc: int
    last_step: int
    points: tuple[tuple[str, int], ...] = ()  # (name, most occurrences on one rank), in order of first use
    committed: tuple[int, ...] = ()
    epoch_ends: tuple[int, ...] = ()
    accum_boundaries: tuple[int, ...] = ()
    boundary_occurrences: tuple[tuple[str, tuple[int, ...]], ...] = ()
    max_faults: int = 3
    signals: tuple[str, ...] = SIGNALS
    boundary_share: float = 0.5
    between_files: tuple[tuple[str, tuple[int, ...]], ...] = ()  # save-call occurrences k >= 2 within a step
    auto: bool = False  # the baseline was recorded in auto mode (no probe calls)
    #: the baseline's profile (early occurrences per rank); None: only step faults are told early
    profile: BaselineProfile | None = field(default=None, repr=False, compare=False)
    _boundary_steps: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self):
        if self.last_step < 1:
            raise ValueError(f"the baseline recorded no step (last step {self.last_step}): nothing to fuzz")
        steps = {1, self.last_step} | set(self.epoch_ends) | set(self.accum_boundaries)
        for c in self.committed:
            steps |= {c - 1, c, c + 1}
        object.__setattr__(self, "_boundary_steps",
                           tuple(sorted(s for s in steps if 1 <= s <= self.last_step)))

    @property
    def boundary_steps(self) -> tuple[int, ...]:
        return self._boundary_steps

    @property
    def first_checkpoint(self) -> int | None:
        """The step of the first complete checkpoint (None: none is ever complete)."""
        return min(self.committed, default=None)

    def before_first_checkpoint(self, fault: Fault) -> bool:
        """Whether ``fault``, as the first of a plan, fires before any checkpoint is complete (as far as the
        baseline tells): its trial can only restart from scratch ("no resume tested")."""
        if self.profile is not None:
            return self.profile.before_first_checkpoint(fault)
        first = self.first_checkpoint
        return fault.step is not None and (first is None or fault.step <= first)

    @property
    def favoured_steps(self) -> tuple[int, ...]:
        """The boundary steps the strategy weights up: those after the first complete checkpoint."""
        first = self.first_checkpoint
        return self.boundary_steps if first is None else tuple(s for s in self.boundary_steps if s > first)

    def favoured_occurrences(self) -> dict[str, tuple[int, ...]]:
        """Per point, the occurrences the strategy weights up: boundary occurrences and kills between two
        files of one checkpoint, after the first complete checkpoint."""
        between = dict(self.between_files)
        out = {}
        for name, occ in self.boundary_occurrences:
            early = self.profile.early_occurrences(name, "all") if self.profile is not None else 0
            if self.first_checkpoint is None:
                early = 0  # nothing is ever complete: no occurrence is better than another
            out[name] = tuple(sorted(k for k in set(occ) | set(between.get(name, ())) if k > early))
        return out

    @property
    def ranks(self) -> list:
        """Every rank, then ``all`` (simplest first)."""
        return [*range(self.nproc), "all"]

    @classmethod
    def from_trace(cls, trace, *, nproc: int, max_faults: int = 3, signals=SIGNALS,
                   boundary_share: float = 0.5, auto: bool = False,
                   profile: BaselineProfile | None = None) -> "FaultSpace":
        """The space of a baseline ``harness.oracle.Trace`` (attempt 0 of an uninterrupted run); ``profile``:
        its ``BaselineProfile`` when the caller has it (else read here)."""
        profile = profile or BaselineProfile.from_trace(trace, auto=auto)
        counts = profile.counts()
        names = list(profile.points)  # in order of first use (rank order, then file order)
        committed = list(profile.complete)
        rank = min(trace.ranks) if trace.ranks else 0
        rows = sorted(trace.steps(rank), key=lambda r: r.step)
        epoch_ends, windows = [], {}
        prev_epoch = None
        for row in rows:
            extra = row.extra or {}
            epoch = next((_leaf_int(extra.get(k)) for k in EPOCH_KEYS if _leaf_int(extra.get(k)) is not None), None)
            if epoch is not None:
                if prev_epoch is not None and epoch != prev_epoch:
                    epoch_ends.append(row.step - 1)
                prev_epoch = epoch
            window = next((_leaf_int(extra.get(k)) for k in WINDOW_KEYS if _leaf_int(extra.get(k)) is not None), None)
            if window is not None:
                windows[row.step] = window
        if not windows:  # count micro-batch points between steps: the window of step s+1 follows step s
            per_gap = Counter(e.step for e in trace.events() if e.rank == rank and _is_micro(e.name))
            windows = {s + 1: n for s, n in per_gap.items() if 1 <= s + 1 <= trace.last_step()}
        accum = []
        if len(set(windows.values())) > 1:
            usual = Counter(windows.values()).most_common(1)[0][0]
            accum = sorted(s for s, w in windows.items() if w != usual)
        between = []
        for name, ranks in profile.save_order.items():
            order = max(ranks.values(), key=len)  # the rank with the most save calls (as for boundary occurrences)
            ks = tuple(k for k, pos in enumerate(order, 1) if pos >= 2)
            if ks:
                between.append((name, ks))
        return cls(nproc=nproc, last_step=trace.last_step(), points=tuple((n, counts[n]) for n in names),
                   committed=tuple(committed), epoch_ends=tuple(epoch_ends), accum_boundaries=tuple(accum),
                   boundary_occurrences=tuple((n, _boundary_occurrences(trace, n)) for n in names),
                   max_faults=max_faults, signals=tuple(signals), boundary_share=boundary_share,
                   between_files=tuple(between), auto=profile.auto, profile=profile)

    def strategy(self):
        """``harness.strategies.fault_plans`` over this space, with the boundaries favoured; a plan with a
        fault that cannot fire (``unreachable``: a later step fault before the checkpoint the job resumes
        from) is never drawn."""
        from harness.strategies import fault_plans

        return fault_plans(max_step=self.last_step, points=dict(self.points), max_faults=self.max_faults,
                           ranks=self.ranks, signals=self.signals, boundary_steps=self.favoured_steps,
                           boundary_occurrences=self.favoured_occurrences(),
                           boundary_share=self.boundary_share).filter(lambda plan: self.unreachable(plan) is None)

    def early_class(self, plan) -> tuple | None:
        """The class of ``plan``'s first fault when it fires before the first complete checkpoint (a step
        or the point's name, one rank or all, its signal), else None: such a trial can only restart from
        scratch. Which single rank is killed is no class of its own: with nothing to resume, the ranks
        start over alike (the gate reopens a class whose trial did resume)."""
        first = plan[0]
        if not self.before_first_checkpoint(first):
            return None
        return ("step" if first.step is not None else first.point, "all" if first.rank == "all" else "one",
                first.signal)

    def classes(self, fault: Fault) -> tuple[str, ...]:
        """The boundary classes a fault exercises (for coverage)."""
        out = []
        if fault.step is not None:
            s = fault.step
            if s == 1:
                out.append(FIRST_STEP)
            if s == self.last_step:
                out.append(LAST_STEP)
            if any(s in (c - 1, c) for c in self.committed):
                out.append(BEFORE_CHECKPOINT)
            if any(s == c + 1 for c in self.committed):
                out.append(AFTER_CHECKPOINT)
            if s in self.epoch_ends:
                out.append(EPOCH_END)
            if s in self.accum_boundaries:
                out.append(ACCUM_BOUNDARY)
            if not out:
                out.append(INTERIOR_STEP)
        elif fault.point is not None:
            name = fault.point
            if name in SAVE_POINTS:
                out.append(MID_SAVE)
                if fault.occurrence in dict(self.between_files).get(name, ()):
                    out.append(BETWEEN_FILES)
            elif name == Point.COMMITTED:
                out.append(AFTER_COMMIT)
            elif name == Point.LOADED:
                out.append(AFTER_LOAD)
            elif _is_micro(name):
                out.append(MID_ACCUM)
            else:
                out.append(USER_POINT)
            if fault.occurrence in dict(self.boundary_occurrences).get(name, ()):
                out.append(BOUNDARY_OCCURRENCE)
        return tuple(out)

    def resumes_from(self, step: int) -> int:
        """The checkpoint a job killed inside ``probe.step(step)`` resumes from: the last committed before it."""
        return max((c for c in self.committed if c < step), default=0)

    def unreachable(self, plan) -> int | None:
        """The index of a fault of ``plan`` that cannot fire, as far as the baseline tells, else None.

        Attempt i arms fault i after fault i-1 ended attempt i-1, resumes from the last checkpoint
        committed before fault i-1 fired, re-runs the steps after it and counts point occurrences from 1
        again. So a later step fault at a step no later than that checkpoint is never reached, nor a later
        point fault whose occurrence is beyond what the baseline made from that checkpoint on (the trial
        would end as fault_not_fired). Where a fault could fire, the earliest resume is assumed (a later
        one only leaves less to run), so no plan that could fire is called unreachable. Without the
        baseline's profile, faults after a point fault are not predicted.
        """
        start = 0  # the step the current attempt resumed from (0: from scratch)
        for i, fault in enumerate(plan):
            if fault.step is not None:
                if i and fault.step <= start:
                    return i
                fired = fault.step
            else:
                if self._never_on(fault.point, fault.rank):
                    return i  # the point is one other ranks reach (the writer's commit): a sure fault_not_fired
                steps = self._occurrence_steps(fault.point, fault.rank, start)
                if steps is None:
                    return None
                if i and fault.occurrence > len(steps):
                    return i
                if fault.occurrence > len(steps):
                    return None  # the first fault: the engine checks it against the baseline itself
                fired = steps[fault.occurrence - 1]
            start = self.resumes_from(fired)
        return None

    def _never_on(self, point: str, rank) -> bool:
        """Whether the baseline shows ``point`` on some ranks and never on ``rank`` (a rank number)."""
        if self.profile is None or rank == "all":
            return False
        per_rank = self.profile.points.get(point)
        return bool(per_rank) and rank not in per_rank

    def _occurrence_steps(self, point: str, rank, start: int) -> list[int] | None:
        """The steps of the occurrences of ``point`` an attempt resuming from ``start`` can reach on ``rank``
        (``"all"``: the rank reaching each first), in order (None: not known)."""
        if self.profile is None:
            return None
        per_rank = self.profile.points.get(point)
        if not per_rank:
            return None
        ranks = per_rank.values() if rank == "all" else [per_rank[rank]]  # a rank without it: _never_on
        seqs = [[step for step in occ if step >= start] for occ in ranks]
        longest = max(map(len, seqs))
        # occurrence k fires on whichever rank reaches it first: the earliest step among the ranks that have it
        return [min(seq[k] for seq in seqs if len(seq) > k) for k in range(longest)]

    def expected_classes(self) -> tuple[str, ...]:
        """The classes this space can produce: a campaign that never tried one of them warns."""
        names = [n for n, _ in self.points]
        first = self.first_checkpoint
        # step 1 is asked for only when a checkpoint (of step 0) is complete before it: else a kill there
        # can only restart from scratch ("no resume tested"), and one such trial per class is enough
        out = ([FIRST_STEP] if first is not None and first < 1 else []) + [LAST_STEP, INTERIOR_STEP]
        if self.committed:
            out += [BEFORE_CHECKPOINT, AFTER_CHECKPOINT]
        if self.epoch_ends:
            out.append(EPOCH_END)
        if self.accum_boundaries:
            out.append(ACCUM_BOUNDARY)
        if any(n in SAVE_POINTS for n in names):
            out.append(MID_SAVE)
        if self.between_files:
            out.append(BETWEEN_FILES)
        if Point.COMMITTED in names:
            out.append(AFTER_COMMIT)
        if any(_is_micro(n) for n in names):
            out.append(MID_ACCUM)
        if any(n not in SAVE_POINTS and not n.startswith("checkpoint.") and not _is_micro(n) for n in names):
            out.append(USER_POINT)
        return tuple(out)

    def to_json(self) -> dict:
        return {"nproc": self.nproc, "last_step": self.last_step, "points": dict(self.points),
                "committed": list(self.committed), "epoch_ends": list(self.epoch_ends),
                "accum_boundaries": list(self.accum_boundaries), "boundary_steps": list(self.boundary_steps),
                "max_faults": self.max_faults, "signals": list(self.signals), "auto": self.auto,
                "between_files": {n: list(k) for n, k in self.between_files}}


class EarlyKillGate:
    """One trial per class for plans whose first fault fires before the first complete checkpoint.

    Such a trial can only restart from scratch (``no resume tested``), so a stream of them is wasted
    trials. ``admit(plan)``: whether to run it: plans after the first checkpoint always; an early plan
    when its class (``FaultSpace.early_class``) was never admitted, or when its trial passed or failed
    (``record``: the baseline's prediction was wrong for that class, a SIGTERM handler that saves, a
    rank that resumed alone, so the class keeps being tried). A class admitted and not yet recorded, or
    recorded as an error, is closed. ``skipped`` counts the plans refused.
    """

    def __init__(self, space: FaultSpace):
        self.space = space
        self.classes: dict[tuple, str | None] = {}  # class -> verdict of its trial (None: not yet recorded)
        self.skipped = 0

    def admit(self, plan) -> bool:
        from harness.oracle import VerdictKind

        cls = self.space.early_class(plan)
        if cls is None:
            return True
        if cls in self.classes and self.classes[cls] not in (VerdictKind.PASS, VerdictKind.FAIL):
            self.skipped += 1
            return False
        self.classes.setdefault(cls, None)
        return True

    def record(self, plan, verdict: str) -> None:
        """The verdict of an admitted plan's trial ("pass", "fail", "error"; a stall counts as "error")."""
        cls = self.space.early_class(plan)
        if cls is not None and self.classes.get(cls) is None:
            self.classes[cls] = verdict


def _boundary_occurrences(trace, name: str) -> tuple[int, ...]:
    """Occurrences (1-based, counted per rank and attempt) that are first or last between two steps."""
    best: list = []
    for r in trace.ranks:
        by_attempt: dict[int, list] = {}
        for row in trace.rows(r):
            if getattr(row, "kind", None) == "event" and row.name == name and not _harness_own_file(row):
                by_attempt.setdefault(row.attempt, []).append(row)
        for rows in by_attempt.values():
            if len(rows) > len(best):
                best = rows
    out = set()
    for i, row in enumerate(best):
        if i == 0 or best[i - 1].step != row.step:
            out.add(i + 1)
        if i == len(best) - 1 or best[i + 1].step != row.step:
            out.add(i + 1)
    return tuple(sorted(out))


__all__ = ["FaultSpace", "EarlyKillGate", "SAVE_POINTS", "BETWEEN_FILES"]
