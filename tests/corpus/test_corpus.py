"""The corpus of real resume bugs (tests/corpus/README.md): each case through the real engine, in auto mode.

Every script is a plain torch.distributed job (no harness import) that keeps a bug from a public report;
the same script with --fixed is its twin without the bug. A case asserts what the bug's mechanism
implies, not what the tool happened to print: the outcome, the first step whose training state differs
(the first step that uses the state the resume lost), the first RNG divergence where a stream is the
point, and the likely cause. The twin must resume bit-exact from the checkpoint the design says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Case:
    script: str
    nproc: int
    kill: str
    resumed_from: int | None  # the step of the checkpoint the buggy job resumes from (None: not inferable)
    outcome: str
    step: int | None  # first training divergence; None: the training is exact through its last step
    cause: str | None  # diagnosis.cause; None: not asserted
    fields: frozenset = frozenset()  # fields the first training divergence must name
    absent: frozenset = frozenset()  # fields it must not name (state the step did not use yet)
    rng_step: int | None = None  # first RNG divergence, where an RNG stream is the point
    rng_rank: int | None = None
    twin_resumed_from: int | None = None  # default: resumed_from


CASES = [
    # noise from numpy's global RNG, whose state the checkpoint lacks: step 9 draws from a reseeded stream
    Case("numpy_rng_not_saved", 2, "10", 8, "divergence", 9, "rng_not_restored",
         fields=frozenset({"rng:numpy", "loss", "params"}), rng_step=9, rng_rank=0),
    # the training resumes exactly; only the EMA it exports at the end (out/ema.pt) restarted at step 8
    Case("ema_not_saved", 2, "10", 8, "divergence", None, "exported_state"),
    # the optimizer restores step 9's lr; step 9's scheduler.step() counts from 0, so row 9 holds the
    # lr of step 1 while the parameters (updated with the right lr) still match
    Case("scheduler_not_saved", 2, "10", 8, "divergence", 9, "lr_schedule",
         fields=frozenset({"optimizer"}), absent=frozenset({"params", "loss"})),
    # the replay moves the schedule to step 16 before step 9's update: step 9 trains with another lr
    Case("scheduler_double_step", 2, "10", 8, "divergence", 9, "lr_schedule",
         fields=frozenset({"params", "optimizer"}), absent=frozenset({"loss", "batch"})),
    # Adam's moments and step counts restart at step 9's update (the loss of step 9 is still exact)
    Case("optimizer_not_saved", 3, "10", 8, "divergence", 9, "optimizer_state",
         fields=frozenset({"params", "optimizer"}), absent=frozenset({"loss", "batch"})),
    # ranks 1 and 2 restore rank 0's torch RNG: their dropout at step 9 differs, rank 0's does not
    Case("rng_rank0_everywhere", 3, "10", 8, "divergence", 9, "rng_from_other_rank",
         fields=frozenset({"params"}), rng_step=9, rng_rank=1),
    # resumed at batch 5 of epoch 0, the loop feeds batch 0 again at step 6
    Case("epoch_restarts", 2, "8", 5, "divergence", 6, "data_order", fields=frozenset({"batch", "loss"})),
    # resumed at batch 5 of epoch 0 (8 batches per epoch at 3 ranks): steps 6-8 are exact, and epoch 1
    # loses its first 5 batches again, so step 9 (its first step) gets its batch 5
    Case("skip_every_epoch", 3, "7", 5, "divergence", 9, "data_order", fields=frozenset({"batch", "loss"})),
    # resumed at batch 3 of epoch 1 (12 batches per epoch at 2 ranks): step 16 reads epoch 0's permutation
    Case("sampler_epoch_reset", 2, "17", 15, "divergence", 16, "data_order", fields=frozenset({"batch", "loss"})),
    # the checkpoint at micro-batch 10 cut step 3's window (micro-batches 9-12) after 2 of 4: the
    # resumed step 3 runs 2 backward calls and steps with half the gradient
    Case("accum_window_cut", 2, "4", 2, "divergence", 3, "accumulation_position",
         fields=frozenset({"loss", "params"}), twin_resumed_from=3),
    # killed after step 12, it goes back to step 5 ("iter-5" sorts after "iter-10"): exact, but 5 steps lost
    Case("newest_ckpt_lexicographic", 2, "12", 5, "lost_progress", None, "lost_progress", twin_resumed_from=10),
    # iter(loader) after the RNG restore draws a base seed: torch's stream is one draw off from step 6 on
    # every rank, and the training never reads it
    Case("loader_iter_after_restore", 3, "7", 5, "rng_only", None, "torch_rng", rng_step=6, rng_rank=0),
    # the warmup restarts: step 11 is set to the lr of step 1
    Case("global_step_not_restored", 3, "12", 10, "divergence", 11, "lr_schedule",
         fields=frozenset({"params", "optimizer"}), absent=frozenset({"loss", "batch"})),
    # the raw model is loaded from the EMA written at step 8: step 9 starts from weights no step of the
    # uninterrupted run had (no cause of the table fits: the outcome names it)
    Case("ema_saved_as_model", 2, "10", None, "unknown_resume_state", 9, None, twin_resumed_from=8),
]

# Where today's tool is wrong (see README.md): strict, so the fix shows up as an XPASS to remove.
KNOWN_WRONG: dict[str, str] = {}  # case -> why today's tool gets it wrong (strict xfail); empty: all right
QUICK = {"numpy_rng_not_saved", "skip_every_epoch"}  # the fast suite's representatives (RNG; data order, 3 ranks)


def _params(twin: bool):
    out = []
    for case in CASES:
        marks = [] if case.script in QUICK else [pytest.mark.slow]
        if not twin and case.script in KNOWN_WRONG:
            marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=KNOWN_WRONG[case.script]))
        out.append(pytest.param(case, id=case.script, marks=marks))
    return out


@pytest.fixture
def trial(resume_harness):
    def go(case: Case, *args: str):
        # one baseline run: the CLI's second run (the determinism check) is what `harness run` adds
        return resume_harness(os.path.join(HERE, case.script + ".py"), nproc=case.nproc, plan=case.kill, seed=0,
                              backend="gloo", script_args=list(args), baseline_runs=1, timeout_s=120)
    return go


def _training(j: dict) -> dict | None:
    if "training_divergence" in j:
        return j["training_divergence"]
    first = j["first_divergence"]  # before the split: the first divergence, unless only RNG streams differ
    return None if first is None or all(f.startswith("rng:") for f in first["fields"]) else first


def _rng(j: dict) -> dict | None:
    if "rng_divergence" in j:
        return j["rng_divergence"]
    first = j["first_divergence"]
    return first if first is not None and any(f.startswith("rng:") for f in first["fields"]) else None


def _cause(j: dict) -> str | None:
    return (j.get("diagnosis") or j.get("rng_diagnosis") or {}).get("cause")


@pytest.mark.parametrize("case", _params(twin=False))
def test_bug_is_caught_at_the_step_that_uses_the_lost_state(trial, case):
    result = trial(case)
    j = result.to_json()
    report = result.report()
    assert result.outcome == case.outcome, report
    assert result.verdict == "fail", report
    if case.resumed_from is not None:
        assert result.attempts[1].resumed_from == case.resumed_from, report
    training = _training(j)
    if case.step is None:  # exact training: no divergence during the steps (a final export may differ)
        assert training is None or training["step"] is None, report
    else:
        assert training is not None and training["step"] == case.step, report
        assert case.fields <= set(training["fields"]), report
        assert not case.absent & set(training["fields"]), report
    if case.rng_step is not None:
        rng = _rng(j)
        assert rng is not None and (rng["step"], rng["rank"]) == (case.rng_step, case.rng_rank), report
    if case.outcome == "divergence" and case.step is None:  # what differs is left at the end (an exported file)
        assert result.first_divergence is not None and result.first_divergence.step is None, report
    if case.cause is not None:
        assert _cause(j) == case.cause, report


@pytest.mark.parametrize("case", _params(twin=True))
def test_fixed_twin_resumes_bit_exact(trial, case):
    result = trial(case, "--fixed")
    assert (result.verdict, result.outcome) == ("pass", "bit_exact"), result.report()
    assert result.attempts[1].resumed_from == (case.twin_resumed_from or case.resumed_from), result.report()
