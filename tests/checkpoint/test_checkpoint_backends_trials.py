"""Kill/resume trials of the built-in default scenario under every strategy (``harness run --strategy``).

Each trial goes through ``harness.engine.run`` on the shared warm pool and must give a bit-exact PASS:
the resumed run ends, step by step and in its final state, exactly where the uninterrupted one does.
The default suite runs two representative trials at 3 ranks; the full matrix (every strategy, 2 and 3
ranks, a step kill and mid-save kills on two ranks) is marked slow.

Mid-save kills: under fsdp and deepspeed-* rank 0 reaches ``checkpoint.write`` 5 times per save (the
backend's folder, its two rank files, shared/state.json and .safetensors) and every other rank 3
times, so ``checkpoint.write:7`` lands in the second save (step 10), after the backend wrote its
files and before the manifest; ``checkpoint.write:4@1`` kills rank 1 just before the backend's write
of its next save.
"""

from __future__ import annotations

import importlib.util

import pytest

from harness.engine import run

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
NEEDS_DEEPSPEED = pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed "
                                     "(DS_BUILD_OPS=0 pip install -e '.[test]')")

STRATEGIES = ["fsdp"] + [pytest.param(f"deepspeed-zero{z}", marks=NEEDS_DEEPSPEED) for z in range(4)]
PLANS = {"step": ["12"], "mid-save": ["checkpoint.write:7", "checkpoint.write:4@1"]}


def _trial(pool, tmp_path, strategy: str, nproc: int, plan):
    result = run("default", nproc=nproc, plan=plan, strategy=strategy, launcher=pool, out_dir=str(tmp_path / "out"))
    assert result.verdict == "pass" and result.verdict_.outcome == "bit_exact", (result.verdict_, result.replay)
    assert len(result.attempts) == len(plan) + 1  # every fault fired, each attempt resumed
    assert f"--strategy {strategy}" in result.replay
    return result


def test_fsdp_mid_save_kills_resume_bit_exact_at_3_ranks(pool, tmp_path):
    _trial(pool, tmp_path, "fsdp", 3, PLANS["mid-save"])


@NEEDS_DEEPSPEED
@pytest.mark.slow  # DeepSpeed's first import in a process is slow; CI runs it with the slow set
def test_deepspeed_zero2_kill_resumes_bit_exact_at_3_ranks(pool, tmp_path):
    _trial(pool, tmp_path, "deepspeed-zero2", 3, PLANS["step"])


@pytest.mark.slow
@pytest.mark.parametrize("plan", sorted(PLANS))
@pytest.mark.parametrize("nproc", [2, 3])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_resumes_bit_exact(pool, tmp_path, strategy, nproc, plan):
    _trial(pool, tmp_path, strategy, nproc, PLANS[plan])


def test_strategy_is_in_the_baseline_key_the_env_and_the_replay(tmp_path):
    from harness.engine.baseline import baseline_key
    from harness.engine import TrialSpec
    from harness.engine.jobs import RunFolder, attempt_spec
    from harness.engine.target import resolve_target
    from harness.engine.trial import replay_command
    from harness.faults import FaultPlan

    tgt = resolve_target("default")
    kw = dict(nproc=2, backend="gloo", script_args=(), runs=1)
    keys = {s: baseline_key(tgt, **kw, strategy=s) for s in (None, "fsdp", "deepspeed-zero2", "deepspeed-zero3")}
    assert len(set(keys.values())) == 4
    trial = TrialSpec("default", backend="gloo", timeout_s=10)
    spec = attempt_spec(tgt, RunFolder(str(tmp_path)), trial.replace(strategy="fsdp"), role="trial", attempt=0,
                        fault=None)
    assert spec.env["HARNESS_STRATEGY"] == "fsdp"
    assert "HARNESS_STRATEGY" not in attempt_spec(tgt, RunFolder(str(tmp_path)), trial, role="trial", attempt=0,
                                                  fault=None).env
    assert "--strategy deepspeed-zero3" in replay_command(tgt, nproc=2, backend="gloo", seed=0,
                                                          plan=FaultPlan.parse("12"), strategy="deepspeed-zero3")
    with pytest.raises(ValueError, match="--strategy must be one of"):
        run("default", plan="12", strategy="zero9", out_dir=str(tmp_path / "o"))


def test_cli_strategies_are_the_scenarios_strategies():
    from harness.engine.trial import STRATEGIES as ENGINE
    from harness.scenarios._common import STRATEGIES as SCENARIOS

    assert ENGINE == SCENARIOS
