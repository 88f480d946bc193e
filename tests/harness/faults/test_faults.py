import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.faults import Fault, FaultPlan


@pytest.mark.parametrize("text, expected", [
    ("12", Fault(step=12)),
    ("12@1", Fault(step=12, rank=1)),
    ("12@all", Fault(step=12, rank="all")),
    ("12:SIGTERM", Fault(step=12, signal="SIGTERM")),
    ("12:term", Fault(step=12, signal="SIGTERM")),
    ("12@1:exc", Fault(step=12, rank=1, signal="exception")),
    ("12@ALL:KILL", Fault(step=12, rank="all")),
    ("checkpoint.write", Fault(point="checkpoint.write")),
    ("checkpoint.write:2", Fault(point="checkpoint.write", occurrence=2)),
    ("checkpoint.write:2@all:SIGTERM", Fault(point="checkpoint.write", occurrence=2, rank="all", signal="SIGTERM")),
    ("checkpoint.write:SIGTERM", Fault(point="checkpoint.write", signal="SIGTERM")),
    ("checkpoint.write:3:exception", Fault(point="checkpoint.write", occurrence=3, signal="exception")),
    ("my-lib/save_v2.x", Fault(point="my-lib/save_v2.x")),
    ("random", Fault(random=True)),
    ("random@all:SIGTERM", Fault(random=True, rank="all", signal="SIGTERM")),
    (" 7 ", Fault(step=7)),
])
def test_parse_short_form(text, expected):
    assert Fault.parse(text) == expected


def test_plan_from_repeated_and_comma_separated_values():
    plan = FaultPlan.parse(["5,20@1", "checkpoint.commit:exc"])
    assert [f.format() for f in plan] == ["5", "20@1", "checkpoint.commit:exception"]
    assert plan.format() == "5,20@1,checkpoint.commit:exception"
    assert FaultPlan.parse(plan.format()) == plan


@pytest.mark.parametrize("text, names", [
    ("", "empty"),
    ("0", "step 0"),
    ("12@x", "'x'"),
    ("12@-1", "'-1'"),
    ("12:3", "COUNT"),
    ("12@1@2", "more than one '@'"),
    ("12:TERM@1", "signal last"),
    ("checkpoint.write:0", "COUNT must be >= 1"),
    ("foo:BOGUS", "'BOGUS'"),
    ("random:3", "'random' takes no COUNT"),
    ("1x", "'1x'"),
    ("a:1:TERM:x", "too many"),
    ("12@1:TERM:x", "RANK[:SIGNAL]"),
])
def test_bad_strings_name_the_bad_token(text, names):
    with pytest.raises(ValueError) as e:
        Fault.parse(text)
    assert names in str(e.value)


def test_bad_plan_value_names_the_fault():
    with pytest.raises(ValueError, match="'20@q'"):
        FaultPlan.parse("5,20@q")
    with pytest.raises(ValueError, match="empty"):
        FaultPlan.parse("5,")


def test_json_form_matches_design_doc():
    f = Fault.parse("checkpoint.write:2@all:SIGTERM")
    assert f.to_json() == {"at": {"point": "checkpoint.write", "occurrence": 2}, "rank": "all", "signal": "SIGTERM"}
    assert Fault.parse("12").to_json() == {"at": {"step": 12}, "rank": 0, "signal": "SIGKILL"}
    assert Fault.from_json(json.dumps(f.to_json())) == f


@pytest.mark.parametrize("obj, names", [
    ({"at": {"step": 0}}, "step"),
    ({"at": {"stp": 3}}, "stp"),
    ({"at": {"step": 3}, "rank": -1}, "rank"),
    ({"at": {"step": 3}, "signal": "SIGINT"}, "SIGINT"),
    ({"at": {"step": 3}, "extra": 1}, "extra"),
    ({"at": {"step": 3, "point": "x"}}, "exactly one"),
    ({"at": {"step": 3, "occurrence": 2}}, "occurrence"),
    ([1], "rank"),
])
def test_bad_json_is_rejected(obj, names):
    with pytest.raises(ValueError, match=names):
        Fault.from_json(obj)


points = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,20}", fullmatch=True).filter(lambda s: s.lower() != "random")
ranks = st.one_of(st.integers(0, 1000), st.just("all"))
signals = st.sampled_from(["SIGKILL", "SIGTERM", "exception"])
faults = st.one_of(
    st.builds(Fault, step=st.integers(1, 10**9), rank=ranks, signal=signals),
    st.builds(Fault, point=points, occurrence=st.integers(1, 1000), rank=ranks, signal=signals),
    st.builds(Fault, random=st.just(True), rank=ranks, signal=signals),
)


@given(faults)
def test_short_form_round_trip(fault):
    assert Fault.parse(fault.format()) == fault


@given(faults)
def test_json_round_trip(fault):
    assert Fault.from_json(json.loads(json.dumps(fault.to_json()))) == fault


@given(st.lists(faults, max_size=5))
def test_plan_round_trips(faults_list):
    plan = FaultPlan(faults_list)
    texts = [plan.format()] if plan else []  # an empty plan is no --kill at all
    assert FaultPlan.parse(texts) == plan
    assert FaultPlan.from_json(json.dumps(plan.to_json())) == plan


def test_random_resolves_from_the_seed_in_range_and_ascending():
    plan = FaultPlan.parse("random,random@1:TERM,checkpoint.write,random")
    a = plan.resolve(seed=7, last_step=30)
    assert a == plan.resolve(seed=7, last_step=30)
    assert not a.has_random
    steps = [f.step for f in a if f.point is None]
    assert steps == sorted(steps) and all(1 <= s <= 29 for s in steps)
    assert a[1].rank == 1 and a[1].signal == "SIGTERM" and a[2] == plan[2]
    assert {plan.resolve(seed=s, last_step=30)[0].step for s in range(40)} != {a[0].step}  # the seed matters
    assert FaultPlan.parse("12").resolve(seed=1, last_step=5) == FaultPlan.parse("12")


def test_random_needs_two_steps():
    assert FaultPlan.parse("random").resolve(seed=0, last_step=2)[0].step == 1
    with pytest.raises(ValueError, match="at least 2 steps"):
        FaultPlan.parse("random").resolve(seed=0, last_step=1)


def test_coerce_accepts_the_usual_shapes():
    expected = FaultPlan.parse("3,4@1")
    assert FaultPlan.coerce("3,4@1") == expected
    assert FaultPlan.coerce(["3", "4@1"]) == expected
    assert FaultPlan.coerce([Fault(step=3), {"at": {"step": 4}, "rank": 1}]) == expected
    assert FaultPlan.coerce(expected) is expected
    assert FaultPlan.coerce(None) == FaultPlan(())
    assert FaultPlan.coerce(Fault(step=3)) == FaultPlan.parse("3")
    with pytest.raises(ValueError):
        FaultPlan.coerce([3.5])


def test_applies_to():
    assert Fault.parse("3@all").applies_to(5)
    assert Fault.parse("3@1").applies_to(1) and not Fault.parse("3@1").applies_to(0)
