"""What a certificate may not call a PASS: a matrix in which no trial ran (every cell n/a), a baseline that is
not reproducible (no trial runs), trials that stalled on every run (load); and failing outcomes of
their own (rng_only) that are failures."""

from __future__ import annotations

import json
import os

import pytest

from harness.certify import report_html, report_json, report_md
from harness.certify.campaign import CellRunner, conclude, run_campaign, write_reports
from harness.certify.matrix import CampaignSpec
from harness.certify.shard import merge
from harness.cli import main
from harness.oracle.verdict import Outcome, RunResult, Verdict

from certify_support import certificate, default_profile, spec
from support import SCRIPTS

URANDOM = os.path.join(SCRIPTS, "urandom_numpy.py")


class SharedPool:
    """The session's warm launcher for a command that starts (and closes) its own."""

    def __init__(self, pool):
        self.pool = pool

    def __getattr__(self, name):
        return getattr(self.pool, name)

    def close(self, *a, **k):
        pass


def test_a_matrix_of_only_na_cells_certifies_nothing(capsys, tmp_path, pool, monkeypatch):
    """At world size 1 no rank other than 0 can be killed, and the default scenario's files are too small for
    checkpoint.chunk: both cells n/a. That is no PASS of 0/0 trials, but an error saying nothing was certified."""
    import harness.launch.forkserver

    monkeypatch.setattr(harness.launch.forkserver, "ForkServerLauncher", lambda *a, **k: SharedPool(pool))
    out = tmp_path / "cert"
    code = main(["certify", "--scenarios", "default", "--world-sizes", "1",
                 "--classes", "one_rank,save:checkpoint.chunk", "--trials", "2", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 2, printed
    assert printed.startswith("ERROR (nothing_certified): 0/0 trials bit-exact")
    assert "nothing was certified: no trial ran (2 of 2 cell(s) n/a: one_rank at world size 1: " in printed
    s = report_json.read(str(out))["summary"]
    assert (s["verdict"], s["exit_code"], s["outcome"], s["trials"], s["cells_na"]) == \
        ("error", 2, "nothing_certified", 0, 2)
    md = open(out / "certificate.md").read()
    assert "— NOTHING CERTIFIED" in md and "**nothing was certified: no trial ran" in md
    page = open(out / "certificate.html").read()
    assert 'id="verdict">NOTHING CERTIFIED<' in page and 'data-outcome="nothing_certified"' in page


def test_a_merge_of_shards_that_ran_no_trial_certifies_nothing():
    sp = spec(world_sizes=(1,), classes=("one_rank",))
    cert = conclude(merge([certificate(sp)]))
    assert (cert["summary"]["outcome"], cert["summary"]["exit_code"]) == ("nothing_certified", 2)
    assert conclude(json.loads(json.dumps(cert)))["summary"] == cert["summary"]  # concluding twice: the same
    ok = conclude(certificate())["summary"]  # trials ran: the verdict rules alone
    assert (ok["outcome"], ok["exit_code"], ok["message"]) == ("failed", 1, None)


def test_a_nondeterministic_baseline_stops_the_campaign_before_any_trial(pool, tmp_path):
    """A script that seeds numpy from os.urandom: its two uninterrupted runs differ. No trial runs (each would
    fail whatever its plan); the certificate fails with the baseline's verdict, message and hint."""
    sp = CampaignSpec.make(scenarios=[URANDOM], classes=["step_kill", "all_ranks"], world_sizes="2,3", trials=2)
    cert = run_campaign(sp, str(tmp_path), progress=False, launcher=pool)
    paths = write_reports(cert, str(tmp_path))
    s = cert["summary"]
    assert (s["verdict"], s["exit_code"], s["outcome"], s["passed"]) == ("fail", 1, "nondeterministic_baseline", 0)
    assert not os.path.exists(tmp_path / "trials")  # no trial ran
    assert "the training is nondeterministic even without faults" in s["message"] and "np.random.seed" in s["message"]
    status = {(c["fault_class"], c["world_size"]): c["status"] for c in cert["cells"]}
    assert status == {("step_kill", 2): "fail", ("all_ranks", 2): "fail",
                      ("step_kill", 3): "not_run", ("all_ranks", 3): "not_run"}  # stopped at the first baseline
    for t in cert["trials"]:
        assert (t["outcome"], t["verdict"], t["plan"], t["out_dir"]) == ("nondeterministic_baseline", "fail", "", None)
        assert "rng:numpy" in t["first_divergence"]["fields"] and t["hint"].startswith("numpy's global RNG")
    assert "nondeterministic_baseline" in open(paths["md"]).read()


def _result(verdict, outcome, tdir, plan="12"):
    return RunResult(Verdict(verdict, outcome, f"{outcome} (fake)"), target="default", plan=plan,
                     replay=f"harness run default --kill {plan}", out_dir=tdir)


def fake_runner(tmp_path, judge, **kw):
    """A CellRunner whose trials are ``judge(call)`` (no processes) over the default scenario's profile."""
    sp = spec(world_sizes=(3,), classes=("step_kill",), trials=2)
    runner = CellRunner(sp, str(tmp_path), launcher=object(), **kw)
    runner._profiles[("default", 3)] = (default_profile(3), None, None, None)
    calls = []

    def run(trial, *, out_dir, **_):  # harness.engine.run(spec, ...)
        calls.append(trial.plan)
        verdict, outcome = judge(len(calls))
        return _result(verdict, outcome, out_dir, trial.plan)

    runner._run = run
    return sp, runner, calls


def test_a_stalled_trial_is_run_again_and_judged_by_its_second_run(tmp_path):
    sp, runner, calls = fake_runner(tmp_path, lambda n: ("error", Outcome.STALL) if n in (1, 3) else
                                    ("pass", Outcome.BIT_EXACT))
    rec, trials = runner.run_cell(sp.cells()[0])
    assert [t["verdict"] for t in trials] == ["pass", "pass"] and [t["retries"] for t in trials] == [1, 1]
    assert len(calls) == 4 and calls[0] == calls[1]


def test_trials_that_stall_every_time_are_reported_apart_not_failed(tmp_path):
    sp, runner, calls = fake_runner(tmp_path, lambda n: ("error", Outcome.STALL) if n <= 2 else
                                    ("pass", Outcome.BIT_EXACT), stall_retries=1)
    rec, trials = runner.run_cell(sp.cells()[0])
    assert [(t["verdict"], t["outcome"], t["retries"]) for t in trials] == [("error", "stall", 1),
                                                                           ("pass", "bit_exact", 0)]
    cert = conclude(report_json.finish_certificate(
        {**certificate(sp), "cells": [rec], "trials": trials}, sp.to_json()))
    s = cert["summary"]
    assert (s["verdict"], s["outcome"], s["exit_code"], s["failed"], s["stalled"]) == ("error", "stall", 4, 0, 1)
    assert s["message"].startswith("stalled: 1 trial(s), retried (1 run(s) again), stalled every time")
    assert "stalled: 1 trial(s), retried" in report_md.render(cert) and "stalled every time" in report_html.render(cert)


@pytest.mark.parametrize("outcome", [Outcome.RNG_ONLY, Outcome.TIMEOUT])
def test_failing_outcomes_are_failures_never_retried(tmp_path, outcome):
    """rng_only (training bit-exact, an RNG stream not restored) and a hang after a resume fail the cell."""
    sp, runner, calls = fake_runner(tmp_path, lambda n: ("fail", outcome))
    rec, trials = runner.run_cell(sp.cells()[0])
    assert len(calls) == 2 and all(t["outcome"] == outcome.value and t["retries"] == 0 for t in trials)
    cert = conclude(report_json.finish_certificate(
        {**certificate(sp), "cells": [rec], "trials": trials}, sp.to_json()))
    assert (cert["summary"]["verdict"], cert["summary"]["exit_code"], cert["cells"][0]["status"]) == ("fail", 1, "fail")
    assert f"({outcome.value})" in report_md.render(cert)


def test_certify_passes_the_strategy_in_each_trials_spec_and_sets_no_process_env(tmp_path):
    """Each trial is dataclasses.replace(the cell's spec, plan=...): the strategy reaches the ranks through the
    spec (the attempt's HARNESS_STRATEGY), never through this process's environment."""
    import dataclasses

    from harness.certify.campaign import trial_spec

    sp = CampaignSpec.make(strategy="fsdp", scenarios=["default"], world_sizes=(3,), classes=["step_kill"], trials=3)
    before = dict(os.environ)
    seen = []
    with CellRunner(sp, str(tmp_path), launcher=object()) as runner:
        runner._profiles[("default", 3)] = (default_profile(3), None, None, None)

        def run(trial, *, out_dir, **_):
            seen.append((trial, dict(os.environ)))
            return _result("pass", Outcome.BIT_EXACT, out_dir, trial.plan)

        runner._run = run
        runner.run_cell(sp.cells()[0])
    assert dict(os.environ) == before and all(env == before for _, env in seen)
    base = trial_spec(sp, sp.scenario("default"), 3)
    assert len(seen) == 3 and all(t == dataclasses.replace(base, plan=t.plan, auto=False) for t, _ in seen)
    assert all(t.strategy == "fsdp" and "--strategy fsdp" in t.replay() for t, _ in seen)
