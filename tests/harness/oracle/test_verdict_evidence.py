"""A PASS needs positive evidence, and each diagnosis rule reads evidence any script leaves (issues #16, #17).

Synthetic traces (tests/support/traces.py); the same rules run on user-style scripts in
tests/harness/engine/test_user_scripts.py.
"""

from __future__ import annotations

import pytest

from harness.oracle import RankEnd, RunResult, assess, compare_runs, load_trace
from tests.support.traces import TraceBuilder, baseline, resumed


@pytest.fixture
def base(tmp_path):
    return load_trace(baseline(tmp_path / "base").write())


def _every_step_row(builders, edit) -> None:
    """``edit(row)`` on every step row of the given trace builders (evidence both runs recorded)."""
    for builder in builders:
        for rows in builder.rows.values():
            for row in rows:
                if row["kind"] == "step":
                    edit(row)


def _assess(base, builder, **kw):
    trial = load_trace(builder.write())
    return assess(compare_runs(base, trial), trial, **kw)


def test_a_job_that_never_resumes_and_records_no_step_is_not_resumed(tmp_path):
    # Saves nothing, records only a point and its final state: 0 step rows could never be a PASS.
    b = TraceBuilder(tmp_path / "base").start(0).event(0, "mark", 0).finish(0)
    base = load_trace(b.write())
    t = TraceBuilder(tmp_path / "t").start(0).event(0, "mark", 0).fault(0, 0)
    t.start(1).event(1, "mark", 0).finish(1)
    r = _assess(base, t, n_faults=1)
    assert (r.verdict, r.outcome) == ("error", "not_resumed")
    assert RunResult(r).exit_code != 0


def test_no_step_row_compared_is_no_evidence(tmp_path):
    b = TraceBuilder(tmp_path / "base").start(0).event(0, "mark", 0).finish(0)
    base = load_trace(b.write())
    t = TraceBuilder(tmp_path / "t").start(0).event(0, "mark", 0).fault(0, 0)
    t.start(1).event(1, "checkpoint.loaded", 3).finish(1)  # claims a resume, yet nothing was compared
    r = _assess(base, t, n_faults=1)
    assert (r.verdict, r.outcome) == ("error", "no_evidence")


def test_unknown_exit_status_is_not_a_pass(base, tmp_path):
    ends = [RankEnd(0, 0), RankEnd(1, None)]
    r = _assess(base, resumed(tmp_path / "t"), n_faults=1, last_exits=ends)
    assert (r.verdict, r.outcome) == ("error", "exit_unknown") and "rank(s) [1]" in r.message


def test_lost_progress_names_both_steps_and_can_be_accepted(tmp_path):
    base = load_trace(baseline(tmp_path / "base", steps=14).write())
    t = TraceBuilder(tmp_path / "t").start(0)
    for s in range(1, 13):
        t.steps(0, s, s)
        if s % 5 == 0:
            t.event(0, "checkpoint.committed", s)
    t.fault(0, 12).start(1).event(1, "checkpoint.loaded", 5)  # loads step 5 although step 10 was committed
    t.steps(1, 6, 14).finish(1)
    r = _assess(base, t, n_faults=1)
    assert (r.verdict, r.outcome) == ("fail", "lost_progress")
    assert "resumed from step 5" in r.message and "was step 10" in r.message and "--accept-lost-progress" in r.hint
    ok = _assess(base, t, n_faults=1, accept_lost_progress=True)
    assert (ok.verdict, ok.outcome) == ("pass", "bit_exact") and "not the newest 10" in ok.message


def test_ranks_resumed_apart(tmp_path):
    base = load_trace(baseline(tmp_path / "base", steps=14).write())
    t = TraceBuilder(tmp_path / "t").start(0).steps(0, 1, 12).fault(0, 12).start(1)
    t.event(1, "checkpoint.loaded", 10, ranks=[0]).event(1, "checkpoint.loaded", 5, ranks=[1])
    t.steps(1, 11, 14, ranks=[0]).steps(1, 6, 14, ranks=[1]).finish(1)
    r = _assess(base, t, n_faults=1)
    assert (r.verdict, r.outcome) == ("fail", "ranks_resumed_apart")
    assert "rank 0 step 10, rank 1 step 5" in r.message


def test_auto_mode_save_is_complete_only_when_every_rank_trained_past_it(tmp_path):
    # Rank 0 dies inside its first save of a two-phase commit: rank 1's file returned, but no rank trained
    # past step 5, so nothing was complete and the restart from step 1 tested no resume (never a FAIL).
    base = load_trace(baseline(tmp_path / "base").write())
    t = TraceBuilder(tmp_path / "t").start(0).steps(0, 1, 5)
    t.event(0, "torch.save", 5, ranks=[0, 1]).event(0, "checkpoint.committed", 5, ranks=[1], via="torch.save")
    t.rows[0].append({"kind": "fault", "attempt": 0, "rank": 0, "step": 5, "point": "torch.save",
                      "fault": {"at": {"point": "torch.save"}, "rank": 0, "signal": "SIGKILL"}})
    t.start(1).steps(1, 1, 10).finish(1)
    trial = load_trace(t.write())
    assert trial.complete_checkpoints(0) == set()
    r = assess(compare_runs(base, trial), trial, n_faults=1)
    assert (r.verdict, r.outcome) == ("error", "not_resumed") and "no resume tested" in r.message
    # Every rank saved step 5 and trained past it: complete; a restart from step 1 then is a FAIL.
    t2 = TraceBuilder(tmp_path / "t2").start(0).steps(0, 1, 5)
    t2.event(0, "torch.save", 5).event(0, "checkpoint.committed", 5, via="torch.save").steps(0, 6, 7).fault(0, 7)
    t2.start(1).steps(1, 1, 10).finish(1)
    trial2 = load_trace(t2.write())
    assert trial2.complete_checkpoints(0) == {5}
    assert assess(compare_runs(base, trial2), trial2, n_faults=1).outcome == "not_resumed"
    assert assess(compare_runs(base, trial2), trial2, n_faults=1).verdict == "fail"


def test_diagnosis_accumulation_from_backward_calls(tmp_path):
    b = baseline(tmp_path / "base")
    t = resumed(tmp_path / "t")

    def edit(row):
        row["backward"], row["extra"] = 4, {}

    _every_step_row((b, t), edit)
    t.row(0, 6, 1)["backward"] = 3  # the window counter restarted: 3 micro-batches where the baseline had 4
    t.row(0, 6, 1)["loss"] = {"dtype": "float32", "hex": "0000803f"}
    r = _assess(load_trace(b.write()), t, n_faults=1)
    assert r.outcome == "divergence" and r.diagnosis.cause == "accumulation_position"
    assert "step 6 ran 3 backward call(s) on rank 0 where the baseline ran 4" in r.diagnosis.evidence


def test_diagnosis_lr_schedule_from_hyperparameters_without_optimizer_rows(tmp_path):
    b = baseline(tmp_path / "base")
    t = resumed(tmp_path / "t")

    def edit(row):
        row["hyper"] = [[{"lr": 0.01 / row["step"]}]]
        row["extra"] = {}

    _every_step_row((b, t), edit)
    t.row(0, 6, 1)["hyper"] = [[{"lr": 0.01}]]  # the schedule restarted
    t.row(0, 6, 1)["params"] = "other"
    r = _assess(load_trace(b.write()), t, n_faults=1)
    assert r.diagnosis.cause == "lr_schedule" and "param_groups/0/lr" in r.diagnosis.evidence


def test_diagnosis_rng_from_other_rank_needs_exactly_the_diverging_streams(tmp_path):
    b = baseline(tmp_path / "base")
    t = resumed(tmp_path / "t")

    def edit(row):
        row["rng"]["python"] = f"py{row['step']}"

    _every_step_row((b, t), edit)
    row = t.row(1, 6, 1)
    row["rng"]["numpy"] = "not restored"
    row["batch"] = "noisy"
    r = _assess(load_trace(b.write()), t, n_faults=1)
    assert r.diagnosis.cause == "rng_not_restored" and r.rng_diagnosis.cause == "rng_not_restored"
    # Rank 1 holding rank 0's numpy and torch states is another rank's.
    base_rows = {x["step"]: x for x in b.rows[0] if x["kind"] == "step"}
    row["rng"]["numpy"], row["rng"]["torch"] = base_rows[6]["rng"]["numpy"], base_rows[6]["rng"]["torch"]
    r = _assess(load_trace(b.write()), t, n_faults=1)
    assert r.diagnosis.cause == "rng_from_other_rank" and "rank 0" in r.diagnosis.evidence


def test_diagnosis_computed_after_peer_died(tmp_path):
    b = baseline(tmp_path / "base", nproc=3, steps=14)
    t = TraceBuilder(tmp_path / "t", 3).start(0)
    t.steps(0, 1, 12).fault(0, 12, rank=0).steps(0, 13, 13, ranks=[1, 2])
    t.row(1, 13, 0)["params"] = "stale"
    t.start(1).event(1, "checkpoint.loaded", 10).steps(1, 11, 14).finish(1)
    r = _assess(load_trace(b.write()), t, n_faults=1)
    assert r.outcome == "divergence" and r.diagnosis.cause == "computed_after_peer_died"
    assert "rank 1 computed step 13 after rank 0 was killed at step 12" in r.diagnosis.evidence


def test_diagnosis_data_order_from_fetched_batches(tmp_path):
    b = baseline(tmp_path / "base")
    t = resumed(tmp_path / "t")

    def edit(row):
        row["fetched"] = [f"loader{row['rank']}-{row['step']}"]

    _every_step_row((b, t), edit)
    row = t.row(0, 6, 1)
    row["fetched"], row["batch"] = ["loader0-1"], "other"  # the resumed epoch replays step 1's batch
    row["rng"]["torch"] = "fresh epoch draw"
    r = _assess(load_trace(b.write()), t, n_faults=1)
    assert r.diagnosis.cause == "data_order" and "batch of step 1" in r.diagnosis.evidence


def test_diagnosis_accumulation_window_cut_from_the_micro_batch_stream(tmp_path):
    # Windows of 3 micro-batches; the resumed step 6 starts at the baseline step 6's second micro-batch:
    # the same samples, grouped at another offset (the window counter and its gradients were lost).
    b = baseline(tmp_path / "base")
    t = resumed(tmp_path / "t")

    def edit(row):
        row["fetched"] = [f"m{row['rank']}-{3 * (row['step'] - 1) + i}" for i in range(3)]

    _every_step_row((b, t), edit)
    row = t.row(0, 6, 1)
    row["fetched"] = [f"m0-{3 * 5 + 1 + i}" for i in range(3)]
    row["loss"] = {"dtype": "float32", "hex": "0000803f"}
    r = _assess(load_trace(b.write()), t, n_faults=1)
    assert r.diagnosis.cause == "accumulation_position"
    assert "begins with micro-batch 2 of the baseline's step 6 window" in r.diagnosis.evidence
