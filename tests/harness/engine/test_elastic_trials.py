"""Trials that resume on another world size (``harness run --resume-nproc``), end to end: real ranks killed
and resumed on fewer or more, judged by the elastic oracle (tests/harness/oracle/test_elastic.py has its
synthetic cases)."""

from __future__ import annotations

import pytest

from harness.engine import UsageError, run


@pytest.fixture
def trial(pool, tmp_path):
    def go(target="elastic", **kwargs):
        kwargs.setdefault("out_dir", str(tmp_path / "out"))
        kwargs.setdefault("launcher", pool)
        kwargs.setdefault("timeout_s", 180)
        kwargs.setdefault("plan", "12")
        return run(target, **kwargs)
    return go


@pytest.mark.slow
@pytest.mark.parametrize("nproc,resume,strategy", [(2, 1, None), (1, 2, None), (4, 2, None), (3, 2, None),
                                                   (2, 1, "fsdp"), (2, 3, "fsdp"), (2, 1, "deepspeed-zero1"),
                                                   (1, 2, "deepspeed-zero2")])
def test_elastic_resume_passes_with_the_elastic_wording(trial, nproc, resume, strategy):
    result = trial(nproc=nproc, resume_nproc=resume, strategy=strategy)
    assert (result.verdict, result.outcome) == ("pass", "elastic_pass"), result.message
    assert result.message.startswith(f"ELASTIC PASS ({nproc} -> {resume} ranks, resumed at step(s) [10])")
    assert "bit-exact" not in result.message.lower() and "bit_exact" not in str(result.outcome)
    e = result.compared["elastic"]
    assert e["samples_after_resume"] == 14 * 2 * 24 and e["steps_after_resume"] == 14  # steps 11..24, 2 x 24 each
    assert 0 <= e["loss_max_rel"] <= e["loss_rtol"] == 1e-3
    assert ("re-derived" in e["rng"]) == (resume > nproc) and ("dropped" in e["rng"]) == (resume < nproc)
    assert f"--resume-nproc {resume}" in result.replay
    assert [a.attempt for a in result.attempts] == [0, 1]


@pytest.mark.slow
def test_two_faults_the_second_resume_from_a_checkpoint_the_resumed_run_saved(trial):
    result = trial(nproc=2, resume_nproc=3, plan=["12", "18@2"])
    assert (result.verdict, result.outcome) == ("pass", "elastic_pass"), result.message
    assert "resumed at step(s) [10, 15]" in result.message and [a.attempt for a in result.attempts] == [0, 1, 2]


@pytest.mark.slow
def test_a_scenario_whose_data_order_is_not_elastic_is_reported_so_never_exact(trial):
    result = trial("default", nproc=2, resume_nproc=1)
    assert (result.verdict, result.outcome) == ("error", "not_elastic"), result.message
    assert "data loader 0: its sampler is a DistributedSampler, whose order depends on the world size" in result.message
    assert "pass" not in result.verdict and "exact" not in str(result.outcome)


@pytest.mark.slow
def test_deepspeed_zero0_cannot_reshard_and_the_trial_says_so(trial):
    result = trial(nproc=2, resume_nproc=1, strategy="deepspeed-zero0")
    assert (result.verdict, result.outcome) == ("error", "error"), result.message
    assert "strategy 'deepspeed' cannot reshard a checkpoint saved by 2 rank(s) (ZeRO stage 0" in result.message


def test_bad_elastic_arguments_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--resume-nproc must be an integer >= 1, got 0"):
        run("elastic", nproc=2, resume_nproc=0, plan="12", out_dir=str(tmp_path / "a"))
    with pytest.raises(UsageError, match="--loss-rtol 0.01 needs --resume-nproc"):
        run("elastic", nproc=2, loss_rtol=0.01, plan="12", out_dir=str(tmp_path / "b"))
    with pytest.raises(UsageError, match=r"fault 2 \(15@1\) is on rank 1, but the job has --resume-nproc 1"):
        run("elastic", nproc=2, resume_nproc=1, plan=["12", "15@1"], out_dir=str(tmp_path / "c"))


@pytest.mark.slow
def test_harness_command_reports_elastic_runs_without_claiming_bit_exact(tmp_path):
    """As users run it: the real command in a fresh interpreter, human and JSON output, and exit codes."""
    import json
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "harness.cli", "run", *args], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)

    human = cli("elastic", "--nproc", "2", "--resume-nproc", "1", "--kill", "12", "--out", str(tmp_path / "a"))
    assert human.returncode == 0, human.stdout + human.stderr
    assert "ELASTIC PASS" in human.stdout and "bit-exact" not in human.stdout.lower()
    assert "loss deviation" in human.stdout and "rtol 0.001" in human.stdout
    not_elastic = cli("default", "--nproc", "2", "--resume-nproc", "1", "--kill", "12", "--json",
                      "--out", str(tmp_path / "b"))
    doc = json.loads(not_elastic.stdout)
    assert not_elastic.returncode != 0 and doc["outcome"] == "not_elastic" and doc["verdict"] != "pass", doc
