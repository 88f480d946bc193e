"""The lifecycle checks (harness/oracle/lifecycle.py) are one code path for both oracles: the same trial,
judged by the bit-exact oracle and by the elastic one on an unchanged world size, gets the same verdict,
outcome, message, hint and exit code whenever its lifecycle is what is wrong. Also: the verdict is frozen,
with enum members, and what the engine knows beside the traces is passed into `assess`."""

from __future__ import annotations

import dataclasses
import json

import pytest

from harness.oracle import (Finding, Lifecycle, Outcome, RankEnd, RunResult, Verdict, VerdictKind, assess,
                            compare_runs, exit_code_of, load_trace)
from harness.oracle.elastic import assess_elastic
from harness.oracle.lifecycle import BEFORE_COMPARISON, check_exit_codes, first_finding
from support.traces import TraceBuilder, baseline, resumed, step_row


def _elastic_ready(b: TraceBuilder) -> TraceBuilder:
    """Rows the elastic oracle can judge too: each step's sample ids, and the state each rank restored after a
    load (rank 0's row of the checkpoint's step, which is what the run had when it saved)."""
    for rows in b.rows.values():
        out = []
        for x in rows:
            if x["kind"] == "step":
                x["extra"]["samples"] = f"{x['step'] * 10 + 2 * x['rank']} {x['step'] * 10 + 2 * x['rank'] + 1}"
            out.append(x)
            if x["kind"] == "event" and x["name"] == "checkpoint.loaded":
                saved = step_row(0, x["step"])
                out.append({"kind": "restored", "attempt": x["attempt"], "rank": x["rank"], "step": x["step"],
                            "world_size": b.nproc, "params": saved["params"],
                            "params_tensors": saved["params_tensors"], "extra": {"lr": saved["extra"]["lr"]}})
        rows[:] = out
    return b


def _both(tmp_path, trial: TraceBuilder, *, n_faults=1, launched=2, last_exits=None) -> tuple[Verdict, Verdict]:
    base = _elastic_ready(baseline(tmp_path / "base")).write()
    t = _elastic_ready(trial).write()
    exact = assess(compare_runs(base, t), load_trace(t), n_faults=n_faults, launched=launched, last_exits=last_exits)
    elastic = assess_elastic(base, t, nproc=2, resume_nproc=2, n_faults=n_faults, launched=launched,
                             last_exits=last_exits)
    return exact, elastic


def _drop(b: TraceBuilder, keep) -> TraceBuilder:
    for r in b.rows:
        b.rows[r] = [x for x in b.rows[r] if keep(x)]
    return b


def _no_fault(p):
    return baseline(p)


def _survived(p):
    b = baseline(p)
    b.rows[0].insert(next(i for i, x in enumerate(b.rows[0]) if x.get("step") == 8 and x["kind"] == "step"),
                     {"kind": "fault", "attempt": 0, "rank": 0, "step": 7, "point": None,
                      "fault": {"at": {"step": 7}, "rank": 0, "signal": "SIGTERM"}})
    return b


def _crash_in_attempt_0(p):
    return _drop(baseline(p), lambda x: x["kind"] != "finish" and (x.get("step") or 0) <= 4)


def _crash_on_resume(p):
    return _drop(resumed(p), lambda x: x["attempt"] == 0 or (x["kind"] != "finish" and (x.get("step") or 0) <= 8))


def _silent_resume(p):
    return _drop(resumed(p), lambda x: x["attempt"] == 0)


def _second_fault_not_launched(p):
    b = _drop(resumed(p), lambda x: x["attempt"] == 0 or (x["kind"] != "finish" and (x.get("step") or 0) <= 9))
    return b.fault(1, 9)


def _restarted(p):
    b = TraceBuilder(p).start(0)
    for s in range(1, 8):
        b.steps(0, s, s)
        if s == 5:
            b.event(0, "checkpoint.committed", s, path="checkpoints/checkpoint_5")
    b.fault(0, 7).start(1)
    for s in range(1, 11):
        b.steps(1, s, s)
    return b.finish(1)


CRASHED = [RankEnd(0, 1, log_tail="Traceback: boom"), RankEnd(1, -9, torn_down=True)]
SCENARIOS = {  # name: (trial, keywords, the outcome both oracles must give)
    "fault_not_fired": (_no_fault, dict(launched=1), Outcome.FAULT_NOT_FIRED),
    "fault_survived": (_survived, dict(launched=1), Outcome.FAULT_SURVIVED),
    "fault_not_armed": (_second_fault_not_launched, dict(n_faults=3), Outcome.FAULT_NOT_ARMED),
    "second_fault_not_fired": (resumed, dict(n_faults=2), Outcome.FAULT_NOT_FIRED),
    "no_fault_in_the_plan": (resumed, dict(n_faults=0), Outcome.FAULT_NOT_ARMED),
    "crash_before_any_fault": (_crash_in_attempt_0, dict(launched=1, last_exits=CRASHED), Outcome.CRASH),
    "crash_on_resume": (_crash_on_resume, dict(last_exits=CRASHED), Outcome.CRASH_ON_RESUME),
    "silent_resume": (_silent_resume, dict(last_exits=CRASHED), Outcome.CRASH_ON_RESUME),
    "silent_resume_no_exit_code": (_silent_resume, dict(), Outcome.ERROR),
    "exit_code_after_finish": (resumed, dict(last_exits=[RankEnd(0, 0), RankEnd(1, 3, log_tail="exit 3")]),
                               Outcome.CRASH_ON_RESUME),
    "killed_after_finish": (resumed, dict(last_exits=[RankEnd(0, -11), RankEnd(1, 0)]), Outcome.CRASH_ON_RESUME),
    "restarted_from_step_1": (_restarted, dict(), Outcome.NOT_RESUMED),
    "exit_unknown": (resumed, dict(last_exits=[RankEnd(0, 0), RankEnd(1, None)]), Outcome.EXIT_UNKNOWN),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_both_oracles_judge_a_lifecycle_the_same(tmp_path, name):
    build, kw, outcome = SCENARIOS[name]
    exact, elastic = _both(tmp_path, build(tmp_path / "trial"), **kw)
    assert exact.outcome is outcome, exact.message
    same = lambda v: (v.verdict, v.outcome, v.message, v.hint, v.log_tail, exit_code_of(v.verdict, v.outcome))
    assert same(elastic) == same(exact)


def test_the_lifecycle_scenarios_differ_from_a_correct_trial(tmp_path):
    """Each scenario above fails only through its lifecycle: the same trial with a clean lifecycle passes both."""
    exact, elastic = _both(tmp_path, resumed(tmp_path / "trial"), last_exits=[RankEnd(0, 0), RankEnd(1, 0)])
    assert (exact.verdict, exact.outcome) == (VerdictKind.PASS, Outcome.BIT_EXACT), exact.message
    assert (elastic.verdict, elastic.outcome) == (VerdictKind.PASS, Outcome.ELASTIC_PASS), elastic.message


def test_messages_of_the_shared_checks(tmp_path):
    exact, _ = _both(tmp_path / "a", resumed(tmp_path / "a" / "trial"),
                     last_exits=[RankEnd(0, 0), RankEnd(1, 3, log_tail="exit 3")])
    assert exact.message == "rank 1 exited with code 3 after probe.finish in attempt 1, after the resume; the baseline exited 0"
    assert exact.verdict == "fail" and exact.log_tail == "exit 3" and "check at exit" in exact.hint
    exact, _ = _both(tmp_path / "b", _restarted(tmp_path / "b" / "trial"))
    assert exact.message == ("checkpoint(s) at step(s) [5] were committed before the kill after step 7, but attempt 1 "
                             "restarted from step 1 without loading one") and exact.verdict == "fail"


def test_lifecycle_of_attempts_on_other_world_sizes(tmp_path):
    """2 ranks, then 1: attempt 1 is finished when its one rank finished (the trace's rank 1 never ran in it)."""
    b = TraceBuilder(tmp_path / "t", 2).start(0).steps(0, 1, 7).fault(0, 7).start(1, [0]).steps(1, 6, 10, [0])
    trial = load_trace(b.finish(1, [0]).write())
    by_trace = Lifecycle.of(trial, n_faults=1, launched=2)
    elastic = Lifecycle.of(trial, n_faults=1, launched=2, world=lambda a: range(2 if a == 0 else 1))
    assert not by_trace.finished(1) and elastic.finished(1) and not elastic.finished(0)
    assert first_finding(elastic, BEFORE_COMPARISON) is None
    assert first_finding(by_trace, BEFORE_COMPARISON).outcome is Outcome.CRASH_ON_RESUME
    found = check_exit_codes(Lifecycle.of(trial, n_faults=1, last_exits=[RankEnd(0, 2)], world=elastic.world))
    assert isinstance(found, Finding) and (found.verdict, found.outcome, found.message) == (
        VerdictKind.FAIL, Outcome.CRASH_ON_RESUME,
        "rank 0 exited with code 2 after probe.finish in attempt 1, after the resume; the baseline exited 0")


# --- a frozen verdict with enums; inputs passed in, never edited afterwards ---------------------------

def test_verdict_is_frozen_with_enum_members(tmp_path):
    v = Verdict("fail", "divergence", "m")
    assert v.verdict is VerdictKind.FAIL and v.outcome is Outcome.DIVERGENCE and v.verdict == "fail"
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.verdict = VerdictKind.PASS
    with pytest.raises(ValueError, match="verdict must be one of"):
        Verdict("ok", Outcome.BIT_EXACT, "m")
    with pytest.raises(ValueError, match="only bit_exact, elastic_pass, rng_accepted pass"):
        Verdict(VerdictKind.PASS, Outcome.DIVERGENCE, "m")
    doc = json.loads(json.dumps(RunResult(v).to_json()))
    assert (doc["verdict"], doc["outcome"], doc["exit_code"]) == ("fail", "divergence", 1)


def test_comparison_and_divergence_are_frozen(tmp_path):
    b = resumed(tmp_path / "t")
    b.row(0, 8, 1)["batch"] = "0" * 32
    cmp = compare_runs(baseline(tmp_path / "b").write(), b.write())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmp.first = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmp.first.step = 1


def test_not_recorded_artefacts_and_log_tail_are_passed_in(tmp_path):
    base = baseline(tmp_path / "b").write()
    t = resumed(tmp_path / "t").write()
    cmp = compare_runs(base, t)

    class Report:  # the counts of an ArtefactReport (harness.oracle.artefacts), nothing exported differs
        divergences = []
        judged = {"files": 2, "tensors": 5}

        def to_json(self):
            return {"judged": self.judged}

    v = assess(cmp, load_trace(t), n_faults=1, launched=2, not_recorded=["dataloader"], artefacts=Report())
    assert v.outcome is Outcome.BIT_EXACT, v.message
    assert v.compared["not_recorded"] == ["dataloader"] and v.compared["artefacts"] == {"files": 2, "tensors": 5}
    assert "1 kind(s) of state not recorded" in v.message and "2 file(s), 5 tensor(s) match" in v.message
    assert "not_recorded" not in cmp.compared and "artefacts" not in cmp.compared  # the comparison is not edited
    failed = assess(None, None, baseline_error="exit code 1", log_tail="Traceback: boom")
    assert (failed.outcome, failed.log_tail) == (Outcome.BASELINE_FAILED, "Traceback: boom")
    assert assess(None, None, baseline_error="exit code 1", log_tail="").log_tail is None
