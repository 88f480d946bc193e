"""Repro files with real runs: harness run --save-repro then harness repro in fresh interpreters, and
every status of a rerun (reproduces, reproduces differently, does not reproduce after a fix,
environment differs) with an inline script and a built-in scenario, on this process's warm launcher."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.cli import main
from harness.engine import run
from harness.repro import (DOES_NOT_REPRODUCE, ENVIRONMENT_DIFFERS, REPRODUCES, REPRODUCES_DIFFERENTLY, Repro,
                           rerun)

from support import REPO, SCRIPTS

FIXED = """import os, runpy, sys
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_mlp.py"), run_name="__main__")
"""


def harness(*args, cwd, cache):
    env = {**os.environ, "HARNESS_CACHE_DIR": cache, "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def _project(folder) -> str:
    """A user's project: the buggy script (a copy of buggy_reseed.py) beside the training code it runs."""
    os.makedirs(folder, exist_ok=True)
    shutil.copy(os.path.join(SCRIPTS, "ddp_mlp.py"), os.path.join(folder, "ddp_mlp.py"))
    shutil.copy(os.path.join(SCRIPTS, "buggy_reseed.py"), os.path.join(folder, "train.py"))
    return os.path.join(folder, "train.py")


@pytest.mark.slow  # three fresh interpreters, each importing torch
def test_cli_round_trip_in_fresh_interpreters(tmp_path, shared_cache):
    """The user saves the report of a failing run; the maintainer reruns it: it reproduces (exit 0)."""
    _project(tmp_path)
    r = harness("run", "train.py", "--kill", "7", "--save-repro", "bug.toml", "--", "--steps", "12",
                cwd=tmp_path, cache=shared_cache)
    assert r.returncode == 1, r.stderr
    assert "wrote bug report bug.toml; rerun it with: harness repro bug.toml" in r.stderr
    saved = Repro.load(tmp_path / "bug.toml")
    assert (saved.script.path, saved.script.args, saved.plan) == ("train.py", ("--steps", "12"), "7")
    d = saved.expected.first_divergence
    assert (saved.expected.outcome, d.step, d.rank) == ("divergence", 5, 0) and "rng:python" in d.fields

    r = harness("repro", "bug.toml", "--json", "--out", "rerun", cwd=tmp_path, cache=shared_cache)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["status"], out["rerun_status"], out["exit_code"]) == ("reproduces", "reproduces", 0)
    assert out["environment_differences"] == []
    assert out["result"]["first_divergence"]["step"] == 5 and out["result"]["outcome"] == "divergence"
    assert out["result"]["out_dir"] == str(tmp_path / "rerun")


@pytest.fixture(scope="module")
def buggy(tmp_path_factory, pool):
    """(project folder, the repro of a failing run of its train.py) on the warm launcher."""
    folder = tmp_path_factory.mktemp("project")
    script = _project(folder)
    result = run(script, plan="7", launcher=pool, out_dir=str(folder / "run"), script_args=["--steps", "12"])
    assert result.outcome == "divergence"
    return folder, Repro.from_result(result)


def test_a_fix_makes_it_not_reproduce(buggy, pool, tmp_path, capsys):
    folder, repro = buggy
    project = tmp_path / "p"
    shutil.copytree(folder, project, ignore=shutil.ignore_patterns("run"))
    path = dataclasses.replace(repro, script=dataclasses.replace(repro.script, path=str(project / "train.py"))) \
        .dump(tmp_path / "bug.toml")
    (project / "train.py").write_text(FIXED)  # the maintainer's fix
    assert main(["repro", path]) == 2  # refused: the script changed
    assert "--ignore-hash" in capsys.readouterr().err
    outcome = rerun(Repro.load(path), repro_path=path, ignore_hash=True, launcher=pool, out_dir=str(tmp_path / "o"))
    assert (outcome.status, outcome.exit_code, outcome.result.verdict) == (DOES_NOT_REPRODUCE, 1, "pass")
    assert "the run now passes" in outcome.message and "had divergence at step 5, rank 0" in outcome.message


def test_another_divergence_reproduces_differently(buggy, pool, tmp_path):
    _, repro = buggy
    d = repro.expected.first_divergence
    other = dataclasses.replace(repro, expected=dataclasses.replace(
        repro.expected, first_divergence=dataclasses.replace(d, step=9, fields=("loss",))))
    outcome = rerun(other, launcher=pool, out_dir=str(tmp_path / "o"))
    assert (outcome.status, outcome.exit_code) == (REPRODUCES_DIFFERENTLY, 1)
    assert "now divergence at step 5, rank 0" in outcome.message and "had divergence at step 9, rank 0" in outcome.message


def test_a_different_environment_still_reruns_and_names_each_field(buggy, pool, tmp_path):
    _, repro = buggy
    env = dataclasses.replace(repro.environment, numpy="0.0.1",
                              variables={**repro.environment.variables, "OMP_NUM_THREADS": "64"})
    outcome = rerun(dataclasses.replace(repro, environment=env), launcher=pool, out_dir=str(tmp_path / "o"))
    assert (outcome.status, outcome.rerun_status, outcome.exit_code) == (ENVIRONMENT_DIFFERS, REPRODUCES, 2)
    assert [x.split(":")[0] for x in outcome.environment_differences] == [
        "environment.numpy", "environment.variables.OMP_NUM_THREADS"]
    assert "may not hold" in outcome.message and "the run reproduces" in outcome.message
    assert outcome.to_json()["result"]["outcome"] == "divergence"


def test_an_inline_script_reproduces_from_the_file_alone(pool, tmp_path):
    mlp = os.path.join(SCRIPTS, "ddp_mlp.py")
    result = run(mlp, plan="7", launcher=pool, out_dir=str(tmp_path / "run"), baseline_runs=1,
                 script_args=["--steps", "12", "--bug", "reseed"])
    path = Repro.from_result(result, inline=True, baseline_runs=1).dump(tmp_path / "bug.toml")
    repro = Repro.load(path)
    assert repro.script.path is None and "--bug" in repro.script.args and "def " in repro.script.text
    assert repro.baseline_runs == 1
    outcome = rerun(repro, repro_path=path, launcher=pool, out_dir=str(tmp_path / "o"))
    assert outcome.status == REPRODUCES, outcome.message
    assert outcome.result.target == str(tmp_path / "o" / "script" / "ddp_mlp.py")


def test_cli_report_of_a_rerun(buggy, pool, tmp_path, capsys, monkeypatch):
    """harness repro's human output: the run's report, then the status line (the launcher: the warm one)."""
    import harness.launch

    class Shared:
        def __getattr__(self, name):
            return getattr(pool, name)

        def close(self):
            pass

    monkeypatch.setattr(harness.launch, "make_launcher", lambda kind, **kw: Shared())
    _, repro = buggy
    path = repro.dump(tmp_path / "bug.toml")
    assert main(["repro", path, "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "first training divergence: step 5, rank 0, attempt 1" in out
    assert " REPRODUCES  same outcome and first divergence: divergence at step 5, rank 0" in out


@pytest.mark.slow  # a scenario's trial, twice; the scenario form of the file is checked in test_repro_file.py
def test_a_scenario_report_reproduces(pool, tmp_path):
    result = run("buggy/scheduler_not_saved", plan="12", launcher=pool, out_dir=str(tmp_path / "run"))
    repro = Repro.load(Repro.from_result(result).dump(tmp_path / "bug.toml"))
    assert repro.script.scenario == "buggy/scheduler_not_saved" and repro.expected.first_divergence.step == 11
    outcome = rerun(repro, launcher=pool, out_dir=str(tmp_path / "o"))
    assert outcome.status == REPRODUCES, outcome.message


@pytest.mark.slow  # two trials per case, in fresh interpreters
@pytest.mark.parametrize("target, nproc, resume_nproc, extra, outcome, code", [
    ("elastic", 2, 1, [], "elastic_pass", 0),
    ("elastic", 3, 2, ["--loss-rtol", "0.002"], "elastic_pass", 0),
    # a DistributedSampler job on another world size: the checkpointer refuses the resume (error, exit 2)
    ("default", 2, 1, [], "not_elastic", 2),
])
def test_an_elastic_report_reruns_as_an_elastic_trial(tmp_path, shared_cache, target, nproc, resume_nproc, extra,
                                                      outcome, code):
    r = harness("run", target, "--nproc", str(nproc), "--resume-nproc", str(resume_nproc), "--kill", "12", *extra,
                "--save-repro", "bug.toml", "--out", "run", cwd=tmp_path, cache=shared_cache)
    assert r.returncode == code, r.stdout + r.stderr
    saved = Repro.load(tmp_path / "bug.toml")
    rtol = float(extra[1]) if extra else 1e-3  # the oracle's default, recorded as it was applied
    assert (saved.nproc, saved.resume_nproc, saved.loss_rtol, saved.expected.outcome) == (nproc, resume_nproc, rtol,
                                                                                          outcome)

    r = harness("repro", "bug.toml", "--json", "--out", "rerun", cwd=tmp_path, cache=shared_cache)
    assert r.returncode == 0, r.stdout + r.stderr  # reproduces, whether the report was a pass or a failure
    out = json.loads(r.stdout)
    assert (out["status"], out["result"]["outcome"]) == ("reproduces", outcome), out["message"]
    assert f"--resume-nproc {resume_nproc}" in out["result"]["replay"]
    if outcome == "elastic_pass":
        assert out["result"]["compared"]["elastic"]["loss_rtol"] == rtol
