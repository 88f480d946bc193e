"""Auto mode through DeepSpeed's engine, Accelerate's AcceleratedOptimizer and FSDP2: an unmodified script
gets the verdict of its instrumented twin (the same file run with --probe, auto=False), with the same kill.

The jobs are tests/support/scripts/plain_deepspeed.py (ZeRO-2 or 3, torch AdamW, gradient accumulation: the
optimizer steps inside ``engine.step()``, over flat fp32 partitions), plain_accelerate.py
(``Accelerator(cpu=True)``, gradient accumulation: ``AcceleratedOptimizer.step`` skips while
accumulating) and plain_fsdp.py (``fully_shard`` on a CPU mesh, DTensor parameters digested as each
rank's shards; DCP checkpoints through ``get_state_dict``, whose lr-0 step on a fresh optimizer is not a
training step). All save every 3 steps; a kill at step 7 resumes from step 6 (mid-epoch at 2 ranks).
"""

import importlib.util
import os

import pytest

from harness.engine import run

from support import SCRIPTS  # noqa: E402


def _needs(module):
    # find_spec, not importorskip: importing deepspeed at collection would slow every fast run down
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"needs {module} (the [{module}] extra)")


DS, ACC = _needs("deepspeed"), _needs("accelerate")


def _trial(pool, tmp_path, script, args, nproc, **kwargs):
    return run(os.path.join(SCRIPTS, script), nproc=nproc, script_args=list(args), plan="7", launcher=pool,
               baseline_runs=1, timeout_s=300, out_dir=str(tmp_path / f"out{len(os.listdir(tmp_path))}"), **kwargs)


RNG = {"rng:torch", "rng:numpy", "loss"}


@pytest.mark.slow
@pytest.mark.parametrize("script, args, nproc, differ", [
    pytest.param("plain_deepspeed.py", [], 2, RNG, marks=DS),  # DeepSpeed's checkpoint holds no RNG state
    pytest.param("plain_deepspeed.py", ["--save-rng"], 2, None, marks=DS),
    pytest.param("plain_accelerate.py", [], 2, None, marks=ACC),
    pytest.param("plain_accelerate.py", ["--bug", "skip"], 2, {"batch", "loss"}, marks=ACC),  # the epoch starts over
    pytest.param("plain_deepspeed.py", [], 3, RNG, marks=DS),
    # ZeRO-3: parameters digested as their partitions, the optimizer's state keyed by flat fp32 partitions
    # that its param_groups list only during a step; deterministic mode fills the partitions' padding
    pytest.param("plain_deepspeed.py", ["--stage", "3", "--save-rng", "--deterministic"], 3, None, marks=DS),
    pytest.param("plain_deepspeed.py", ["--stage", "3", "--deterministic"], 2, RNG, marks=DS),
    # DDP at 3 ranks: the restarted job's gradient buckets sum in another order (docs/cli/certify.md, "What the
    # certificates showed"): the same weights and data, other bits after the first step (in the moments at least: a step's
    # update may round to the same parameters).
    pytest.param("plain_accelerate.py", [], 3, {"optimizer"}, marks=ACC),
    ("plain_fsdp.py", [], 2, None),
    ("plain_fsdp.py", [], 3, None),
    ("plain_fsdp.py", ["--bug", "rng"], 2, RNG),
    ("plain_fsdp.py", ["--bug", "optim"], 3, {"params", "optimizer"}),  # the optimizer starts over
])
def test_unmodified_script_gets_the_verdict_of_its_instrumented_twin(pool, tmp_path, script, args, nproc, differ):
    outcome = "bit_exact" if differ is None else "divergence"
    auto = _trial(pool, tmp_path, script, args, nproc)
    twin = _trial(pool, tmp_path, script, [*args, "--probe"], nproc, auto=False)
    assert "--auto" in auto.replay and "--auto" not in twin.replay  # auto mode, and the twin through the probe
    assert (auto.verdict, auto.outcome) == (twin.verdict, twin.outcome) == \
        ("pass" if outcome == "bit_exact" else "fail", outcome), (auto.message, twin.message)
    for result in (auto, twin):
        a0, a1 = result.attempts
        assert a0.fault is not None and a0.last_step == 7
        assert (a1.first_step, a1.last_step) == (7, 16)  # resumed from the checkpoint of step 6
    assert auto.attempts[1].resumed_from == 6  # inferred from the restored state
    if outcome == "divergence":
        da, dt = auto.first_divergence, twin.first_divergence
        assert (da.step, da.rank, da.attempt) == (dt.step, dt.rank, dt.attempt) == (7, 0, 1)
        assert differ <= set(da.fields) & set(dt.fields), (da.fields, dt.fields)
    else:
        assert auto.compared["final_tensors"] > 0 and twin.compared["final_tensors"] > 0
