"""The diagnosis names the likely cause from the traces; synthetic traces here, real scenarios in
tests/scenarios (each buggy variant gets its own cause, each correct one none)."""

from __future__ import annotations

from harness.oracle import assess, compare_runs, diagnose, load_trace

from support.traces import baseline, resumed


def _diagnose(tmp_path, mutate, nproc=2, **kw):
    base = baseline(tmp_path / "b", nproc=nproc).write()
    t = resumed(tmp_path / "t", nproc=nproc)
    mutate(t)
    trial = load_trace(t.write())
    cmp = compare_runs(base, trial)
    return diagnose(cmp, trial, cmp.base, world_size=nproc, **kw), assess(cmp, trial, n_faults=1)


def test_only_the_update_differs_at_three_ranks_is_the_reduction_order(tmp_path):
    def mutate(t):
        for r in range(3):
            row = t.row(r, 6, 1)
            row["params"], row["optimizer"] = "p", "o"
    d, verdict = _diagnose(tmp_path, mutate, nproc=3)
    assert d.cause == "reduction_order" and "world size 3" in d.evidence
    assert verdict.diagnosis == d  # the verdict carries it

    def mutate_two(t):
        for r in range(2):
            t.row(r, 6, 1).update(params="p", optimizer="o")
    d2, _ = _diagnose(tmp_path / "two", mutate_two, nproc=2)
    assert d2.cause == "optimizer_state"  # at 2 ranks addition commutes: the reduction order cannot be it


def test_optimizer_step_counts_that_differ_mean_the_optimizer_state_was_not_restored(tmp_path):
    def mutate(t):
        for r in range(3):
            row = t.row(r, 6, 1)
            row["params"], row["optimizer"] = "p", "o"
            row["optimizer_state"] = {"0.weight step": "restarted"}
        for rows in t.rows.values():
            for x in rows:
                if x["kind"] == "step" and "optimizer_state" not in x:
                    x["optimizer_state"] = {"0.weight step": "s"}

    base_b = baseline(tmp_path / "b", nproc=3)
    for rows in base_b.rows.values():
        for x in rows:
            if x["kind"] == "step":
                x["optimizer_state"] = {"0.weight step": "s"}
    base = base_b.write()
    t = resumed(tmp_path / "t", nproc=3)
    mutate(t)
    trial = load_trace(t.write())
    cmp = compare_runs(base, trial)
    d = diagnose(cmp, trial, cmp.base, world_size=3)
    assert d.cause == "optimizer_state" and "step counts" in d.evidence


def test_a_resume_from_a_checkpoint_never_committed_is_a_partial_checkpoint(tmp_path):
    def mutate(t):
        for rows in t.rows.values():
            for x in rows:
                if x["kind"] == "event" and x["name"] == "checkpoint.loaded":
                    x["info"]["step"] = 6  # only step 5 was committed before the kill
        t.row(0, 6, 1)["params"] = "p"
    d, _ = _diagnose(tmp_path, mutate)
    assert d.cause == "partial_checkpoint" and "[5]" in d.evidence


def test_only_an_extra_value_differs(tmp_path):
    d, _ = _diagnose(tmp_path, lambda t: t.row(0, 6, 1)["extra"].update(ema="other"))
    assert d.cause == "unregistered_object" and "ema" in d.summary


def test_nothing_to_explain_gives_no_diagnosis(tmp_path):
    d, verdict = _diagnose(tmp_path, lambda t: None)
    assert d is None and verdict.diagnosis is None and verdict.verdict == "pass"


def test_a_nondeterministic_baseline_is_named(tmp_path):
    b1 = baseline(tmp_path / "b1").write()
    b2 = baseline(tmp_path / "b2")
    b2.row(1, 3, 0)["rng"]["numpy"] = "unseeded"
    verdict = assess(None, None, baseline_repro=compare_runs(b1, b2.write()))
    assert verdict.diagnosis.cause == "baseline_nondeterminism" and "rng:numpy" in verdict.diagnosis.evidence


def test_several_rng_streams_off_without_an_accumulation_counter_are_rng_not_restored(tmp_path):
    """DeepSpeed's own checkpoint holds no RNG state: numpy and torch both differ after the resume."""
    def mutate(t):
        row = t.row(0, 6, 1)
        row["rng"]["numpy"], row["rng"]["torch"], row["batch"] = "n", "t", "b"
    d, _ = _diagnose(tmp_path, mutate)
    assert d.cause == "rng_not_restored" and "numpy, torch" in d.summary and "rng:python match" in d.evidence
