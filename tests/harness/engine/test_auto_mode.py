"""Auto mode end to end: plain scripts (no probe call) under harness.engine.run, and their bad inputs.

The job is tests/support/scripts/plain_ddp.py: plain torch DDP, torch.save checkpoints under the relative
folder ``ckpt`` (auto mode's working directory is the run's own folder), its instrumented twin with
``--probe`` (run with auto=False).
"""

import json
import os

import pytest

from harness.engine import run

from support import SCRIPTS  # noqa: E402

PLAIN = os.path.join(SCRIPTS, "plain_ddp.py")


@pytest.fixture
def trial(pool, tmp_path):
    def go(target=PLAIN, **kwargs):
        kwargs.setdefault("out_dir", str(tmp_path / f"out{len(os.listdir(tmp_path))}"))
        kwargs.setdefault("launcher", pool)
        kwargs.setdefault("timeout_s", 120)
        kwargs.setdefault("baseline_runs", 1)
        return run(target, **kwargs)
    return go


@pytest.mark.parametrize("plan, first, resumed", [("7", 5, 4), ("torch.save:2", 5, 4)])
def test_plain_script_resumes_bit_exact(trial, plan, first, resumed):
    result = trial(plan=plan)
    assert (result.verdict, result.outcome) == ("pass", "bit_exact"), result.message
    a0, a1 = result.attempts
    assert a0.fault is not None and (a0.fault.point == "torch.save") == (plan != "7")
    assert (a1.first_step, a1.resumed_from, a1.last_step) == (first, resumed, 16)
    assert result.compared["reexecuted_rows"] > 0 and result.compared["final_tensors"] == 32
    assert {"batch", "loss", "params", "optimizer", "rng:numpy"} <= set(result.compared["fields"])
    assert any("extra values" in x for x in result.compared["not_recorded"])
    assert "--auto" in result.replay
    out = result.out_dir
    assert os.path.isfile(os.path.join(out, "run", "ckpt", "step4", "rank1.pt"))  # relative path: the run's folder
    assert not os.path.exists("ckpt")
    index = json.load(open(os.path.join(out, "auto_index.json")))
    assert sorted(map(int, index["0"])) == list(range(17))  # the initial state and 16 steps


def test_rng_not_restored_diverges_where_the_instrumented_twin_does(trial):
    auto = trial(script_args=["--bug", "rng"], plan="7")
    twin = trial(script_args=["--bug", "rng", "--probe"], plan="7", auto=False)
    assert (auto.outcome, twin.outcome) == ("divergence", "divergence"), (auto.message, twin.message)
    assert "--auto" not in twin.replay and twin.compared.get("not_recorded") is None
    da, dt = auto.first_divergence, twin.first_divergence
    assert (da.step, da.rank, da.attempt) == (dt.step, dt.rank, dt.attempt) == (5, 0, 1)
    assert {"rng:numpy", "loss"} <= set(da.fields) & set(dt.fields)


@pytest.mark.parametrize("args, verdict, outcome, words", [
    (["--no-step"], "error", "baseline_failed", "saw no training step"),
    (["--opts", "shuffled"], "error", "baseline_failed", "order that varies"),
    (["--bug", "no-resume"], "fail", "not_resumed", "committed before the kill"),
    (["--bug", "perturb"], "fail", "unknown_resume_state", "never had"),
])
def test_bad_input(trial, args, verdict, outcome, words):
    result = trial(script_args=args, plan="7")
    assert (result.verdict, result.outcome) == (verdict, outcome), result.message
    assert words in result.message
    if outcome == "unknown_resume_state":
        assert "closest: step 4, 3 of 4 parameter tensors equal" in result.message
        assert result.first_divergence.step == 5 and result.exit_code == 1


def test_checkpoint_of_another_run_is_refused(trial, tmp_path):
    shared = str(tmp_path / "shared-ckpt")  # an absolute path: the baseline leaves its checkpoints there
    result = trial(script_args=["--ckpt-dir", shared], plan="7")
    assert (result.verdict, result.outcome) == ("error", "error"), result.message
    assert "checkpoint written by another run" in result.message and "step16" in result.message


def test_two_optimizers_stepping_together_are_one_step(trial):
    result = trial(script_args=["--opts", "two"], plan="7")
    assert result.outcome == "bit_exact", result.message
    assert result.compared["rows"] == 16 * 2 + 3 * 2 and result.attempts[1].resumed_from == 4


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["default", "buggy/numpy_rng_not_saved", "buggy/scheduler_not_saved",
                                      "buggy/optimizer_not_saved", "buggy/sampler_epoch_not_set"])
def test_scenario_without_probe_calls_gets_the_same_verdict(trial, scenario):
    """auto=True turns probe.step/finish into no-ops: the scenario as if its probe calls were deleted."""
    probed = trial(scenario, plan="12")
    auto = trial(scenario, plan="12", auto=True)
    assert (auto.verdict, auto.outcome) == (probed.verdict, probed.outcome), (auto.message, probed.message)
    if probed.first_divergence is not None:
        assert auto.first_divergence.step == probed.first_divergence.step
        assert auto.first_divergence.rank == probed.first_divergence.rank


@pytest.mark.slow
def test_subprocess_launcher_installs_auto_mode(tmp_path):
    from harness.launch import make_launcher

    with make_launcher("subprocess") as launcher:
        result = run(PLAIN, plan="7", launcher=launcher, out_dir=str(tmp_path / "out"), baseline_runs=1,
                     timeout_s=120, use_cache=False)
    assert result.outcome == "bit_exact", result.message
    assert result.attempts[1].resumed_from == 4
