"""Every kind of state the reference checkpointer saves is needed by at least one built-in scenario.

A mutant of the checkpointer forgets one kind (on save, or on load: state_mutants.py, applied inside
the rank processes through a wrapper script, never through a switch in harness.checkpoint). Each is
run through the real engine against every correct built-in scenario with a kill at step 12, which
resumes from the checkpoint saved at step 10 (step 8 in transformer_lm). `COVERAGE` says which
scenarios must fail under each mutant; every other one must still pass, so the table is exact, and
docs/state-coverage.md shows the same table (checked below). The campaign is slow; the GradScaler
mutant (GitHub issue #17: it survived every scenario until fp16 existed) runs in the fast suite.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil

import pytest
import torch

from support import REPO
from support.results import describe
from harness.engine import run
from harness.oracle import compare_step, load_trace
from harness.scenarios import BUILTIN

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("state_mutants", os.path.join(_HERE, "state_mutants.py"))
state_mutants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(state_mutants)
MUTANTS = state_mutants.MUTANTS

SCENARIOS = ["default", "transformer_lm", "workers", "bf16", "ema", "elastic", "fp16"]
ALL = tuple(SCENARIOS)
NUMPY = ("default", "transformer_lm", "bf16", "ema", "fp16")  # workers draw in their workers, elastic not at all

#: mutant -> the scenarios that fail under it (2 ranks, kill at 12); every other scenario passes.
COVERAGE: dict[str, tuple[str, ...]] = {
    "model/save": ALL, "model/load": ALL,
    "optimizer/save": ALL, "optimizer/load": ALL,
    "scheduler/save": ALL, "scheduler/load": ALL,
    "scaler/save": ("fp16",), "scaler/load": ("fp16",),  # the only scenario with a GradScaler
    "rng.python/load": ("fp16",),  # the only scenario drawing from python's random
    "rng.numpy/load": NUMPY,
    "rng.torch/load": ALL,
    "rng.cuda/load": (),  # no CUDA RNG on CPU: test_cuda_rng_mutant, on a CUDA host only
    "data/save": ALL, "data/load": ALL,
    "epoch/save": ALL, "epoch/load": ALL,
    "custom/save": ALL, "custom/load": ALL,  # the micro-batch counter every scenario registers (and ema's EMA)
    "step/save": ALL, "step/load": ALL,
}
CPU_MUTANTS = [m for m in MUTANTS if m != "rng.cuda/load"]


@pytest.fixture(scope="session")
def wrapper(tmp_path_factory):
    """state_mutants.py alone in a folder: a script's baseline cache key covers the .py files beside it."""
    folder = tmp_path_factory.mktemp("mutants")
    return shutil.copy(os.path.join(_HERE, "state_mutants.py"), folder / "state_mutants.py")


def trial(pool, tmp_path, monkeypatch, wrapper, scenario, mutant, nproc=2, plan="12", backend="gloo"):
    # The mutant travels in the environment (the ranks inherit it), not in the script's arguments, so
    # that every mutant of a scenario shares the scenario's one (unmutated) baseline.
    if mutant:
        monkeypatch.setenv(state_mutants.ENV, mutant)
    else:
        monkeypatch.delenv(state_mutants.ENV, raising=False)
    res = run(str(wrapper), nproc=nproc, plan=plan, seed=0, backend=backend, out_dir=str(tmp_path / "out"),
              launcher=pool, timeout_s=120, script_args=["--scenario", scenario], baseline_runs=1, auto=False)
    assert res.verdict != "error", f"{scenario} [{mutant}] x{nproc}: {res.outcome}: {res.message}\n{res.log_tail or ''}"
    return res


def check(res, caught: bool, what: str) -> None:
    if caught:
        assert res.verdict == "fail", f"{what} survived: {describe(res)}"
        assert res.outcome in ("divergence", "crash_on_resume"), describe(res)
    else:
        assert (res.verdict, res.outcome) == ("pass", "bit_exact"), f"{what}: {describe(res)}"
    if res.outcome == "crash_on_resume":  # custom/save: the load itself refuses the incomplete checkpoint
        assert "IncompatibleCheckpointError" in (res.log_tail or ""), f"{what}: {describe(res)}\n{res.log_tail}"
    else:
        assert any(a.loaded for a in res.attempts), res.attempts  # the trial did resume from a checkpoint


# -- static: the table itself ---------------------------------------------------------------------


def test_every_kind_of_state_is_needed_by_a_builtin_scenario():
    assert set(COVERAGE) == set(MUTANTS)
    assert set(SCENARIOS) == {n for n in BUILTIN if "/" not in n}  # every correct built-in scenario
    kinds = {kind for kind, _ in MUTANTS.values()}
    caught = {MUTANTS[m][0] for m, scen in COVERAGE.items() if scen}
    assert kinds - caught == {"RNG: cuda"}, kinds - caught  # CUDA: only on a CUDA host (test_cuda_rng_mutant)
    assert {m.split("/")[1] for m in MUTANTS} == {"save", "load"}


def _doc_table() -> dict[str, set[str]]:
    """docs/state-coverage.md's mutant table: mutant -> the scenarios it lists as failing."""
    with open(os.path.join(REPO, "docs", "state-coverage.md"), encoding="utf-8") as f:
        text = f.read()
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`([\w.]+/(?:save|load))`\s*\|[^|]*\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = set(re.findall(r"`([\w]+)`", m.group(2)))
    return rows


def test_docs_table_matches_the_campaign():
    doc = _doc_table()
    assert set(doc) == set(COVERAGE), set(doc) ^ set(COVERAGE)
    for mutant, scenarios in COVERAGE.items():
        assert doc[mutant] == set(scenarios), (mutant, doc[mutant], scenarios)


# -- fast: GitHub issue #17's mutant --------------------------------------------------------------


def test_gradscaler_dropped_on_save_fails_fp16(pool, tmp_path, monkeypatch, wrapper):
    """The mutant that survived every check: the GradScaler's state left out of the checkpoint."""
    control = trial(pool, tmp_path / "control", monkeypatch, wrapper, "fp16", None)
    check(control, False, "fp16 without a mutant")  # the wrapper itself changes nothing
    res = trial(pool, tmp_path / "mutant", monkeypatch, wrapper, "fp16", "scaler/save")
    check(res, True, "scaler/save on fp16")
    d = res.first_divergence
    # Step 11, the first after the resume from 10: the fresh scaler (2**21) backs off to 2**20, not 2**19.
    assert (d.where, d.step, d.attempt, d.fields) == ("trace", 11, 1, ["extra:scale"]), describe(res)
    # Not only the recorded scale: at step 12 the fresh scale overflows and skips an update the
    # uninterrupted run made, so the weights themselves differ.
    base = {row.step: row for row in load_trace(tmp_path / "control" / "out" / "trace").steps(0)}
    mut = {row.step: row for row in load_trace(tmp_path / "mutant" / "out" / "trace").steps(0)}
    assert {"params", "optimizer"} <= set(compare_step(base[12], mut[12])[0])


# -- slow: the whole campaign ---------------------------------------------------------------------

CASES = [(s, m) for s in SCENARIOS for m in [None, *CPU_MUTANTS]]


@pytest.mark.slow
@pytest.mark.parametrize("scenario, mutant", CASES, ids=[f"{s}-{m or 'none'}" for s, m in CASES])
def test_mutant_against_scenario(pool, tmp_path, monkeypatch, wrapper, scenario, mutant):
    res = trial(pool, tmp_path, monkeypatch, wrapper, scenario, mutant)
    check(res, mutant is not None and scenario in COVERAGE[mutant], f"{mutant} on {scenario}")


@pytest.mark.slow
@pytest.mark.parametrize("mutant", [None, *CPU_MUTANTS])
def test_mutant_against_fp16_at_3_ranks(pool, tmp_path, monkeypatch, wrapper, mutant):
    """fp16 catches every CPU mutant; at 3 ranks too (its scale cycle differs there)."""
    res = trial(pool, tmp_path, monkeypatch, wrapper, "fp16", mutant, nproc=3)
    check(res, mutant is not None, f"{mutant} on fp16 x3")


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA RNG exists on a CUDA host only")
@pytest.mark.parametrize("mutant", [None, "rng.cuda/load"])
def test_cuda_rng_mutant(pool, tmp_path, monkeypatch, wrapper, mutant):
    """On CUDA the default scenario's dropout draws from the CUDA RNG (one rank: one GPU suffices)."""
    res = trial(pool, tmp_path, monkeypatch, wrapper, "default", mutant, nproc=1, backend="auto")
    check(res, mutant is not None, f"{mutant} on default, CUDA")


# -- lost progress: the resume point, not the state ------------------------------------------------


@pytest.mark.parametrize("mutant, args", [
    ("resume/oldest", []),  # checkpoints 5 and 10 kept (total_limit 2): the load picks 5
    pytest.param("rotation/newest", ["--total-limit", "1"], marks=pytest.mark.slow),  # committing 10 deletes 10 itself
])
def test_a_resume_that_loses_progress_is_caught(pool, tmp_path, monkeypatch, wrapper, mutant, args):
    """Both mutants resume bit-exactly from step 5 (the final state matches): only the resume point
    tells, against the checkpoint of step 10 committed before the kill at step 12."""
    monkeypatch.setenv(state_mutants.ENV, mutant)
    res = run(str(wrapper), nproc=2, plan="12", seed=0, out_dir=str(tmp_path / "out"), launcher=pool, timeout_s=120,
              script_args=["--scenario", "default", *args], baseline_runs=1, auto=False)
    assert (res.verdict, res.outcome) == ("fail", "lost_progress"), describe(res)
    assert "resumed from step 5" in res.message and "was step 10" in res.message
    assert res.diagnosis.cause == "lost_progress"
    monkeypatch.delenv(state_mutants.ENV)
    ok = run(str(wrapper), nproc=2, plan="12", seed=0, out_dir=str(tmp_path / "ok"), launcher=pool, timeout_s=120,
             script_args=["--scenario", "default", *args], baseline_runs=1, auto=False)
    assert (ok.verdict, ok.outcome) == ("pass", "bit_exact"), describe(ok)
