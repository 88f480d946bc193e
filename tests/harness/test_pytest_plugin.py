"""The pytest plugin (harness.pytest_plugin), through pytester: options, the fixture, the marker, trials,
the report in a failing test's output, and two marked tests under pytest-xdist.

In-process runs reuse this process's warm launcher (the inner conftest hands it over), so each inner
trial costs well under a second once the baseline is cached; the xdist run is a real subprocess.
"""

from __future__ import annotations

import json
import os

import pytest

# Imported here, before pytester's in-process runs: those drop the modules first imported inside them,
# and numpy and torch cannot be imported twice in one process (the oracle reads final states with torch).
import harness.engine  # noqa: F401
import harness.oracle  # noqa: F401
import harness.report  # noqa: F401
import safetensors.torch  # noqa: F401
import torch  # noqa: F401
import support
from support import SCRIPTS

pytest_plugins = ["pytester"]

MLP = os.path.join(SCRIPTS, "ddp_mlp.py")
BUGGY = os.path.join(SCRIPTS, "buggy_reseed.py")

SHARE_POOL = """
import pytest
import support


@pytest.fixture(scope="session")
def resume_harness_launcher():
    return support.PLUGIN_TEST_POOL
"""


#: Plugins an inner session does not need (hypothesis's alone costs a second of import per session).
QUIET = ("-p", "no:hypothesispytest", "-p", "no:anyio", "-p", "no:cacheprovider")


class Inner:
    """A pytester whose in-process sessions use this process's warm launcher."""

    def __init__(self, pytester):
        self.pytester = pytester
        self.makepyfile = pytester.makepyfile

    def run(self, *args):
        return self.pytester.runpytest_inprocess(*QUIET, "-p", "no:xdist", *args)


@pytest.fixture
def inner(pytester, pool, monkeypatch):
    monkeypatch.setattr(support, "PLUGIN_TEST_POOL", pool, raising=False)
    pytester.makeconftest(SHARE_POOL)
    return Inner(pytester)


def test_options_are_the_fixture_defaults_and_arguments_win(inner):
    """The options reach harness.engine.run (recorded by a stand-in run) unless the test passes its own."""
    inner.makepyfile("""
        import harness.engine
        import pytest

        def fake_run(target, **kwargs):
            raise RuntimeError("RUN " + repr(sorted((k, v) for k, v in kwargs.items() if k != "launcher")))

        def test_defaults(resume_harness, monkeypatch, tmp_path):
            monkeypatch.setattr(harness.engine, "run", fake_run)
            with pytest.raises(RuntimeError) as e:
                resume_harness("x.py", plan="7")
            assert str(e.value) == "RUN " + repr([("backend", "gloo"), ("nproc", 3), ("out_dir", str(tmp_path / "trial0")),
                                                ("plan", "7"), ("seed", 5)])

        def test_own_arguments(resume_harness, monkeypatch, tmp_path):
            monkeypatch.setattr(harness.engine, "run", fake_run)
            with pytest.raises(RuntimeError) as e:
                resume_harness("x.py", plan="7", nproc=2, seed=0, backend="auto", out_dir="o")
            assert str(e.value) == "RUN " + repr([("backend", "auto"), ("nproc", 2), ("out_dir", "o"), ("plan", "7"),
                                                ("seed", 0)])
    """)
    res = inner.run("--harness-nproc", "3", "--harness-seed", "5", "--harness-backend", "gloo")
    res.assert_outcomes(passed=2)
    res = inner.run()  # no options: the defaults 2 / auto / 0, so test_defaults fails
    res.assert_outcomes(passed=1, failed=1)
    assert "('backend', 'auto'), ('nproc', 2)" in res.stdout.str()
    assert "'auto'," not in res.stdout.str().replace("('backend', 'auto')", "")  # auto=None: run's own rule
    res = inner.run("--harness-nproc", "3", "--harness-seed", "5", "--harness-backend", "gloo", "--harness-auto")
    res.assert_outcomes(failed=2)  # both tests' runs now also get auto=True (neither passes its own)
    assert "('auto', True), ('backend', 'gloo')" in res.stdout.str()


def test_the_result_is_a_run_result_with_every_attribute(inner):
    inner.makepyfile(f"""
        from harness.oracle import RunResult

        def test_result(resume_harness, tmp_path):
            r = resume_harness({MLP!r}, plan="7")
            assert isinstance(r, RunResult)
            assert (r.verdict, str(r.outcome), r.first_divergence, r.diagnosis) == ("pass", "bit_exact", None, None)
            assert r.target == {MLP!r} and r.plan == "7" and r.nproc == 2 and r.seed == 0
            assert r.replay.startswith("harness run ") and "--kill 7" in r.replay
            assert r.out_dir.startswith(str(tmp_path)) and r.exit_code == 0
            assert r.compared["ranks"] == 2 and r.compared["steps"] == 24
            assert [a.attempt for a in r.attempts] == [0, 1] and r.attempts[1].finished
            assert [x["attempt"] for x in r.launches] == [0, 1] and "total_s" in r.timings
            assert r.warnings == () and r.log_tail is None and r.hint is None and r.message
            assert r.to_json()["verdict"] == "pass"
            r.assert_pass()
            r.assert_outcome("bit_exact")
    """)
    inner.run().assert_outcomes(passed=1)


def test_assert_pass_fails_with_the_report(inner):
    inner.makepyfile(f"""
        def test_buggy(resume_harness):
            resume_harness({BUGGY!r}, plan="7").assert_pass()
    """)
    res = inner.run()
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "resume-harness trial did not pass: divergence" in out
    assert "first training divergence: step 5, rank 0, attempt 1" in out  # the divergence line and its table
    assert "max ULP" in out
    replay = next(ln for ln in res.stdout.lines if "replay: harness run" in ln)
    assert f"replay: harness run {BUGGY} --nproc 2 --backend gloo --seed 0 " in replay and "--kill 7" in replay


def test_the_report_shows_the_hint_and_the_diagnosis():
    from harness.oracle import Divergence, RunResult, Verdict
    from harness.oracle.diagnosis import Diagnosis
    from harness.pytest_plugin import render_report, result_class

    d = Divergence(5, 1, 1, ["rng:numpy"])
    v = Verdict("fail", "divergence", "step 5 differs", first_divergence=d, hint="seed numpy",
                diagnosis=Diagnosis("rng_not_restored", "numpy's RNG was not restored", "rng:numpy alone differs"))
    r = result_class().of(RunResult(v, target="t.py", nproc=2, backend="gloo", seed=0, plan="7",
                                    replay="harness run t.py --kill 7"))
    text = render_report(r)
    for part in ("FAIL  divergence: step 5 differs", "check: seed numpy", "first training divergence: step 5, rank 1",
                 "numpy's RNG was not restored", "rng:numpy alone differs", "replay: harness run t.py --kill 7"):
        assert part in text, part
    assert "\x1b[" not in text  # no colour codes in a failure message
    with pytest.raises(AssertionError) as e:
        r.assert_pass()
    assert str(e.value).startswith("resume-harness trial did not pass: divergence\n") and text in str(e.value)
    with pytest.raises(AssertionError, match="outcome divergence, expected bit_exact"):
        r.assert_outcome("bit_exact")
    r.assert_outcome("divergence")


def test_the_marker_alone_fails_a_test_with_the_report_before_its_body(inner):
    inner.makepyfile(f"""
        import pytest

        @pytest.mark.resume({BUGGY!r}, plan="7")
        def test_buggy():
            raise RuntimeError("the body ran")

        @pytest.mark.resume(target={MLP!r}, plan="7")
        def test_correct():
            pass
    """)
    res = inner.run("-rf")
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    assert "the body ran" not in out
    assert "resume-harness: the trial ended fail (divergence), expected bit_exact" in out
    assert "first training divergence: step 5, rank 0, attempt 1" in out and "replay: harness run" in out


def test_the_marker_hands_the_result_to_the_test_and_expect_checks_another_outcome(inner):
    inner.makepyfile(f"""
        import pytest

        @pytest.mark.resume({BUGGY!r}, plan="7", expect="divergence")
        def test_bug_is_caught(resume_result):
            assert resume_result.first_divergence.step == 5 and resume_result.verdict == "fail"

        @pytest.mark.resume({MLP!r}, plan="7", expect="divergence")
        def test_expected_a_divergence_but_it_passed():
            pass

        @pytest.mark.resume({BUGGY!r}, plan="7", expect=None)
        def test_no_check(resume_result):
            assert resume_result.verdict == "fail"
    """)
    res = inner.run()
    res.assert_outcomes(passed=2, failed=1)
    assert "ended pass (bit_exact), expected divergence" in res.stdout.str()


def test_trials_of_a_random_plan_use_seeds_derived_from_harness_seed(inner):
    inner.makepyfile(f"""
        import json
        import pytest

        @pytest.mark.resume({MLP!r})
        def test_random(resume_results, resume_result):
            print("SEEDS", json.dumps([[r.seed, r.plan] for r in resume_results]))
            assert resume_result is resume_results[-1]
            assert len({{r.out_dir for r in resume_results}}) == len(resume_results)

        @pytest.mark.resume({MLP!r}, plan="7")
        def test_fixed(resume_results):
            assert len(resume_results) == 1 and resume_results[0].seed == 5

        @pytest.mark.resume({MLP!r}, plan="random", trials=2, seed=0)
        def test_marker_trials_win(resume_results):
            assert [r.seed for r in resume_results] == [0, 1]

        @pytest.mark.resume({BUGGY!r}, plan="random")
        def test_buggy():
            pass
    """)
    res = inner.run("--harness-trials", "2", "--harness-seed", "5", "-s")
    res.assert_outcomes(passed=3, failed=1)
    assert "trial 1 of 2 (seed 5) ended fail (divergence), expected bit_exact" in res.stdout.str()
    line = next(ln for ln in res.stdout.lines if ln.startswith("SEEDS") or "SEEDS " in ln)
    seeds = json.loads(line.split("SEEDS ", 1)[1])
    assert [s for s, _ in seeds] == [5, 6]
    assert all(plan.isdigit() for _, plan in seeds)  # concrete steps, drawn per seed


def test_usage_errors(inner):
    inner.makepyfile("""
        import pytest

        def test_result_without_marker(resume_result):
            pass

        @pytest.mark.resume(plan="7")
        def test_marker_without_target():
            pass
    """)
    res = inner.run()
    res.assert_outcomes(errors=2)
    out = res.stdout.str()
    assert "need @pytest.mark.resume(target, ...)" in out and "needs a target" in out


def test_bad_option_values_are_refused(pytester):
    res = pytester.runpytest_inprocess("--harness-trials", "0")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "--harness-trials: must be an integer >= 1, got 0" in res.stderr.str()


def test_a_hypothesis_test_gets_one_outcome_per_plan_so_a_race_is_reported_not_flaky(inner):
    """A stand-in run whose plan 7 fails the first time and passes after (a rank race: which rank's save
    finished before the kill). Hypothesis replays a failing example before reporting it; the fixture gives
    it the plan's first result again, so the test fails with the failure, not with FlakyFailure."""
    inner.makepyfile("""
        import harness.engine
        from hypothesis import HealthCheck, assume, given, settings, strategies as st
        from harness.oracle.verdict import Outcome, RunResult, Verdict

        calls = {}

        def fake_run(target, *, plan, out_dir, **kw):
            key = (target, str(plan))
            calls[key] = calls.get(key, 0) + 1
            if str(plan) == "7" and calls[key] == 1:
                v = Verdict("fail", Outcome.RANKS_RESUMED_APART, "ranks apart")
            elif str(plan) == "3":
                v = Verdict("error", Outcome.NOT_RESUMED, "no resume tested")
            else:
                v = Verdict("pass", Outcome.BIT_EXACT, "ok")
            return RunResult(v, target=target, plan=str(plan), replay="harness run", out_dir=out_dir)

        @settings(max_examples=20, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(plan=st.sampled_from(["3", "5", "7"]))
        def test_any_plan(resume_harness, monkeypatch, plan):
            monkeypatch.setattr(harness.engine, "run", fake_run)
            result = resume_harness("train.py", plan=plan)
            assume(result.verdict != "error")
            assert result.verdict == "pass", result.outcome

        def test_outside_hypothesis_every_call_runs(resume_harness, monkeypatch):
            monkeypatch.setattr(harness.engine, "run", fake_run)
            assert resume_harness("other.py", plan="7").verdict == "fail"
            assert resume_harness("other.py", plan="7").verdict == "pass"
    """)
    res = inner.run("-q")
    out = res.stdout.str()
    res.assert_outcomes(failed=1, passed=1)
    assert "FlakyFailure" not in out and "Unreliable" not in out, out
    assert "AssertionError: ranks_resumed_apart" in out and "plan='7'" in out, out  # the failure, as Hypothesis shrank it


@pytest.mark.slow  # ~15 s: a pytest subprocess whose two workers each start a launcher and import torch
def test_two_marked_tests_under_xdist_get_their_own_run_dirs(pytester):
    """Two workers, each with its own launcher; each test's trial under its own tmp_path."""
    pytester.makepyfile(f"""
        import json
        import os
        import pytest

        @pytest.mark.resume({MLP!r}, plan="7")
        def test_a(resume_result, tmp_path):
            assert resume_result.out_dir.startswith(str(tmp_path))
            print("RUN", json.dumps([os.environ.get("PYTEST_XDIST_WORKER"), resume_result.out_dir]))

        @pytest.mark.resume({MLP!r}, plan="9@1")
        def test_b(resume_result, tmp_path):
            assert resume_result.out_dir.startswith(str(tmp_path))
            print("RUN", json.dumps([os.environ.get("PYTEST_XDIST_WORKER"), resume_result.out_dir]))
    """)
    res = pytester.runpytest_subprocess(*QUIET, "-n", "2", "-rA", timeout=240)
    res.assert_outcomes(passed=2)
    runs = [json.loads(ln.split("RUN ", 1)[1]) for ln in res.stdout.lines if ln.startswith("RUN ")]
    assert len(runs) == 2 and runs[0][1] != runs[1][1]
    assert {w for w, _ in runs} <= {"gw0", "gw1"}


#: The user's own second file beside test_resume.py: the two kills of the newcomer README, as markers.
KILL_POINTS = """
import pytest


@pytest.mark.resume("train_two_phase.py", plan="torch.save", expect="not_resumed")
def test_a_kill_in_the_first_save_tests_no_resume(resume_result):
    assert resume_result.verdict == "error"  # no checkpoint was complete: "no resume tested", never a FAIL


@pytest.mark.resume("train_two_phase.py", plan="torch.save:2")
def test_a_kill_in_the_second_save_resumes_exactly():
    pass
"""
#: Tests of the user's file whose outcome is not the plugin's to decide: named, and checked to be stable.
NOT_THE_PLUGINS: set[str] = set()  # tests of the user's file whose result is not the plugin's to decide: none


def _junit_outcomes(path) -> dict[str, str]:
    import xml.etree.ElementTree as ET

    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        out[case.get("name")] = next(iter(kinds), "passed")
    return out


@pytest.mark.slow  # ~2 min: the user's pytest file, three times in a row, in pytest subprocesses
def test_a_newcomers_test_file_with_hypothesis_passes_every_time(tmp_path, shared_cache):
    """/work/shared/cases/newcomer/test_resume.py as its author runs it: `pytest` in the folder of their
    unmodified scripts. The fixture, the marker (trials=3) and the Hypothesis pattern of docs/pytest.md
    (assume(verdict != "error")) pass, and never flakily: three runs in a row, each the same."""
    import subprocess
    import sys

    for name, source in (("test_resume.py", "newcomer_test_resume.py"), ("train_two_phase.py", "newcomer_two_phase.py"),
                         ("train_sched_rng_bugs.py", "newcomer_sched_rng_bugs.py")):
        (tmp_path / name).write_text(open(os.path.join(SCRIPTS, source)).read())
    (tmp_path / "test_kill_points.py").write_text(KILL_POINTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_"))}
    env["HARNESS_CACHE_DIR"] = shared_cache
    runs = []
    for i in range(3):
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml=run{i}.xml"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert "Flaky" not in out and "Unreliable" not in out, out[-4000:]
        runs.append(_junit_outcomes(tmp_path / f"run{i}.xml"))
        mine = {name: o for name, o in runs[-1].items() if name not in NOT_THE_PLUGINS}
        assert len(mine) == 7 and set(mine.values()) == {"passed"}, (mine, out[-4000:])
    assert runs[0] == runs[1] == runs[2], runs  # the same outcome for every test, every run
    assert not (tmp_path / "ckpt").exists()  # the scripts' relative checkpoints went under each trial's run folder


def test_the_docs_document_every_attribute_of_the_result_the_marker_and_the_options():
    import dataclasses
    import inspect

    from harness.oracle import RunResult
    from harness.pytest_plugin import result_class
    from support import REPO

    section = open(os.path.join(REPO, "docs", "pytest.md")).read()  # the plugin's page of the docs site
    from harness import pytest_plugin

    cls = result_class()
    assert pytest_plugin.HarnessResult is cls and issubclass(cls, RunResult)
    names = {f.name for f in dataclasses.fields(RunResult)}
    names |= {n for n, v in inspect.getmembers(cls) if not n.startswith("_") and n != "of"
              and (isinstance(inspect.getattr_static(cls, n), property) or callable(v))}
    missing = sorted(n for n in names if f"| `{n}` |" not in section and f"| `{n}(" not in section)
    assert not missing, f"docs/pytest.md does not document: {missing}"
    for thing in ("--harness-nproc", "--harness-backend", "--harness-seed", "--harness-trials", "--harness-auto",
                  "@pytest.mark.resume(target", "resume_result", "resume_results", "expect="):
        assert thing in section, thing
