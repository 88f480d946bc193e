"""The oracle: trace parsing, bit-exact comparison, ULP distances, outcomes. Traces are synthetic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.oracle import (
    RankEnd, RunResult, TraceError, assess, compare_runs, compare_step, diff_stats, load_trace, ulp, ulp_distance,
)
from harness.oracle.ulp import ordinal

from support.traces import TraceBuilder, baseline, final_tensors, resumed, step_row


@pytest.fixture
def base(tmp_path):
    return baseline(tmp_path / "baseline").write()


def set_final(trace_dir, rank: int, changes: dict):
    """Rewrite one rank's final safetensors with some tensors replaced (None removes one)."""
    from safetensors.torch import save_file

    t = final_tensors(rank)
    for k, v in changes.items():
        if v is None:
            t.pop(k)
        else:
            t[k] = v
    save_file(t, str(trace_dir / "final" / f"rank{rank}.safetensors"))


# --- trace parsing ---------------------------------------------------------------------------------

def test_load_trace_api(tmp_path):
    tr = load_trace(resumed(tmp_path / "t").write())
    assert tr.ranks == [0, 1]
    assert tr.attempts() == [0, 1]
    assert [r.step for r in tr.steps(0, attempt=1)] == [6, 7, 8, 9, 10]
    assert len(tr.steps(1)) == 7 + 5
    assert [f.step for f in tr.faults()] == [7]
    assert len(tr.events("checkpoint.loaded")) == 2
    assert tr.finished(0) and tr.finished(0, attempt=1) and not tr.finished(0, attempt=0)
    assert tr.final_file(1).name == "rank1.safetensors" and tr.final_json(1).name == "rank1.json"
    assert tr.last_step() == 10
    a0, a1 = tr.attempt_summary()
    assert (a0.first_step, a0.last_step, a0.fault.step, a0.finished) == (1, 7, 7, False)
    assert a0.committed_steps == (5,) and a0.loaded == ()
    assert (a1.first_step, a1.last_step, a1.fault, a1.finished) == (6, 10, None, True)
    assert a1.committed_steps == (5, 10) and [e.info["step"] for e in a1.loaded] == [5, 5]
    assert tr.warnings == []


def test_torn_last_line_is_skipped_and_reported(tmp_path):
    d = baseline(tmp_path / "b").write()
    with open(d / "rank1.jsonl", "a") as f:
        f.write('{"kind": "step", "attempt": 0, "rank": 1, "st')
    tr = load_trace(d)
    assert len(tr.steps(1)) == 10
    assert len(tr.warnings) == 1 and "torn last line" in tr.warnings[0]
    cmp = compare_runs(baseline(tmp_path / "b2").write(), d)
    assert cmp.first is None and any("torn" in w for w in cmp.warnings)


def test_torn_row_followed_by_next_attempt_is_recovered(tmp_path):
    d = tmp_path / "t"
    b = resumed(d)
    b.write()
    lines = (d / "rank0.jsonl").read_text().splitlines(keepends=True)
    i = next(i for i, ln in enumerate(lines) if '"attempt": 1' in ln)  # the torn row comes right before
    torn = json.dumps(step_row(0, 8, 0))[:30]
    (d / "rank0.jsonl").write_text("".join(lines[:i]) + torn + "".join(lines[i:]))
    tr = load_trace(d)
    assert len(tr.rows(0)) == len(b.rows[0]) and "torn row" in tr.warnings[0]


def test_bad_middle_line_raises(tmp_path):
    d = baseline(tmp_path / "b").write()
    lines = (d / "rank0.jsonl").read_text().splitlines(keepends=True)
    lines[3] = "garbage\n"
    (d / "rank0.jsonl").write_text("".join(lines))
    with pytest.raises(TraceError):
        load_trace(d)
    with pytest.raises(TraceError):
        load_trace(tmp_path / "nowhere")


# --- trace comparison --------------------------------------------------------------------------------

def test_identical_runs(base, tmp_path):
    cmp = compare_runs(base, baseline(tmp_path / "b2").write())
    assert cmp.first is None and cmp.divergences == [] and cmp.ok
    c = cmp.compared
    assert (c["ranks"], c["steps"], c["rows"], c["reexecuted_rows"]) == (2, 10, 20, 0)
    assert c["final_tensors"] == 12 and c["final_bytes"] > 0 and c["final_leaves"] == 6
    assert c["fields"] == ["batch", "rng:python", "rng:numpy", "rng:torch", "loss", "params",
                           "optimizer", "extra:ema", "extra:lr"]
    assert c["unused_rng"] == ["rng:cuda"]  # no CUDA: its state never changes, so it is not compared


def test_resumed_identical_compares_reexecuted_rows(base, tmp_path):
    cmp = compare_runs(base, resumed(tmp_path / "t").write())
    assert cmp.first is None
    assert cmp.compared["rows"] == 24 and cmp.compared["reexecuted_rows"] == 4  # steps 6, 7 on 2 ranks


def test_loss_last_bit_after_resume(base, tmp_path):
    b = resumed(tmp_path / "t")
    row = b.row(1, 7, attempt=1)
    x = np.float32(row["loss_value"])
    y = np.nextafter(x, np.float32(np.inf))
    row["loss"]["hex"] = y.tobytes().hex()
    cmp = compare_runs(base, b.write())
    d = cmp.first
    assert (d.step, d.rank, d.attempt, d.fields, d.where) == (7, 1, 1, ["loss"], "trace")
    assert len(cmp.divergences) == 1
    (t,) = d.tensors
    assert (t.name, t.dtype, t.n_diff, t.max_ulp) == ("loss", "float32", 1, 1)
    assert t.max_abs_diff == float(y) - float(x)
    assert x.tobytes().hex() in d.note


def test_several_fields_in_report_order(base, tmp_path):
    b = baseline(tmp_path / "t")
    row = b.row(0, 3, 0)
    row["extra"]["ema"] = "x"
    row["params"] = "p"
    row["params_tensors"]["fc.bias"] = "q"
    row["rng"]["numpy"] = "n"
    row["batch"] = "b"
    row["rng"]["cuda"] = "now set"
    row["optimizer"] = None
    cmp = compare_runs(base, b.write())
    assert cmp.first.fields == ["batch", "rng:numpy", "rng:cuda", "params", "optimizer", "extra:ema"]
    assert [t.name for t in cmp.first.tensors] == ["fc.bias"]
    assert (cmp.first.step, cmp.first.rank, cmp.first.attempt) == (3, 0, 0)


def test_null_equals_null_only():
    a = step_row(0, 1)
    b = json.loads(json.dumps(a))
    a["loss"] = b["loss"] = None
    assert compare_step(a, b)[0] == []
    b["batch"] = None
    assert compare_step(a, b)[0] == ["batch"]
    c = json.loads(json.dumps(a))
    c["extra"]["lr"] = 0.01  # int/float and bit patterns: exact
    a["extra"]["lr"] = float("nan")
    c["extra"]["lr"] = float("nan")
    assert compare_step(a, c)[0] == []
    c["extra"]["lr"] = 1
    a["extra"]["lr"] = 1.0
    assert compare_step(a, c)[0] == ["extra:lr"]


def test_reexecuted_steps_compared_in_every_attempt(base, tmp_path):
    b = resumed(tmp_path / "t")
    b.row(0, 6, attempt=0)["batch"] = "wrong before the kill"
    b.row(1, 6, attempt=1)["rng"]["torch"] = "wrong after the resume"
    cmp = compare_runs(base, b.write())
    got = [(d.attempt, d.step, d.rank, d.fields) for d in cmp.divergences]
    assert got == [(0, 6, 0, ["batch"]), (1, 6, 1, ["rng:torch"])]


def test_ordering_by_attempt_then_step_then_rank(base, tmp_path):
    b = resumed(tmp_path / "t")
    b.row(1, 9, 1)["batch"] = "x"
    b.row(0, 9, 1)["batch"] = "x"
    b.row(1, 7, 0)["batch"] = "x"  # attempt 0 comes first though its step is later than attempt 1's 6
    b.row(0, 6, 1)["batch"] = "x"
    cmp = compare_runs(base, b.write())
    assert [(d.attempt, d.step, d.rank) for d in cmp.divergences] == [(0, 7, 1), (1, 6, 0), (1, 9, 0), (1, 9, 1)]
    assert cmp.first.step == 7


def test_missing_steps_when_the_trial_stops_early(base, tmp_path):
    b = resumed(tmp_path / "t", steps=8)  # runs to 8 and "finishes": 9, 10 never reached
    cmp = compare_runs(base, b.write())
    trace_divs = [(d.step, d.rank, d.attempt, d.fields) for d in cmp.divergences if d.where == "trace"]
    assert trace_divs == [(9, 0, 1, ["missing"]), (9, 1, 1, ["missing"]), (10, 0, 1, ["missing"]),
                          (10, 1, 1, ["missing"])]


def test_skipped_steps_belong_to_the_attempt_that_went_past_them(base, tmp_path):
    b = resumed(tmp_path / "t")
    for r in (0, 1):  # attempt 1 "resumed" at 9: steps 8 never ran
        b.rows[r] = [x for x in b.rows[r] if not (x["kind"] == "step" and x["attempt"] == 1 and x["step"] == 8)]
    b.row(0, 9, 1)["params"] = "different"
    cmp = compare_runs(base, b.write())
    assert [(d.step, d.rank, d.attempt, d.fields) for d in cmp.divergences] == [
        (8, 0, 1, ["missing"]), (8, 1, 1, ["missing"]), (9, 0, 1, ["params"])]


def test_extra_steps(base, tmp_path):
    b = baseline(tmp_path / "t", steps=11)
    cmp = compare_runs(base, b.write())
    assert [(d.step, d.rank, d.fields) for d in cmp.divergences] == [(11, 0, ["extra"]), (11, 1, ["extra"])]


# --- final state ---------------------------------------------------------------------------------

def test_final_fp32_one_ulp(base, tmp_path):
    t = baseline(tmp_path / "t").write()
    w = final_tensors(1)["model/fc.weight"].clone()
    x = w[1, 2].item()
    y = np.nextafter(np.float32(x), np.float32(-np.inf))
    w[1, 2] = float(y)
    set_final(t, 1, {"model/fc.weight": w})
    cmp = compare_runs(base, t)
    d = cmp.first
    assert (d.where, d.step, d.rank, d.fields, d.attempt) == ("final", None, 1, ["params"], 0)
    assert "final state" in d.note
    (td,) = d.tensors
    assert (td.name, td.dtype, td.shape, td.n_diff, td.max_ulp) == ("model/fc.weight", "float32", [2, 3], 1, 1)
    assert td.max_abs_diff == float(np.float32(x)) - float(y) == float(np.spacing(np.float32(y)))


def test_final_bf16_one_ulp(base, tmp_path):
    t = baseline(tmp_path / "t").write()
    bias = final_tensors(0)["model/fc.bias"].clone()
    bits = bias.view(torch.int16)
    bits[1] += 1  # -1.25 -> the next bf16 pattern away from zero
    set_final(t, 0, {"model/fc.bias": bias})
    (td,) = compare_runs(base, t).first.tensors
    assert (td.dtype, td.n_diff, td.max_ulp) == ("bfloat16", 1, 1)
    assert td.max_abs_diff == 2.0 ** -7  # bf16 has 8 significant bits; -1.25 is in [1, 2)


def test_final_nan_signed_zero_int_bool(base, tmp_path):
    t = baseline(tmp_path / "t").write()
    ema = final_tensors(0)["extra/ema/fc.weight"].clone()
    ema[0, 1] = float("nan")
    exp_avg = final_tensors(0)["optimizer/state/0/exp_avg"].clone()
    exp_avg[0, 0] = -exp_avg[0, 0]
    zero = torch.tensor([0.0, 1.0])
    set_final(t, 0, {"extra/ema/fc.weight": ema, "optimizer/state/0/step": torch.tensor(12),
                       "extra/mask": torch.tensor([True, True, True]), "optimizer/state/0/exp_avg": exp_avg})
    d = compare_runs(base, t).first
    by = {x.name: x for x in d.tensors}
    assert d.fields == ["extra:ema", "extra:mask", "optimizer"]
    nan = by["extra/ema/fc.weight"]
    assert nan.note.startswith("nan") and nan.max_ulp is None and nan.max_abs_diff is None and nan.n_diff == 1
    assert by["optimizer/state/0/step"].max_ulp == 2 and by["optimizer/state/0/step"].max_abs_diff == 2.0
    assert by["extra/mask"].max_ulp is None and by["extra/mask"].n_diff == 1
    assert by["optimizer/state/0/exp_avg"].max_abs_diff == 2.0
    st0 = diff_stats("float32", zero.numpy().tobytes(), (-zero).numpy().tobytes())
    assert st0["n_diff"] == 2 and "sign of zero" in st0["note"] and st0["max_abs_diff"] == 2.0


def test_signed_zero_is_one_ulp():
    st0 = diff_stats("float32", np.float32(0.0).tobytes(), np.float32(-0.0).tobytes())
    assert (st0["n_diff"], st0["max_abs_diff"], st0["max_ulp"]) == (1, 0.0, 1)


def test_dtype_shape_and_key_mismatch(base, tmp_path):
    t = baseline(tmp_path / "t").write()
    w = final_tensors(0)["model/fc.weight"]
    set_final(t, 0, {"model/fc.weight": w.double(), "model/fc.bias": torch.zeros(4, dtype=torch.bfloat16),
                       "extra/mask": None, "extra/new": torch.zeros(1)})
    d = compare_runs(base, t).first
    by = {x.name: x.note for x in d.tensors}
    assert by == {"extra/mask": "missing in the trial", "extra/new": "not in the baseline",
                  "model/fc.bias": "shape [3] vs [4]", "model/fc.weight": "dtype float32 vs float64"}
    assert d.fields == ["extra:mask", "extra:new", "params"]


def test_final_json_leaves_and_missing_final(base, tmp_path):
    t = baseline(tmp_path / "t").write()
    (t / "final" / "rank0.json").write_text(json.dumps({"optimizer/param_groups/0/lr": 0.0010000000000000002,
                                                        "extra/epoch": 1.0, "extra/name": "rank0"}))
    (t / "final" / "rank1.safetensors").unlink()
    cmp = compare_runs(base, t)
    d0, d1 = cmp.divergences
    assert [(x.name, x.dtype) for x in d0.tensors] == [("extra/epoch", "json"), ("optimizer/param_groups/0/lr", "json")]
    assert (d1.rank, d1.fields, d1.where) == (1, ["missing"], "final")


def test_unreadable_trial_final_is_a_divergence(base, tmp_path):
    t = baseline(tmp_path / "t").write()
    f = t / "final" / "rank0.safetensors"
    f.write_bytes(f.read_bytes()[:-7])
    d = compare_runs(base, t).first
    assert d.where == "final" and "unreadable" in d.note


# --- ULP ---------------------------------------------------------------------------------------------

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
finite64 = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(x=finite32, up=st.booleans())
def test_nextafter_is_one_ulp_float32(x, up):
    x = np.float32(x)
    with np.errstate(over="ignore"):  # nextafter(max) is inf: still 1 ULP
        y = np.nextafter(x, np.float32(np.inf if up else -np.inf))
    crossing_zero = x == 0 and bool(np.signbit(x)) == up  # -0 -> +denorm_min or +0 -> -denorm_min
    assert ulp(x, y) == (2 if crossing_zero else 1)


@settings(max_examples=300, deadline=None)
@given(x=finite64, up=st.booleans())
def test_nextafter_is_one_ulp_float64(x, up):
    with np.errstate(over="ignore"):  # nextafter(max) is inf: still 1 ULP
        y = float(np.nextafter(x, math.inf if up else -math.inf))
    crossing = x == 0 and math.copysign(1, x) == (-1 if up else 1)  # -0 -> +den or +0 -> -den
    assert ulp(x, y) == (2 if crossing else 1)
    assert ulp(x, y) == ulp(y, x)


@settings(max_examples=300, deadline=None)
@given(a=st.integers(0, 2**16 - 1), b=st.integers(0, 2**16 - 1))
def test_ulp_bf16_symmetric_and_zero_iff_equal(a, b):
    ua, ub = np.array([a], np.uint16), np.array([b], np.uint16)
    d = int(ulp_distance(ua, ub)[0])
    assert d == int(ulp_distance(ub, ua)[0])
    assert (d == 0) == (a == b)


@settings(max_examples=300, deadline=None)
@given(a=st.integers(0, 2**64 - 1), b=st.integers(0, 2**64 - 1))
def test_ulp_bits64_symmetric_zero_iff_equal_exact(a, b):
    ua, ub = np.array([a], np.uint64), np.array([b], np.uint64)
    d = int(ulp_distance(ua, ub)[0])
    ref = abs(int(ordinal(ua)[0]) - int(ordinal(ub)[0]))
    assert d == ref == int(ulp_distance(ub, ua)[0])
    assert (d == 0) == (a == b)


@settings(max_examples=200, deadline=None)
@given(a=finite32, b=finite32)
def test_ulp_ordering_is_monotonic(a, b):
    oa, ob = (int(ordinal(np.array([np.float32(v)]).view(np.uint32))[0]) for v in (a, b))
    if a < b:
        assert oa < ob
    elif a == b and np.signbit(np.float32(a)) == np.signbit(np.float32(b)):
        assert oa == ob


def test_ulp_extremes_do_not_overflow():
    big = float(np.finfo(np.float64).max)
    assert ulp(-big, big) == 2 * 0x7FEFFFFFFFFFFFFF + 1
    st64 = diff_stats("int64", np.array([-(2**63)], np.int64).tobytes(), np.array([2**63 - 1], np.int64).tobytes())
    assert st64["max_ulp"] == 2**64 - 1
    stu = diff_stats("uint64", np.array([0], np.uint64).tobytes(), np.array([2**64 - 1], np.uint64).tobytes())
    assert stu["max_ulp"] == 2**64 - 1
    inf = diff_stats("float32", np.float32(np.inf).tobytes(), np.float32(-np.inf).tobytes())
    assert inf["max_abs_diff"] == math.inf


def test_float8_and_float16():
    a = torch.tensor([1.0, 2.0], dtype=torch.float8_e4m3fn)
    b = a.view(torch.uint8).clone()
    b[0] += 1
    s = diff_stats("F8_E4M3", a.view(torch.uint8).numpy().tobytes(), b.numpy().tobytes())
    assert (s["n_diff"], s["max_ulp"], s["max_abs_diff"]) == (1, 1, 0.125)
    h = np.array([1.0], np.float16)
    s = diff_stats("torch.float16", h.tobytes(), np.nextafter(h, np.float16(2)).tobytes())
    assert (s["max_ulp"], s["max_abs_diff"]) == (1, 2.0 ** -10)


# --- outcomes -------------------------------------------------------------------------------------------

def _assess(base, trial_dir, **kw):
    trial = load_trace(trial_dir)
    return assess(compare_runs(base, trial), trial, **kw)


def test_assess_bit_exact(base, tmp_path):
    r = _assess(base, resumed(tmp_path / "t").write(), n_faults=1)
    assert (r.verdict, r.outcome, r.first_divergence) == ("pass", "bit_exact", None)
    assert "24 step rows (4 re-executed)" in r.message
    res = RunResult(r, target="scenarios.mlp", nproc=2, backend="gloo", seed=0, plan="kill@step=7")
    assert res.exit_code == 0 and res.to_json()["attempts"][0]["fault"]["step"] == 7


def test_assess_divergence(base, tmp_path):
    b = resumed(tmp_path / "t")
    b.row(1, 7, 1)["loss"] = {"dtype": "float32", "hex": "00000040"}
    r = _assess(base, b.write(), n_faults=1)
    assert (r.verdict, r.outcome) == ("fail", "divergence")
    assert "step 7, rank 1, attempt 1: loss" in r.message


def test_assess_rng_only_is_its_own_outcome_never_a_pass(base, tmp_path):
    b = resumed(tmp_path / "t")
    b.row(1, 7, 1)["rng"]["numpy"] = "x"
    r = _assess(base, b.write(), n_faults=1)
    assert (r.verdict, r.outcome) == ("fail", "rng_only")
    assert "rng:numpy differs from step 7, rank 1" in r.message and "bit-exact" in r.message
    assert r.rng_divergence.fields == ["rng:numpy"] and r.rng_diagnosis.cause == "rng_not_restored"
    assert RunResult(r).exit_code == 3 and "--accept-rng numpy" in r.hint
    # Accepting a different stream changes nothing; accepting this one is a pass that names it.
    assert _assess(base, b.write(), n_faults=1, accept_rng=("torch",)).outcome == "rng_only"
    ok = _assess(base, b.write(), n_faults=1, accept_rng=("numpy",))
    assert (ok.verdict, ok.outcome, ok.accepted) == ("pass", "rng_accepted", ("rng:numpy",))
    assert "accepted: rng:numpy" in ok.message and RunResult(ok).exit_code == 0


def test_assess_training_divergence_is_never_hidden_behind_an_earlier_rng_one(base, tmp_path):
    b = resumed(tmp_path / "t")
    for step in (6, 7, 8):  # the RNG is off from the resume on, training exact until step 8
        b.row(0, step, 1)["rng"]["torch"] = f"drift{step}"
    b.row(0, 8, 1)["params"] = "other"
    r = _assess(base, b.write(), n_faults=1)
    assert r.outcome == "divergence" and r.first_divergence.step == 8 and "params" in r.first_divergence.fields
    assert r.rng_divergence.step == 6 and r.rng_diagnosis.cause == "torch_rng"
    assert "rng:torch first differ at step 6" in r.message
    # The latent RNG difference is not the training divergence's cause.
    assert r.diagnosis is None or r.diagnosis.cause not in ("torch_rng", "rng_not_restored")


def test_assess_nondeterministic_baseline(base, tmp_path):
    b2 = baseline(tmp_path / "b2")
    b2.row(0, 4, 0)["rng"]["numpy"] = "unseeded"
    repro = compare_runs(base, b2.write())
    r = assess(None, None, baseline_repro=repro)
    assert (r.verdict, r.outcome) == ("fail", "nondeterministic_baseline")
    assert "nondeterministic even without faults" in r.message and "step 4" in r.message
    assert r.first_divergence.fields == ["rng:numpy"]
    assert assess(None, None, baseline_error="exit code 1").outcome == "baseline_failed"


def test_assess_not_resumed(base, tmp_path):
    # killed at step 3, before the first checkpoint (5): attempt 1 restarts from scratch
    b = resumed(tmp_path / "t", kill=3, ckpt=0)
    b.rows = {r: [x for x in rows if x.get("name") != "checkpoint.loaded"] for r, rows in b.rows.items()}
    r = _assess(base, b.write(), n_faults=1)
    assert (r.verdict, r.outcome) == ("error", "not_resumed") and "no checkpoint was complete" in r.message
    # killed at 7 after the checkpoint at 5, but the script restarted from step 1 anyway
    b = resumed(tmp_path / "t2", kill=7, ckpt=0)
    b.rows = {r: [x for x in rows if x.get("name") != "checkpoint.loaded"] for r, rows in b.rows.items()}
    for r in (0, 1):
        b.rows[r].insert(6, {"kind": "event", "attempt": 0, "rank": r, "name": "checkpoint.committed", "step": 5,
                             "info": {"step": 5}})
    r = _assess(base, b.write(), n_faults=1)
    assert (r.verdict, r.outcome) == ("fail", "not_resumed") and "[5]" in r.message


def test_assess_crash_on_resume_and_crash(base, tmp_path):
    b = resumed(tmp_path / "t")
    for r in (0, 1):
        b.rows[r] = [x for x in b.rows[r] if not (x["attempt"] == 1 and (x["kind"] == "finish" or
                                                                        x.get("step", 0) > 8))]
    b.finals = {}
    r = _assess(base, b.write(), n_faults=1,
                last_exits=[RankEnd(0, -9, torn_down=True), RankEnd(1, 1, log_tail="Traceback\nKeyError: 'x'")])
    assert (r.verdict, r.outcome) == ("fail", "crash_on_resume")
    assert "rank 1" in r.message and "exit code 1" in r.message and "KeyError" in r.log_tail
    assert r.first_divergence.fields == ["missing"] and r.first_divergence.step == 9

    c = baseline(tmp_path / "c", steps=4)
    c.rows = {r: [x for x in rows if x["kind"] != "finish"] for r, rows in c.rows.items()}
    c.finals = {}
    r = _assess(base, c.write(), n_faults=1)
    assert (r.verdict, r.outcome) == ("error", "crash")


def test_assess_fault_not_fired(base, tmp_path):
    r = _assess(base, baseline(tmp_path / "t").write(), n_faults=1)
    assert (r.verdict, r.outcome) == ("error", "fault_not_fired")


def test_assess_attempt_without_trace_is_named(base, tmp_path):
    """A relaunch whose ranks recorded nothing (attempts 0 and 2 only) is named, not mistaken for a fault."""
    b = TraceBuilder(tmp_path / "t").start(0).steps(0, 1, 7).fault(0, 7).start(2).steps(2, 6, 10).finish(2)
    r = _assess(base, b.write(), n_faults=2)
    assert (r.verdict, r.outcome) == ("error", "error")
    assert "attempt 1 recorded no trace row" in r.message


def test_first_divergence_prefers_the_rank_whose_inputs_differ(base, tmp_path):
    """At one step, rank 1's RNG/batch differ and rank 0 only sees the averaged update: rank 1 is first."""
    b = resumed(tmp_path / "t")
    b.row(0, 6, 1)["params"] = "0" * 32
    b.row(1, 6, 1)["rng"]["torch"] = "1" * 32
    b.row(1, 6, 1)["params"] = "0" * 32
    first = compare_runs(base, b.write()).first
    assert (first.step, first.rank, first.fields) == (6, 1, ["rng:torch", "params"])


# --- the rules of a PASS ---------------------------------------------------------------------------------

def test_a_fault_the_process_survived_is_not_a_pass(base, tmp_path):
    """SIGTERM ignored: the fault row is written, then the same attempt runs on and finishes."""
    b = TraceBuilder(tmp_path / "t").start(0).steps(0, 1, 7).fault(0, 7, signal="SIGTERM").steps(0, 8, 10).finish(0)
    r = _assess(base, b.write(), n_faults=2)
    assert (r.verdict, r.outcome) == ("error", "fault_survived")
    assert "rank(s) [0] ran to the end of attempt 0" in r.message and "1 later fault(s)" in r.message
    assert "SIGTERM" in r.hint


def test_a_peer_that_finished_before_the_teardown_is_not_a_survivor(base, tmp_path):
    """SIGKILL on rank 0 at the last step: rank 1 may write its finish row before it is torn down."""
    b = TraceBuilder(tmp_path / "t").start(0).steps(0, 1, 10).fault(0, 10).finish(0, ranks=[1])
    b.start(1).event(1, "checkpoint.loaded", 10).finish(1)
    r = _assess(base, b.write(), n_faults=1)
    assert r.outcome != "fault_survived", r.message


def test_no_fault_in_the_plan_is_not_a_pass(base, tmp_path):
    r = _assess(base, baseline(tmp_path / "t").write(), n_faults=0)
    assert (r.verdict, r.outcome) == ("error", "fault_not_armed")


def test_a_nonzero_exit_after_finish_fails(base, tmp_path):
    ends = [RankEnd(0, 0), RankEnd(1, 3, log_tail="duplicated rows")]
    r = _assess(base, resumed(tmp_path / "t").write(), n_faults=1, last_exits=ends)
    assert (r.verdict, r.outcome) == ("fail", "crash_on_resume")
    assert "rank 1 exited with code 3 after probe.finish in attempt 1" in r.message and r.log_tail == "duplicated rows"
    ends = [RankEnd(0, 0), RankEnd(1, -9, torn_down=True)]  # torn down by the launcher: not the job's failure
    assert _assess(base, resumed(tmp_path / "t2").write(), n_faults=1, last_exits=ends).verdict == "pass"


def _constant_numpy(b):
    for rows in b.rows.values():
        for x in rows:
            if x["kind"] == "step":
                x["rng"]["numpy"] = "unused-" + str(x["rank"]) + "-" + str(x["attempt"])


def test_an_unused_rng_stream_is_not_compared(tmp_path):
    """numpy's global RNG is never drawn from (its state is constant) and differs between runs: not a failure."""
    b = baseline(tmp_path / "b")
    _constant_numpy(b)
    t = resumed(tmp_path / "t")
    _constant_numpy(t)  # another constant state (unseeded), differing per attempt too
    cmp = compare_runs(b.write(), t.write())
    assert cmp.ok and cmp.compared["unused_rng"] == ["rng:cuda", "rng:numpy"]
    assert "rng:numpy" not in cmp.compared["fields"]
    r = assess(cmp, load_trace(tmp_path / "t"), n_faults=1)
    assert r.verdict == "pass" and "rng:cuda, rng:numpy unused, not compared" in r.message


def test_a_stream_the_trial_draws_from_but_the_baseline_never_did_diverges(tmp_path):
    b = baseline(tmp_path / "b")
    _constant_numpy(b)
    t = resumed(tmp_path / "t")
    _constant_numpy(t)
    t.row(0, 8, 1)["rng"]["numpy"] = "drawn"
    first = compare_runs(b.write(), t.write()).first
    assert (first.step, first.rank, first.fields) == (8, 0, ["rng:numpy"])
    assert "drawn from in the trial, never in the baseline" in first.note


def test_optimizer_divergence_names_the_hyperparameter_and_the_state_entry(base, tmp_path):
    groups = [{"lr": 0.001, "betas/(0)": 0.9, "weight_decay": 0.0}]
    b = baseline(tmp_path / "b")
    t = resumed(tmp_path / "t")
    for builder in (b, t):
        for rows in builder.rows.values():
            for x in rows:
                if x["kind"] == "step":
                    x["optimizer_groups"] = json.loads(json.dumps(groups))
                    x["optimizer_state"] = {"0.weight exp_avg": "a", "0.weight exp_avg_sq": "b"}
    row = t.row(0, 6, 1)
    row["optimizer"] = "other"
    row["optimizer_groups"][0]["lr"] = 0.0005
    row["optimizer_state"]["0.weight exp_avg"] = "changed"
    first = compare_runs(b.write(), t.write()).first
    assert first.fields == ["optimizer"]
    assert "optimizer: param_groups/0/lr 0.001 vs 0.0005" in first.note
    assert "optimizer: state exp_avg of 0.weight" in first.note
    assert [d.name for d in first.tensors] == ["optimizer state exp_avg of 0.weight"]


def test_verdict_is_frozen_and_only_bit_exact_passes():
    from dataclasses import FrozenInstanceError

    from harness.oracle import Outcome, Verdict

    v = Verdict("fail", "divergence", "x")
    assert v.outcome is Outcome.DIVERGENCE and v.outcome == "divergence"
    with pytest.raises(FrozenInstanceError):
        v.verdict = "pass"
    with pytest.raises(ValueError, match="only bit_exact, elastic_pass, rng_accepted pass"):
        Verdict("pass", "divergence", "x")
    with pytest.raises(ValueError):
        Verdict("pass", "no_such_outcome", "x")


def test_a_resumed_attempt_that_crashes_before_recording_anything_fails(base, tmp_path):
    """E.g. the restart dies loading a half-written checkpoint, before its first probe call."""
    b = TraceBuilder(tmp_path / "t").start(0).steps(0, 1, 7).fault(0, 7)
    trial = load_trace(b.write())
    ends = [RankEnd(0, 1, log_tail="CorruptCheckpointError: torn"), RankEnd(1, -9, torn_down=True)]
    r = assess(compare_runs(base, trial), trial, n_faults=1, last_exits=ends, launched=2)
    assert (r.verdict, r.outcome) == ("fail", "crash_on_resume"), r.message
    assert "attempt 1" in r.message and "torn" in r.log_tail
    r = assess(compare_runs(base, trial), trial, n_faults=1, last_exits=[RankEnd(0, 0), RankEnd(1, 0)], launched=2)
    assert (r.verdict, r.outcome) == ("error", "error") and "attempt 1 recorded no trace row" in r.message
