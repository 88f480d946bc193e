"""Every diagnosis rule on a user-style script that records no extras, in auto mode and in probe mode.

The job is tests/support/scripts/user_loop.py: a plain DDP loop with its own torch.save checkpoints
(two-phase commit), one classic resume mistake per ``--bug``; ``--probe`` calls probe.step with the
loss, batch, model and optimizer only (no extras). Kill after step 8, resume from the checkpoint of
step 6: the lost state is first used at step 7. Each expectation follows from the mechanism of the
bug (which step first uses what was lost), not from a built-in scenario's habits.
"""

from __future__ import annotations

import os

import pytest

from harness.engine import run

from support import SCRIPTS  # noqa: E402

LOOP = os.path.join(SCRIPTS, "user_loop.py")

# bug: (kill plan, script args, outcome, first training divergence step, rank, cause)
CASES = {
    "no_skip": ("8", [], "divergence", 7, 0, "data_order"),
    "sampler_epoch": ("16", ["--steps", "20"], "divergence", 16, 0, "data_order"),  # resumes in epoch 1
    "accum": ("6", [], "divergence", 5, 0, "accumulation_position"),
    "rng_other_rank": ("8", [], "divergence", 7, 1, "rng_from_other_rank"),
    "numpy_rng": ("8", [], "divergence", 7, 0, "rng_not_restored"),
    "torch_rng": ("8", [], "divergence", 7, 0, "torch_rng"),
    "lr": ("8", [], "divergence", 7, 0, "lr_schedule"),
    "optimizer": ("8", [], "divergence", 7, 0, "optimizer_state"),
    "ema": ("8", [], "divergence", None, 0, "exported_state"),
}
FAST = {("auto", "accum"), ("probe", "lr"), ("auto", "ema")}


@pytest.fixture
def trial(pool, tmp_path):
    def go(mode, bug, plan, args=(), nproc=2):
        probe = mode == "probe"
        return run(LOOP, nproc=nproc, plan=plan, launcher=pool, out_dir=str(tmp_path / f"{mode}-{bug}"),
                   timeout_s=120, baseline_runs=1, auto=not probe,
                   script_args=["--bug", bug, *args, *(["--probe"] if probe else [])])
    return go


def _params():
    for mode in ("auto", "probe"):
        for bug in CASES:
            marks = () if (mode, bug) in FAST else (pytest.mark.slow,)
            yield pytest.param(mode, bug, id=f"{mode}-{bug}", marks=marks)


@pytest.mark.parametrize("mode, bug", list(_params()))
def test_each_cause_on_a_user_script(trial, mode, bug):
    plan, args, outcome, step, rank, cause = CASES[bug]
    result = trial(mode, bug, plan, args)
    assert result.outcome == outcome, result.message
    d = result.training_divergence
    assert d is not None and d.step == step and d.rank == rank, (d, result.message)
    assert result.diagnosis is not None and result.diagnosis.cause == cause, result.diagnosis


def test_correct_loop_passes_and_latent_rng_is_rng_only_never_a_pass(trial):
    ok = trial("auto", "none", "8")
    assert (ok.verdict, ok.outcome) == ("pass", "bit_exact"), ok.message
    latent = trial("auto", "latent_rng", "8", ["--dropout", "0"])
    assert (latent.verdict, latent.outcome, latent.exit_code) == ("fail", "rng_only", 3), latent.message
    assert latent.training_divergence is None and latent.rng_divergence.step == 7
    assert latent.rng_diagnosis.cause == "torch_rng" and "rng:torch" in latent.message


@pytest.mark.slow
def test_latent_rng_accepted_knowingly(trial, tmp_path):
    r = run(LOOP, nproc=2, plan="8", out_dir=str(tmp_path / "acc"), timeout_s=120, baseline_runs=1, auto=True,
            script_args=["--bug", "latent_rng", "--dropout", "0"], accept_rng=("torch",))
    assert (r.verdict, r.outcome) == ("pass", "rng_accepted") and "rng:torch" in r.accepted
    assert "--accept-rng torch" in r.replay


@pytest.mark.slow
def test_oldest_checkpoint_is_lost_progress(trial):
    # Auto mode sees the script's saves; a probe-mode script's own saves are commits only if it says so
    # (probe.point("checkpoint.committed", step=...)), as the reference checkpointer does.
    r = trial("auto", "oldest", "11")  # checkpoints at 3, 6, 9: the resume loads 3, not 9
    assert (r.verdict, r.outcome) == ("fail", "lost_progress"), r.message
    assert "resumed from step 3" in r.message and "was step 9" in r.message


@pytest.mark.slow
@pytest.mark.parametrize("bug, cause", [("numpy_rng", "rng_not_restored"), ("lr", "lr_schedule"),
                                        ("rng_other_rank", "rng_from_other_rank")])
def test_three_ranks(trial, bug, cause):
    r = trial("auto", bug, "8", ["--no-ddp"], nproc=3)
    assert r.outcome == "divergence" and r.diagnosis.cause == cause, (r.message, r.diagnosis)
    ok = trial("auto", "none", "8", ["--no-ddp"], nproc=3)
    assert ok.outcome == "bit_exact", ok.message


def test_ddp_at_three_ranks_is_reduction_order(trial):
    # DDP rebuilds its gradient buckets after a process's first iteration: a restarted job sums in another order.
    r = trial("auto", "none", "8", nproc=3)
    assert r.outcome == "divergence" and r.training_divergence.step == 7
    assert r.diagnosis.cause == "reduction_order"
    assert set(r.training_divergence.fields) <= {"params", "optimizer"}


def test_ranks_resumed_apart_is_reported_at_once(trial):
    # Rank 1 dies in its third save (step 9) after rank 0 saved step 9: each rank then loads its own newest
    # file, rank 0 step 9 and rank 1 step 6. Reported as soon as both loaded, never as a stall.
    r = trial("auto", "rank_race", "torch.save:3@1")
    assert (r.verdict, r.outcome) == ("fail", "ranks_resumed_apart"), r.message
    assert "rank 0 step 9, rank 1 step 6" in r.message
    assert r.timings["trial_s"] < 30
