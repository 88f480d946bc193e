"""harness.strategies: fault_plans generates only valid plans, favours boundaries, and shrinks to simple plans."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from harness.faults import SIGNALS, Fault, FaultPlan
from harness.strategies import fault_plans, faults

POINTS = {"checkpoint.write": 9, "microbatch": 40}
NO_DB = settings(database=None, max_examples=2000)


@settings(max_examples=300, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=fault_plans(max_step=20, points=POINTS, max_faults=3, ranks=2))
def test_every_plan_is_valid_and_within_its_space(plan):
    assert isinstance(plan, FaultPlan) and 1 <= len(plan) <= 3
    for f in plan:
        assert (f.step is None) != (f.point is None) and not f.random
        if f.step is not None:
            assert 1 <= f.step <= 20 and f.occurrence == 1
        else:
            assert f.point in POINTS and 1 <= f.occurrence <= POINTS[f.point]
        assert f.rank in (0, 1, "all") and f.signal in SIGNALS
    assert FaultPlan.parse(plan.format()) == plan  # what the replay command says is the plan


@settings(max_examples=200, database=None)
@given(plan=fault_plans(max_step=9, min_step=4, max_faults=1, ranks=[1, "all"], signals=["SIGTERM"]))
def test_the_arguments_bound_every_value(plan):
    (f,) = plan.faults
    assert 4 <= f.step <= 9 and f.rank in (1, "all") and f.signal == "SIGTERM"


@settings(max_examples=100, database=None)
@given(plan=fault_plans(points=["checkpoint.commit", "probe.x"], max_faults=2))
def test_points_only_give_first_occurrences(plan):
    assert all(f.point in ("checkpoint.commit", "probe.x") and f.occurrence == 1 for f in plan)


def test_anything_shrinks_to_one_sigkill_at_step_1_on_rank_0():
    anything = find(fault_plans(max_step=20, points=POINTS, ranks=4), lambda p: True, settings=NO_DB,
                    random=Random(0))
    assert anything == FaultPlan((Fault(step=1),))


@pytest.mark.parametrize("predicate, minimal", [
    # boundaries are favoured when drawing, never when shrinking: 11 is simpler than the boundary 12
    (lambda p: any(f.step is not None and f.step >= 11 for f in p), "11"),
    (lambda p: any(f.signal == "SIGTERM" and f.rank == "all" for f in p), "1@all:SIGTERM"),
    (lambda p: any(f.signal == "exception" for f in p), "1:exception"),
    (lambda p: any(f.rank == 1 for f in p), "1@1"),
    (lambda p: len(p) >= 2, "1,1"),
    (lambda p: any(f.point == "microbatch" and f.occurrence >= 7 for f in p), "microbatch:7"),
    (lambda p: any(f.point is not None for f in p), "checkpoint.write"),
])
def test_failures_shrink_to_the_simplest_plan(predicate, minimal):
    strategy = fault_plans(max_step=20, points=POINTS, ranks=2, boundary_steps=[12, 13],
                           boundary_occurrences={"microbatch": [30]})
    assert find(strategy, predicate, settings=NO_DB, random=Random(0)).format() == minimal


def test_boundary_steps_are_drawn_more_often():
    seen = []

    @settings(max_examples=400, database=None)
    @given(f=faults(max_step=40, ranks=1, boundary_steps=[17, 33, 99]))
    def draw(f):
        seen.append(f.step)

    draw()
    share = sum(s in (17, 33) for s in seen) / len(seen)
    assert 0.35 < share < 0.65, share  # about half (boundary_share); 2 of 40 steps: 5% if drawn uniformly
    assert 99 not in seen and len(set(seen)) > 30  # out of range ignored; every other step still drawn


def test_boundary_occurrences_are_drawn_more_often():
    seen = []

    @settings(max_examples=300, database=None)
    @given(f=faults(points={"microbatch": 80}, ranks=1, boundary_occurrences={"microbatch": [41]}))
    def draw(f):
        seen.append(f.occurrence)

    draw()
    assert sum(s == 41 for s in seen) / len(seen) > 0.35


def test_a_user_suite_gets_shrinking_through_given():
    """The pattern of docs/pytest.md: a property over plans; Hypothesis reports the minimal failing plan."""
    tried = []

    @settings(max_examples=200, database=None)
    @given(plan=fault_plans(max_step=20))
    def test_resumes(plan):
        tried.append(plan)
        assert all(f.step is None or f.step < 15 for f in plan), plan.format()

    with pytest.raises(AssertionError) as e:
        test_resumes()
    assert str(e.value).splitlines()[0] == "15" and len(tried) > 1


@pytest.mark.parametrize("kwargs", [
    dict(max_step=0), dict(), dict(max_step=5, max_faults=0), dict(max_step=5, min_faults=3, max_faults=2),
    dict(max_step=5, signals=["SIGINT"]), dict(max_step=5, signals=[]), dict(max_step=5, ranks=0),
    dict(max_step=5, ranks=[-1]), dict(max_step=5, ranks=[0, 0]), dict(points={"bad name": 2}),
    dict(points={"checkpoint.write": 0}), dict(points="checkpoint.write"), dict(max_step=5, min_step=6),
    dict(max_step=5, boundary_steps=[2], boundary_share=1.0),
])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(InvalidArgument):
        fault_plans(**kwargs).validate()


def test_strategies_compose_with_other_strategies():
    both = st.tuples(fault_plans(max_step=3, max_faults=1), st.integers(0, 1))
    plan, n = find(both, lambda x: x[1] == 1, settings=NO_DB, random=Random(0))
    assert plan.format() == "1" and n == 1
