"""The elastic oracle (harness/oracle/elastic.py) on synthetic traces: it passes only with the elastic
wording, and no claim it calls exact can be fooled (state at the resume point, sample order, the steps
before the resume); the loss is held to its tolerance."""

from __future__ import annotations

import pytest

from harness.oracle import Outcome
from harness.oracle.elastic import assess_elastic
from support.traces import TraceBuilder, digest

G, MICRO, STEPS, CKPT, KILL = 12, 2, 10, 5, 7  # global micro-batch, micro-batches per step


def _samples(step: int, rank: int, world: int) -> str:
    """Rank `rank`'s slices of the step's global micro-batches (ids step*100 + m*G + k)."""
    L = G // world
    return ";".join(" ".join(str(step * 100 + m * G + k) for k in range(rank * L, (rank + 1) * L))
                    for m in range(MICRO))


def _state(step: int, inexact: str = "") -> dict:
    """Weights, optimizer, the recorded values; `inexact`: after an elastic resume, weights and moments differ
    in their last bits (their digests differ from the baseline's)."""
    return {"params": digest("params", step, inexact),
            "params_tensors": {n: digest(n, step, inexact) for n in ("fc.weight", "fc.bias")},
            "optimizer": digest("opt", step, inexact), "optimizer_groups": [{"lr": 0.01 / step}],
            "optimizer_state": {"fc.weight exp_avg": digest("m", step, inexact), "fc.bias exp_avg": digest("mb", step,
                                                                                                             inexact)}}


def _step(rank: int, step: int, attempt: int, world: int, loss_scale: float = 1.0, inexact: str = "") -> dict:
    loss = (2.0 / step + 0.1 * rank) * loss_scale  # the ranks' mean is 2/step + 0.05 (world - 1)
    loss -= 0.05 * (world - 1) * loss_scale  # so that the global loss is 2/step on every world size
    return {"kind": "step", "attempt": attempt, "rank": rank, "step": step, "loss": None, "loss_value": loss,
            "batch": digest("batch", world, rank, step), "rng": {"torch": digest("rng", world, rank, step)},
            **_state(step, inexact), "extra": {"samples": _samples(step, rank, world), "data_position": step}}


def _restored(rank: int, step: int, attempt: int, world: int, inexact: str = "") -> dict:
    return {"kind": "restored", "attempt": attempt, "rank": rank, "step": step, "world_size": world,
            **_state(step, inexact), "extra": {"data_position": step}}


def _run(path, nproc: int, resume: int | None, loss_scale: float = 1.0) -> TraceBuilder:
    """The baseline (resume None) or an elastic trial: attempt 0 on nproc ranks to KILL, attempt 1 on `resume`."""
    b = TraceBuilder(path, max(nproc, resume or 0))
    b.start(0, range(nproc))
    last = STEPS if resume is None else KILL
    for s in range(1, last + 1):
        for r in range(nproc):
            b.rows[r].append(_step(r, s, 0, nproc))
        if s % CKPT == 0:
            b.event(0, "checkpoint.committed", s, range(nproc))
    if resume is None:
        return b.finish(0, range(nproc))
    b.fault(0, KILL)
    b.start(1, range(resume))
    for r in range(resume):
        b.rows[r].append(_restored(r, CKPT, 1, resume))
    b.event(1, "checkpoint.loaded", CKPT, range(resume))
    for s in range(CKPT + 1, STEPS + 1):
        for r in range(resume):
            b.rows[r].append(_step(r, s, 1, resume, loss_scale if s > CKPT + 2 else 1.0))
    return b.finish(1, range(resume))


def _judge(tmp_path, nproc, resume, edit=None, loss_scale=1.0, **kw):
    base = _run(tmp_path / "base", nproc, None).write()
    trial = _run(tmp_path / "trial", nproc, resume, loss_scale)
    if edit:
        edit(trial)
    return assess_elastic(base, trial.write(), nproc=nproc, resume_nproc=resume, n_faults=1, launched=2, **kw)


def _restored_row(b: TraceBuilder, rank: int) -> dict:
    return next(x for x in b.rows[rank] if x["kind"] == "restored")


@pytest.mark.parametrize("nproc,resume", [(2, 1), (1, 2), (4, 3)])
def test_pass_says_elastic_never_bit_exact(tmp_path, nproc, resume):
    v = _judge(tmp_path, nproc, resume)
    assert v.verdict == "pass" and v.outcome is Outcome.ELASTIC_PASS, v.message
    assert v.message.startswith(f"ELASTIC PASS ({nproc} -> {resume} ranks, resumed at step(s) [5])")
    assert "state at resume exact" in v.message and "sample order exact (5 steps, 120 samples)" in v.message
    assert "bit-exact" not in v.message.lower() and "bit_exact" not in str(v.outcome)
    assert v.compared["elastic"]["loss_max_rel"] < 1e-12


def test_restored_weights_that_differ_at_the_resume_point_fail(tmp_path):
    def edit(b):
        _restored_row(b, 0)["params_tensors"]["fc.bias"] = digest("other")

    v = _judge(tmp_path, 2, 1, edit)
    assert (v.verdict, v.outcome) == ("fail", Outcome.DIVERGENCE)
    assert "state restored at the resume point differs" in v.message and "params" in v.first_divergence.fields
    assert [t.name for t in v.first_divergence.tensors] == ["fc.bias"]


@pytest.mark.parametrize("field,value", [("optimizer_state", {"fc.weight exp_avg": "0" * 32, "fc.bias exp_avg": "0"}),
                                         ("optimizer_groups", [{"lr": 0.5}]),
                                         ("extra", {"data_position": 4})])
def test_restored_optimizer_scheduler_or_position_that_differ_fail(tmp_path, field, value):
    def edit(b):
        _restored_row(b, 1)[field] = value

    v = _judge(tmp_path, 1, 2, edit)
    assert (v.verdict, v.outcome) == ("fail", Outcome.DIVERGENCE), v.message
    assert v.first_divergence.rank == 1 and v.first_divergence.step == CKPT


def test_a_changed_sample_order_is_not_elastic(tmp_path):
    def edit(b):  # the resumed rank takes its samples in another order within the step
        row = b.row(0, CKPT + 2, 1)
        first, second = row["extra"]["samples"].split(";")
        row["extra"]["samples"] = f"{second};{first}"

    v = _judge(tmp_path, 2, 1, edit)
    assert (v.verdict, v.outcome) == ("fail", Outcome.NOT_ELASTIC)
    assert v.message.startswith("not elastic: the global sample order after the resume on 1 rank(s) differs") and \
        f"step {CKPT + 2}" in v.message


def test_a_sample_order_in_rank_blocks_is_not_taken_for_elastic(tmp_path):
    """Per step the ranks' slices interleave micro-batch by micro-batch; one rank's whole window first is another order."""
    def edit(b):
        for s in range(CKPT + 1, STEPS + 1):
            for r in (0, 1):
                row = b.row(r, s, 1)
                row["extra"]["samples"] = row["extra"]["samples"].replace(";", " ")  # one micro-batch of 12

    v = _judge(tmp_path, 1, 2, edit)
    assert v.outcome is Outcome.NOT_ELASTIC


def test_loss_beyond_the_tolerance_fails_with_the_numbers_and_passes_under_a_wider_one(tmp_path):
    v = _judge(tmp_path, 2, 1, loss_scale=1.01)
    assert (v.verdict, v.outcome) == ("fail", Outcome.DIVERGENCE)
    assert "loss after the resume deviates by up to 0.01 relative" in v.message and "beyond rtol 0.001" in v.message
    v = _judge(tmp_path / "wide", 2, 1, loss_scale=1.01, loss_rtol=0.02)
    assert v.outcome is Outcome.ELASTIC_PASS and "within rtol 0.02 (max rel 0.01" in v.message


def test_a_divergence_before_the_resume_fails_as_for_a_bit_exact_trial(tmp_path):
    def edit(b):
        b.row(1, 3, 0)["rng"]["torch"] = digest("drawn")

    v = _judge(tmp_path, 2, 1, edit)
    assert (v.verdict, v.outcome) == ("fail", Outcome.DIVERGENCE)
    assert v.message.startswith("before the resume (attempt 0, 2 rank(s), as the baseline): step 3, rank 1: rng:torch")


def test_no_restored_state_or_no_samples_is_an_error_not_a_pass(tmp_path):
    def no_restored(b):
        b.rows[0] = [x for x in b.rows[0] if x["kind"] != "restored"]

    v = _judge(tmp_path / "a", 2, 1, no_restored)
    assert (v.verdict, v.outcome) == ("error", Outcome.ERROR) and "probe.restored" in v.message

    def no_samples(b):
        del b.row(0, STEPS, 1)["extra"]["samples"]

    v = _judge(tmp_path / "b", 2, 1, no_samples)
    assert (v.verdict, v.outcome) == ("error", Outcome.ERROR) and "per-sample ids" in v.message


def test_refusals_by_the_checkpointer_are_named(tmp_path):
    def not_elastic(b):
        b.rows[0] = [x for x in b.rows[0] if x["attempt"] == 0]
        b.rows[0].append({"kind": "event", "attempt": 1, "rank": 0, "name": "checkpoint.not_elastic", "step": 0,
                          "info": {"loader": 0, "reason": "its sampler is a DistributedSampler, whose order depends "
                                                          "on the world size"}})

    v = _judge(tmp_path / "a", 2, 1, not_elastic)
    assert (v.verdict, v.outcome) == ("error", Outcome.NOT_ELASTIC)
    assert "data loader 0: its sampler is a DistributedSampler" in v.message and "exact" in v.message

    def cannot_reshard(b):
        not_elastic(b)
        b.rows[0][-1].update(name="checkpoint.cannot_reshard", info={"strategy": "deepspeed", "saved_world": 2,
                                                                     "reason": "ZeRO files"})

    v = _judge(tmp_path / "b", 2, 1, cannot_reshard)
    assert (v.verdict, v.outcome) == ("error", Outcome.ERROR)
    assert "strategy 'deepspeed' cannot reshard a checkpoint saved by 2 rank(s)" in v.message


@pytest.mark.parametrize("restored_as", ["own", "baseline"])
def test_a_second_resume_restores_the_runs_own_state_not_the_baseline(tmp_path, restored_as):
    """2 -> 1, killed again at step 9 on 1 rank, resumed from the checkpoint of step 8 that the 1-rank run saved:
    its weights are the resumed run's own (not the baseline's), and that is what must be restored."""
    base = _run(tmp_path / "base", 2, None).write()
    b = TraceBuilder(tmp_path / "trial", 2).start(0)
    for s in range(1, KILL + 1):
        for r in range(2):
            b.rows[r].append(_step(r, s, 0, 2))
        if s == CKPT:
            b.event(0, "checkpoint.committed", s)
    b.fault(0, KILL).start(1, [0])
    b.rows[0].append(_restored(0, CKPT, 1, 1))
    b.event(1, "checkpoint.loaded", CKPT, [0])
    for s in (6, 7, 8, 9):
        b.rows[0].append(_step(0, s, 1, 1, inexact="1 rank"))
    b.event(1, "checkpoint.committed", 8, [0]).fault(1, 9).start(2, [0])
    b.rows[0].append(_restored(0, 8, 2, 1, inexact="1 rank" if restored_as == "own" else ""))
    b.event(2, "checkpoint.loaded", 8, [0])
    for s in (9, 10):
        b.rows[0].append(_step(0, s, 2, 1, inexact="1 rank"))
    b.finish(2, [0])
    v = assess_elastic(base, b.write(), nproc=2, resume_nproc=1, n_faults=2, launched=3)
    if restored_as == "own":
        assert v.outcome is Outcome.ELASTIC_PASS and "resumed at step(s) [5, 8]" in v.message, v.message
    else:
        assert (v.verdict, v.outcome) == ("fail", Outcome.DIVERGENCE)
        assert "differ from the run's own at step 8 (attempt 1)" in v.message


def test_an_empty_restored_row_or_no_loss_is_no_evidence_not_an_elastic_pass(tmp_path):
    def empty_restored(b):
        row = _restored_row(b, 0)
        for k in ("params", "params_tensors", "optimizer", "optimizer_groups", "optimizer_state"):
            row[k] = None
        row["extra"] = {}

    v = _judge(tmp_path / "a", 2, 1, empty_restored)
    assert (v.verdict, v.outcome) == ("error", Outcome.NO_EVIDENCE) and "recorded no state" in v.message

    def no_loss(b):
        for rows in b.rows.values():
            for x in rows:
                if x["kind"] == "step" and x["attempt"] == 1:
                    x["loss_value"] = None

    v = _judge(tmp_path / "b", 2, 1, no_loss)
    assert (v.verdict, v.outcome) == ("error", Outcome.NO_EVIDENCE) and "sample order alone" in v.message


def test_an_unknown_exit_status_is_not_an_elastic_pass(tmp_path):
    from harness.oracle import RankEnd

    v = _judge(tmp_path, 2, 1, last_exits=[RankEnd(0, None)])
    assert (v.verdict, v.outcome) == ("error", Outcome.EXIT_UNKNOWN)
