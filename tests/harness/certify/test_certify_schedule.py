"""The seeded schedule: every fault class gets plans that can fire, deterministically by seed."""

from __future__ import annotations

import pytest

from harness.certify.matrix import CHECKPOINT_POINTS, FAULT_CLASSES, Cell
from harness.certify.schedule import NotApplicable, plans_for, classes_covered

from certify_support import default_profile


def _all_plans(ws: int, seed: int = 0, trials: int = 6):
    profile = default_profile(ws)
    out, na = {}, {}
    for cls in FAULT_CLASSES:
        try:
            out[cls] = plans_for(Cell("default", cls, ws), profile, seed=seed, trials=trials)
        except NotApplicable as e:
            na[cls] = str(e)
    return out, na


def test_every_fault_class_is_covered_at_world_size_3():
    plans, na = _all_plans(3)
    assert set(na) == {"save:checkpoint.chunk"}, na  # only files > 16 MiB reach it
    assert all(len(p) == 6 for p in plans.values())
    assert classes_covered(plans) == set(FAULT_CLASSES) - {"save:checkpoint.chunk"}
    for cls, ps in plans.items():  # each class's plans are what the class says
        assert classes_covered({cls: ps}) >= {cls}, (cls, [p.format() for p in ps])


def test_plans_can_fire_and_resume():
    profile = default_profile(3)
    plans, _ = _all_plans(3, trials=12)
    for cls, ps in plans.items():
        for plan in ps:
            first = plan[0]
            if first.step is not None:  # after the first commit (5), before the last step (24)
                assert 5 < first.step < 24, (cls, plan.format())
            else:  # an occurrence that comes after the first committed checkpoint, on a rank that reaches it
                steps = profile.points[first.point][first.rank]
                assert steps[first.occurrence - 1] > 5, (cls, plan.format())
            assert all(f.rank == "all" or f.rank < 3 for f in plan)
            later_steps = [f.step for f in plan[1:] if f.step is not None]
            assert all(s > first.step for s in later_steps), plan.format()


def test_not_applicable_cells_say_why():
    with pytest.raises(NotApplicable, match="world size >= 2"):
        plans_for(Cell("default", "one_rank", 1), default_profile(1), seed=0, trials=3)
    with pytest.raises(NotApplicable, match="never reached checkpoint.chunk"):
        plans_for(Cell("default", "save:checkpoint.chunk", 2), default_profile(2), seed=0, trials=3)


def test_deterministic_by_seed():
    a, _ = _all_plans(3, seed=7)
    b, _ = _all_plans(3, seed=7)
    c, _ = _all_plans(3, seed=8)
    fmt = lambda d: {k: [p.format() for p in v] for k, v in d.items()}  # noqa: E731
    assert fmt(a) == fmt(b)
    assert fmt(a) != fmt(c)


def test_steps_are_spread_before_repeating():
    ps = plans_for(Cell("default", "step_kill", 2), default_profile(2), seed=0, trials=18)
    steps = [p[0].step for p in ps]
    assert sorted(steps) == list(range(6, 24))  # every valid step once


def test_mid_save_classes_cover_every_point_reached():
    assert set(CHECKPOINT_POINTS) - {"checkpoint.chunk"} == {
        c[len("save:"):] for c in classes_covered(_all_plans(2)[0]) if c.startswith("save:")}
