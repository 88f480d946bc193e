"""What a campaign exercised: fault kinds, points and boundary classes, and how often.

Counted over every trial that ran (passed, failed or rejected), once per fault of its plan; plan
sizes once per plan. ``Coverage.never_tried`` names the classes the space offers that no trial
exercised (mid-save kills, multi-fault plans, SIGTERM, ...): the campaign warns about them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from harness.faults import FaultPlan

ONE_RANK, ALL_RANKS = "one rank", "all ranks"
SINGLE_FAULT, MULTI_FAULT = "single-fault plans", "multi-fault plans"


def _pairs(counter: Counter) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(((str(k), v) for k, v in counter.items()), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class Coverage:
    """A snapshot of the counts (pairs of (what, how many), most frequent first)."""

    signals: tuple[tuple[str, int], ...] = ()
    ranks: tuple[tuple[str, int], ...] = ()  # "one rank" / "all ranks"
    rank_numbers: tuple[tuple[str, int], ...] = ()  # "0", "1", ..., "all"
    plan_sizes: tuple[tuple[str, int], ...] = ()  # "1", "2", ...
    where: tuple[tuple[str, int], ...] = ()  # "step" or the point name
    classes: tuple[tuple[str, int], ...] = ()  # boundary classes (harness.fuzz.space)
    never_tried: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"signals": dict(self.signals), "ranks": dict(self.ranks), "rank_numbers": dict(self.rank_numbers),
                "plan_sizes": dict(self.plan_sizes), "where": dict(self.where), "classes": dict(self.classes),
                "never_tried": list(self.never_tried)}


class CoverageCounter:
    """Counts as trials run; ``snapshot()`` gives the frozen ``Coverage``."""

    def __init__(self, space=None):
        self.space = space
        self.signals, self.ranks, self.rank_numbers = Counter(), Counter(), Counter()
        self.plan_sizes, self.where, self.classes = Counter(), Counter(), Counter()

    def add(self, plan: FaultPlan) -> None:
        self.plan_sizes[str(len(plan))] += 1
        for fault in plan:
            self.signals[fault.signal] += 1
            self.ranks[ALL_RANKS if fault.rank == "all" else ONE_RANK] += 1
            self.rank_numbers[str(fault.rank)] += 1
            self.where["step" if fault.step is not None else fault.point] += 1
            if self.space is not None:
                for c in self.space.classes(fault):
                    self.classes[c] += 1

    def expected(self) -> list[str]:
        """Every class the space offers, by kind: signals, one rank / all, multi-fault plans, boundaries."""
        if self.space is None:
            return []
        out = list(self.space.signals) + [ONE_RANK, ALL_RANKS]
        if self.space.max_faults > 1:
            out.append(MULTI_FAULT)
        return out + list(self.space.expected_classes())

    def snapshot(self) -> Coverage:
        seen = set(self.signals) | set(self.ranks) | set(self.classes)
        if any(int(k) > 1 for k in self.plan_sizes):
            seen.add(MULTI_FAULT)
        return Coverage(signals=_pairs(self.signals), ranks=_pairs(self.ranks), rank_numbers=_pairs(self.rank_numbers),
                        plan_sizes=tuple(sorted(self.plan_sizes.items(), key=lambda kv: int(kv[0]))),
                        where=_pairs(self.where), classes=_pairs(self.classes),
                        never_tried=tuple(c for c in self.expected() if c not in seen))


__all__ = ["Coverage", "CoverageCounter", "ONE_RANK", "ALL_RANKS", "MULTI_FAULT"]
