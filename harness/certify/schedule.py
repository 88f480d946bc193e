"""Fault plans per cell: a seeded schedule that covers every fault class.

The plans of a cell are concrete (no ``random``), drawn with ``random.Random("<seed>/<cell id>")`` from
what the scenario's baseline did (``Profile``: its last step, the steps of its committed checkpoints,
and when each rank reached each fault point), so every plan can fire and exercise a resume:

- a step fault lands after the first committed checkpoint and before the last step;
- a mid-save fault lands at an occurrence of its point that comes after the first committed
  checkpoint (a kill in the very first save has nothing to resume from);
- in a multi-fault plan, each later fault lands where a resumed attempt reaches: a step after the
  previous fault's step, or ``checkpoint.loaded`` (right after the resume; not in auto mode, where
  ``checkpoint.loaded`` is an event the harness records, no point a fault fires at).

A script tested in auto mode (no probe calls) has its own save calls as points: ``torch.save``,
``safetensors.save_file``, ``dcp.save``, ``deepspeed.save_checkpoint`` (class ``save_call``: before the
n-th call, the 2nd call of one step included, which is a kill between two files of one checkpoint)
and ``checkpoint.committed`` after each. The committed checkpoints are the complete ones, by the
oracle's rule (``harness.engine.baseline.BaselineProfile``, shared with ``harness fuzz``).

The same (seed, cell, profile) gives the same plans, in any process; the steps of a cell are spread
over the valid range (shuffled, then taken in turn) before any repeats.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from harness.certify.matrix import CHECKPOINT_POINTS, SAVE_CALL_CLASS, Cell
from harness.engine.baseline import BaselineProfile
from harness.faults import Fault, FaultPlan
from harness.trace_schema import AUTO_SAVE_POINTS, Point


@dataclass(frozen=True)
class Profile:
    """What the uninterrupted run of a scenario at one world size did (from its baseline trace)."""

    world_size: int
    last_step: int
    committed: tuple[int, ...]  # steps of complete checkpoints (Trace.complete_checkpoints)
    #: point -> rank -> the step each occurrence came at (attempt 0), in order
    points: dict = field(default_factory=dict)
    auto: bool = False  # recorded in auto mode: the script's save calls are its points, no checkpoint.loaded point

    @property
    def first_commit(self) -> int:
        return min(self.committed, default=0)

    def kill_steps(self) -> list[int]:
        low = self.first_commit + 1 if 0 < self.first_commit < self.last_step - 1 else 1
        return list(range(low, self.last_step))

    def occurrences(self, point: str) -> list[tuple[int, int]]:
        """(rank, occurrence) pairs of ``point`` that come after the first committed checkpoint."""
        out = []
        for rank, steps in sorted(self.points.get(point, {}).items()):
            out += [(rank, k) for k, s in enumerate(steps, 1) if s > self.first_commit]
        return out

    def to_json(self) -> dict:
        return {"world_size": self.world_size, "last_step": self.last_step, "committed": list(self.committed),
                "points": {p: {str(r): list(s) for r, s in ranks.items()} for p, ranks in self.points.items()},
                **({"auto": True} if self.auto else {})}

    @classmethod
    def from_trace(cls, trace, world_size: int, *, auto: bool = False) -> "Profile":
        """The profile of a baseline trace, read as ``harness fuzz`` reads it (``BaselineProfile``): complete
        checkpoints by the oracle's rule, and only the events a fault can fire at."""
        base = BaselineProfile.from_trace(trace, auto=auto)
        points = {name: {r: list(steps) for r, steps in ranks.items()} for name, ranks in base.points.items()}
        return cls(world_size, base.last_step, base.complete, points, auto=auto)


class NotApplicable(Exception):
    """This cell cannot be tested for this scenario (the reason is the message)."""


def _spread(rng: random.Random, values: list, n: int) -> list:
    """n values: the list shuffled, taken in turn (each value once before any repeats)."""
    if not values:
        return []
    pool = list(values)
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(n)]


def _other_rank(rng: random.Random, ws: int):
    return rng.randrange(1, ws) if ws > 1 else 0


def plans_for(cell: Cell, profile: Profile, *, seed: int, trials: int) -> list[FaultPlan]:
    """The ``trials`` plans of ``cell``; NotApplicable when the cell cannot fire for this profile."""
    rng = random.Random(f"{seed}/{cell.id}")
    ws, kind = cell.world_size, cell.fault_class
    steps = profile.kill_steps()
    if not steps:
        raise NotApplicable(f"the baseline ran {profile.last_step} step(s): no step to kill at")
    chosen = _spread(rng, steps, trials)

    if kind == "step_kill":
        return [FaultPlan((Fault(step=s),)) for s in chosen]
    if kind == "one_rank":
        if ws < 2:
            raise NotApplicable("one rank other than rank 0 needs world size >= 2")
        return [FaultPlan((Fault(step=s, rank=_other_rank(rng, ws)),)) for s in chosen]
    if kind == "all_ranks":
        return [FaultPlan((Fault(step=s, rank="all"),)) for s in chosen]
    if kind == "sigterm":
        ranks = [0, "all"] + ([_other_rank(rng, ws)] if ws > 1 else [])
        return [FaultPlan((Fault(step=s, rank=ranks[i % len(ranks)], signal="SIGTERM"),)) for i, s in enumerate(chosen)]
    if kind == "exception":
        at_points = [(p, r, k) for p in (*CHECKPOINT_POINTS, *AUTO_SAVE_POINTS) for r, k in profile.occurrences(p)]
        out = []
        for i, s in enumerate(chosen):
            if i % 2 == 1 and at_points:
                p, r, k = at_points[rng.randrange(len(at_points))]
                out.append(FaultPlan((Fault(point=p, occurrence=k, rank=r, signal="exception"),)))
            else:
                out.append(FaultPlan((Fault(step=s, rank=rng.choice([0, "all"]), signal="exception"),)))
        return out
    if kind.startswith("save:"):
        point = kind[len("save:"):]
        if point not in profile.points:
            raise NotApplicable(f"the baseline never reached {point}")
        occ = profile.occurrences(point)
        if not occ:
            raise NotApplicable(f"the baseline reached {point} only before its first committed checkpoint")
        return [FaultPlan((Fault(point=point, occurrence=k, rank=r),)) for r, k in _spread(rng, occ, trials)]
    if kind == SAVE_CALL_CLASS:
        reached = [p for p in AUTO_SAVE_POINTS if p in profile.points]
        if not reached:
            raise NotApplicable(f"the baseline made no save call auto mode sees ({', '.join(AUTO_SAVE_POINTS)})")
        occ = [(p, r, k) for p in reached for r, k in profile.occurrences(p)]
        if not occ:
            raise NotApplicable(f"the baseline called {', '.join(reached)} only before its first complete checkpoint")
        return [FaultPlan((Fault(point=p, occurrence=k, rank=r),)) for p, r, k in _spread(rng, occ, trials)]
    if kind == "multi_fault":
        out = []
        for i, s1 in enumerate(chosen):
            first = Fault(step=s1, rank=rng.choice([0, "all"] + ([_other_rank(rng, ws)] if ws > 1 else [])),
                          signal=rng.choice(["SIGKILL", "SIGTERM"]))
            later = [s for s in steps if s > s1]
            if profile.auto and not later:
                later = [s1]  # the resumed attempt re-runs s1 (a kill there comes before its save): restarts in a row
            faults = [first]
            # auto mode records checkpoint.loaded as an event, with no fault point: a later step instead
            if not profile.auto and (i % 2 == 0 or not later):
                faults.append(Fault(point=Point.LOADED, rank=rng.choice([0, "all"])))
            if later:
                faults.append(Fault(step=rng.choice(later), rank=rng.choice([0, "all"])))
            out.append(FaultPlan(tuple(faults)))
        return out
    raise NotApplicable(f"unknown fault class {kind!r}")


def classes_covered(plans: dict[str, list[FaultPlan]]) -> set[str]:
    """The fault classes a set of plans exercises, read from the plans themselves (for tests and reports)."""
    seen = set()
    for plan in (p for ps in plans.values() for p in ps):
        for f in plan:
            if f.step is not None:
                seen.add("sigterm" if f.signal == "SIGTERM" else "exception" if f.signal == "exception" else
                         "all_ranks" if f.rank == "all" else "one_rank" if f.rank != 0 else "step_kill")
            elif f.point in CHECKPOINT_POINTS:
                seen.add("exception" if f.signal == "exception" else f"save:{f.point}")
            elif f.point in AUTO_SAVE_POINTS:
                seen.add("exception" if f.signal == "exception" else SAVE_CALL_CLASS)
        if len(plan) > 1:
            seen.add("multi_fault")
    return seen


__all__ = ["Profile", "NotApplicable", "plans_for", "classes_covered"]
