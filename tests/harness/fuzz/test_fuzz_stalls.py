"""harness fuzz and what is no resume bug: a stall (load) is retried and reported apart, never a failure nor
the minimal failing example; a nondeterministic baseline stops the campaign before any trial; rng_only
is a failure, named by its outcome."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from rich.console import Console

import harness.engine
from harness.faults import FaultPlan
from harness.fuzz import Campaign, CampaignConfig, StopReason
from harness.fuzz.render import render_text
from harness.oracle.verdict import Outcome, RunResult, Verdict

from support import SCRIPTS

PAUSE = os.path.join(SCRIPTS, "pause_on_resume.py")
URANDOM = os.path.join(SCRIPTS, "urandom_numpy.py")


def text_of(result) -> str:
    console = Console(record=True, width=200)
    render_text(result, console)
    return console.export_text()


def test_a_nondeterministic_baseline_stops_the_campaign_before_any_trial(pool, tmp_path):
    """A script that seeds numpy from os.urandom: two uninterrupted runs differ, so every trial would fail
    whatever its plan; the campaign says so at once instead of shrinking a failure the plan has no part in."""
    config = CampaignConfig(URANDOM, trials=5, db=None, out_dir=str(tmp_path / "out"))
    result = Campaign(config, launcher=pool).run()
    assert result.trials == 0 and not result.failures and result.exit_code == 1, (result.stop, result.trials)
    assert result.stop is StopReason.NONDETERMINISTIC_BASELINE and not os.path.exists(tmp_path / "out" / "trials")
    assert "nondeterministic even without faults" in result.message and "rng:numpy" in result.message
    assert "np.random.seed" in result.hint
    saved = json.load(open(tmp_path / "out" / "fuzz.json"))
    assert saved["stop"] == "nondeterministic_baseline" and saved["exit_code"] == 1 and saved["hint"] == result.hint
    shown = text_of(result)
    assert "FAIL  nondeterministic_baseline: the training is nondeterministic" in shown and "no trial ran" in shown
    assert "hint: numpy's global RNG is not seeded" in shown


def test_a_job_paused_by_load_after_each_restart_is_retried_and_reported_stalled(pool, tmp_path):
    """Every restart pauses (as an overloaded machine pauses a job) past the stall limit: each plan stalls
    on both runs, and the campaign reports the plans as stalled, with exit 4, not as failing plans."""
    config = CampaignConfig(PAUSE, nproc=1, trials=1, max_faults=1, stall_s=0.2, db=None,
                            out_dir=str(tmp_path / "out"))
    result = Campaign(config, launcher=pool).run()
    assert result.exit_code == 4 and not result.failures and result.failed_trials == 0, (result.stop, result.message)
    assert len(result.stalled) == result.trials == 1 and result.stall_retries == 1
    assert all(outcome == "stall" for _, outcome in result.stalled) and "stall" not in dict(result.rejected)
    saved = json.load(open(tmp_path / "out" / "fuzz.json"))
    assert saved["exit_code"] == 4 and len(saved["stalled"]) == 1 and saved["failures"] == []
    shown = text_of(result)
    assert "stalled: 1 trial(s), retried (1 run(s) again)" in shown and "STALLED" in shown and "PASS" not in shown


class FakeRun:
    """harness.engine.run without processes: ``judge(plan, call)`` gives (verdict, outcome) of the call-th run."""

    def __init__(self, judge):
        self.judge, self.calls, self.specs = judge, {}, []

    def __call__(self, spec, *, out_dir, **kw):
        self.specs.append(spec)
        target, key = spec.target, spec.plan  # the campaign's spec with this trial's plan (dataclasses.replace)
        plan = spec.fault_plan
        self.calls[key] = self.calls.get(key, 0) + 1
        verdict, outcome = self.judge(plan, self.calls[key])
        return RunResult(Verdict(verdict, outcome, f"{outcome} (fake)"), target=target, plan=key,
                         replay=f"harness run {target} --kill {key}", out_dir=out_dir)


def fake_campaign(monkeypatch, pool, tmp_path, judge, **kw):
    fake = FakeRun(judge)
    monkeypatch.setattr(harness.engine, "run", fake)
    config = CampaignConfig("default", seed=0, db=None, out_dir=str(tmp_path / "out"), **kw)
    return Campaign(config, launcher=pool, write_repro=lambda *a, **k: None).run(), fake


def test_a_trial_that_stalls_once_is_judged_by_its_second_run(monkeypatch, pool, tmp_path):
    """Stalls (and attempt-0 hangs past --timeout) on the first run, bit-exact on the second: a pass."""
    def judge(plan, call):
        if call == 1:
            return ("error", Outcome.STALL) if len(plan) == 1 else ("error", Outcome.TIMEOUT)
        return "pass", Outcome.BIT_EXACT

    result, fake = fake_campaign(monkeypatch, pool, tmp_path, judge, trials=6)
    assert result.exit_code == 0 and result.passes == 6 and not result.stalled, (result.stop, result.message)
    assert result.stall_retries == 6 and set(fake.calls.values()) == {2}


def test_a_stall_never_becomes_the_minimal_failing_example(monkeypatch, pool, tmp_path):
    """Plans whose faults are all at step >= 10 diverge; every other plan stalls on every run. Shrinking must
    stop at step 10: the smaller plans stalled, which says nothing about the resume."""
    def judge(plan, call):
        steps = [f.step for f in plan]
        if all(s is not None and s >= 10 for s in steps):
            return "fail", Outcome.DIVERGENCE
        return "error", Outcome.STALL

    result, fake = fake_campaign(monkeypatch, pool, tmp_path, judge, trials=40)
    assert result.exit_code == 1 and result.stop is StopReason.FAILURE, (result.stop, result.message)
    (failure,) = result.failures
    assert failure.plan == "10" and failure.outcome == "divergence"
    assert result.stalled and all(calls == 2 for plan, calls in fake.calls.items()
                                  if plan in dict(result.stalled))


@pytest.mark.parametrize("outcome, code", [(Outcome.RNG_ONLY, 3), (Outcome.LOST_PROGRESS, 1)])
def test_every_failing_outcome_is_a_failure_named_by_its_outcome(monkeypatch, pool, tmp_path, outcome, code):
    """The exit code is harness run's for the minimal plan: 3 for rng_only (training bit-exact), else 1."""
    result, _ = fake_campaign(monkeypatch, pool, tmp_path, lambda plan, call: ("fail", outcome), trials=5)
    assert result.exit_code == code and result.stop is StopReason.FAILURE
    assert result.to_json()["exit_code"] == code
    (failure,) = result.failures
    assert failure.outcome == outcome.value and failure.plan == "1"
    assert f"minimal plan 1 (" in text_of(result) and f": {outcome.value}: " in text_of(result)


def test_a_kill_before_the_first_complete_checkpoint_runs_once_per_class(monkeypatch, pool, tmp_path):
    """The default scenario's first complete checkpoint is step 5: a plan whose first fault comes before it can
    only restart from scratch (not_resumed, error). Each class of such a first fault (where, rank, signal) gets
    one trial; later plans of a class that gave that error are skipped without a trial."""
    from harness.fuzz.campaign import Campaign as _Campaign

    spaces = []
    real_baseline = _Campaign._baseline

    def keep_space(self, target, backend):
        baseline, space = real_baseline(self, target, backend)
        spaces.append(space)
        return baseline, space

    monkeypatch.setattr(_Campaign, "_baseline", keep_space)

    def judge(plan, call):
        return ("error", Outcome.NOT_RESUMED) if spaces[0].before_first_checkpoint(plan[0]) else ("pass", Outcome.BIT_EXACT)

    result, fake = fake_campaign(monkeypatch, pool, tmp_path, judge, trials=60)
    space = spaces[0]
    assert space.first_checkpoint == 5 and result.exit_code == 0, (result.stop, result.message)
    ran_early = [plan for plan in fake.calls if space.before_first_checkpoint(FaultPlan.parse(plan)[0])]
    classes = [(f.step is None and f.point, f.rank, f.signal) for f in (FaultPlan.parse(p)[0] for p in ran_early)]
    assert ran_early and len(classes) == len(set(classes)), ran_early  # one trial per class at most
    assert result.skipped_early > 0 and result.to_json()["skipped_early"] == result.skipped_early
    assert dict(result.rejected) == {"not_resumed": len(ran_early)}
    assert "a kill before the first complete checkpoint whose class was tried" in text_of(result)


def test_every_trial_is_the_campaigns_spec_with_its_plan(monkeypatch, pool, tmp_path):
    """Fuzz derives each trial by dataclasses.replace(base, plan=...): the same target, world size, seed, limits and
    mode (the baseline's) for every plan."""
    result, fake = fake_campaign(monkeypatch, pool, tmp_path, lambda plan, call: ("pass", Outcome.BIT_EXACT),
                                 trials=4, timeout_s=77)
    assert result.exit_code == 0 and len(fake.specs) == 4
    base = fake.specs[0]
    assert (base.target, base.nproc, base.seed, base.timeout_s, base.auto) == ("default", 2, 0, 77.0, False)
    assert base.backend in ("gloo", "nccl")  # resolved once for the campaign
    assert all(s == dataclasses.replace(base, plan=s.plan) for s in fake.specs)
    assert len({s.plan for s in fake.specs}) == 4
