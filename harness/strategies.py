"""Hypothesis strategies for fault plans: property-based resume tests in your own suite.

    from hypothesis import given, settings
    from harness.strategies import fault_plans

    @settings(max_examples=20, deadline=None)
    @given(plan=fault_plans(max_step=20, points={"checkpoint.write": 9}, ranks=2))
    def test_resumes_exactly(resume_harness, plan):
        result = resume_harness("train.py", plan=plan)
        assume(result.verdict != "error")   # a plan that could not exercise a resume is not a bug
        assert result.verdict == "pass", result.replay

Shrinking goes towards the simplest plan: the values are drawn so that the first alternative of
each choice is the simplest one, and Hypothesis shrinks every choice towards its first alternative.
So a failing plan shrinks to the fewest faults, then a step fault before a point fault, the earliest
step (the lowest occurrence of a point), rank 0 before the other ranks before ``all``, and SIGKILL
before SIGTERM before an exception.

Weights: ``boundary_steps`` (and ``boundary_occurrences`` per point) make about ``boundary_share``
(default half) of the values drawn, as ``harness fuzz`` does with the steps around each committed
checkpoint, epoch ends and accumulation boundaries of the baseline's trace.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from harness.faults import SIGNALS, Fault, FaultPlan

#: About this share of the steps (and occurrences) drawn are boundary values, when boundaries are given.
DEFAULT_BOUNDARY_SHARE = 0.5

#: The maximum number of faults in a plan when not given (each fault is one more restart).
DEFAULT_MAX_FAULTS = 3


def _rank_list(ranks) -> list:
    """``ranks``: an int n (ranks 0..n-1 and "all"), or a sequence of ints >= 0 and "all", simplest first."""
    if isinstance(ranks, bool):
        raise InvalidArgument(f"ranks must be an int >= 1 or a sequence of ranks, got {ranks!r}")
    if isinstance(ranks, int):
        if ranks < 1:
            raise InvalidArgument(f"ranks (a world size) must be >= 1, got {ranks}")
        return [*range(ranks), "all"]
    out = list(ranks)
    if not out:
        raise InvalidArgument("ranks is empty")
    for r in out:
        if r != "all" and (not isinstance(r, int) or isinstance(r, bool) or r < 0):
            raise InvalidArgument(f"a rank is an int >= 0 or 'all', got {r!r}")
    if len(set(map(str, out))) != len(out):
        raise InvalidArgument(f"ranks holds a duplicate: {out!r}")
    return out


def _point_counts(points) -> dict[str, int]:
    """``points``: a mapping name -> most occurrences, or names (occurrence 1 only)."""
    if points is None:
        return {}
    if isinstance(points, str):
        raise InvalidArgument(f"points is a mapping or a sequence of names, not the string {points!r}")
    counts = dict(points) if isinstance(points, Mapping) else {name: 1 for name in points}
    for name, n in counts.items():
        try:
            Fault(point=name)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidArgument(f"points[{name!r}] must be an int >= 1 (the most occurrences), got {n!r}")
    return counts


#: Above this many values, a range is drawn with ``st.integers`` and its boundaries by ``st.one_of`` beside it.
MAX_SAMPLED_RANGE = 10_000


def _weighted(low: int, high: int, favoured: Iterable[int], share: float) -> st.SearchStrategy[int]:
    """An int in low..high; the favoured values are about ``share`` of the draws (at least their own share).

    Drawn as an index into ``[low, ..., high] + favoured * copies``: shrinking lowers the index, so it
    leaves the copies for the plain ascending range and goes on to the smallest value that still
    fails, favoured or not (a failure found at a boundary step 12 shrinks to 11 if 11 fails too).
    """
    favoured = sorted({v for v in favoured if low <= v <= high})
    n = high - low + 1
    copies = 0
    if favoured and 0 < share < 1:
        copies = max(0, math.ceil((share * n - len(favoured)) / (len(favoured) * (1.0 - share))))
    if copies == 0:
        return st.integers(low, high)
    if n + copies * len(favoured) > MAX_SAMPLED_RANGE:
        return st.one_of(st.integers(low, high), st.sampled_from(favoured))
    return st.sampled_from(list(range(low, high + 1)) + favoured * copies)


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidArgument(f"{name} must be an int >= {low}, got {value!r}")


def faults(max_step: int | None = None, points: Mapping[str, int] | Iterable[str] | None = None,
           ranks: int | Sequence = (0, "all"), signals: Sequence[str] = SIGNALS, *, min_step: int = 1,
           boundary_steps: Iterable[int] = (), boundary_occurrences: Mapping[str, Iterable[int]] | None = None,
           boundary_share: float = DEFAULT_BOUNDARY_SHARE) -> st.SearchStrategy[Fault]:
    """One ``Fault``: at a step in ``min_step..max_step`` or at a point occurrence, on one of ``ranks``,
    with one of ``signals``.

    points: ``{"checkpoint.write": 9, ...}`` (a point and the most occurrences to draw, e.g. what a
    baseline reached on one rank), or names (occurrence 1). ranks: a world size n (ranks 0..n-1 and
    ``all``) or the ranks to draw from, simplest first. signals: from ``harness.faults.SIGNALS``,
    simplest first. boundary_steps / boundary_occurrences: values that make about ``boundary_share`` of
    the draws (those outside the range are ignored).
    """
    if max_step is None and not points:
        raise InvalidArgument("give max_step, points, or both: a fault needs somewhere to fire")
    rank_values = _rank_list(ranks)
    signal_values = list(signals)
    if not signal_values or any(s not in SIGNALS for s in signal_values):
        raise InvalidArgument(f"signals must be a non-empty sequence of {SIGNALS}, got {signals!r}")
    counts = _point_counts(points)
    if not isinstance(boundary_share, (int, float)) or not 0 <= boundary_share < 1:
        raise InvalidArgument(f"boundary_share must be a number in [0, 1), got {boundary_share!r}")
    where: list[st.SearchStrategy[dict]] = []
    if max_step is not None:
        _check_int("min_step", min_step, 1)
        _check_int("max_step", max_step, min_step)
        favoured = list(boundary_steps)
        where.append(_weighted(min_step, max_step, favoured, boundary_share).map(lambda s: {"step": s}))
    if counts:
        favoured_occ = {name: list((boundary_occurrences or {}).get(name, ())) for name in counts}

        @st.composite
        def at_point(draw) -> dict:
            name = draw(st.sampled_from(list(counts)))
            k = draw(_weighted(1, counts[name], favoured_occ[name], boundary_share))
            return {"point": name, "occurrence": k}

        where.append(at_point())

    @st.composite
    def fault(draw) -> Fault:
        at = draw(st.one_of(*where))
        rank = draw(st.sampled_from(rank_values))
        signal = draw(st.sampled_from(signal_values))
        return Fault(rank=rank, signal=signal, **at)

    return fault()


def fault_plans(max_step: int | None = None, points: Mapping[str, int] | Iterable[str] | None = None,
                max_faults: int = DEFAULT_MAX_FAULTS, ranks: int | Sequence = (0, "all"),
                signals: Sequence[str] = SIGNALS, *, min_faults: int = 1, min_step: int = 1,
                boundary_steps: Iterable[int] = (), boundary_occurrences: Mapping[str, Iterable[int]] | None = None,
                boundary_share: float = DEFAULT_BOUNDARY_SHARE) -> st.SearchStrategy[FaultPlan]:
    """A ``FaultPlan`` of ``min_faults..max_faults`` faults, each drawn by ``faults(...)`` (same arguments).

    Attempt i of a trial arms fault i, so a plan of k faults restarts the job k times; half the plans
    drawn have ``min_faults`` faults, the others any size. Plans shrink towards fewer faults first,
    then towards simpler faults (see the module docstring).
    """
    _check_int("min_faults", min_faults, 1)
    _check_int("max_faults", max_faults, min_faults)
    one = faults(max_step, points, ranks, signals, min_step=min_step, boundary_steps=boundary_steps,
                 boundary_occurrences=boundary_occurrences, boundary_share=boundary_share)
    plans = st.lists(one, min_size=min_faults, max_size=max_faults)
    if min_faults < max_faults:
        # The fewest faults first, and as often as all sizes together: each fault costs one more restart.
        plans = st.one_of(st.lists(one, min_size=min_faults, max_size=min_faults), plans)
    return plans.map(lambda fs: FaultPlan(tuple(fs)))


__all__ = ["fault_plans", "faults", "DEFAULT_BOUNDARY_SHARE", "DEFAULT_MAX_FAULTS"]
