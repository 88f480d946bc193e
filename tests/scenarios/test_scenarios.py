"""The built-in scenarios under real kills: the correct ones resume bit-exactly, each buggy one fails
with the first divergence its mistake predicts (scenarios.buggy.EXPECTED).

Every trial here launches real 2-rank gloo jobs through `harness.engine.run` (fork-server launcher,
one per xdist worker; baselines cached per scenario in a per-session cache). Default sizes of the
default scenario (scenarios/default.py): 24 steps, 10 micro-batches per rank per epoch, accum 4,
epochs end at steps 3, 6, ..., 24, checkpoints at 5, 10, 15, 20 (15 saved at micro-batch 50).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from support.results import describe
from harness.engine import list_scenarios, run
from harness.oracle import compare_step, load_trace
from harness.scenarios import BUILTIN
from harness.scenarios._common import epoch_table
from harness.scenarios.buggy import EXPECTED

CORRECT = ["default", "transformer_lm", "workers", "bf16", "ema", "elastic", "fp16"]
BUGGY = sorted(EXPECTED)


@pytest.fixture(scope="session")
def launcher(pool):
    return pool


def trial(launcher, tmp_path, target, plan):
    res = run(target, nproc=2, plan=plan, seed=0, backend="gloo", out_dir=str(tmp_path / "out"), launcher=launcher,
              timeout_s=120)
    assert res.verdict != "error", f"{target} [{plan}]: {res.outcome}: {res.message}\n{res.log_tail or ''}"
    return res


# -- static checks (no processes) ----------------------------------------------------------------


def test_registry_lists_every_scenario_module():
    assert sorted(BUILTIN) == list_scenarios()
    assert set(BUGGY) == {n for n in BUILTIN if n.startswith("buggy/")}
    assert set(CORRECT) == {n for n in BUILTIN if not n.startswith("buggy/")}


def test_documented_epoch_boundaries_and_checkpoints():
    table = epoch_table(batches_per_epoch=10, accum=4, steps=24)
    ends = [s for s, _, micro in table if micro % 10 == 0]
    assert ends == [3, 6, 9, 12, 15, 18, 21, 24]
    micro_at = {s: m for s, _, m in table}
    assert [micro_at[s] for s in (5, 10, 15, 20)] == [16, 32, 50, 68]
    assert micro_at[15] % 4 == 2  # the one checkpoint with a non-zero accumulation phase
    # microbatch:39 lands inside step 12's window (micro-batches 37..40)
    assert micro_at[11] < 39 < micro_at[12]


# -- packaging: the folder scenarios/ ships as harness.scenarios, never as a top-level module ------

from support import REPO as REPO  # noqa: E402


def _is_top_level_scenarios(name: str) -> bool:
    return name == "scenarios" or name.startswith("scenarios.")


def test_setuptools_config_ships_scenarios_as_harness_scenarios():
    """pyproject.toml maps the top-level folder scenarios/ to harness.scenarios and lists every package."""
    pyproject = os.path.join(REPO, "pyproject.toml")
    if not os.path.isfile(pyproject):
        pytest.skip("not a source checkout")
    config = pytest.importorskip("setuptools.config.pyprojecttoml")
    st = config.read_configuration(pyproject, expand=True)["tool"]["setuptools"]
    packages = list(st["packages"])
    assert not [p for p in packages if _is_top_level_scenarios(p)], packages
    assert st.get("package-dir", {}).get("harness.scenarios") == "scenarios"
    # every package folder is listed (packages.find cannot rename scenarios/, so the list is explicit)
    folders = set()
    for top, dotted in (("harness", "harness"), ("scenarios", "harness.scenarios")):
        for folder, dirs, names in os.walk(os.path.join(REPO, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            if "__init__.py" in names:
                rel = os.path.relpath(folder, os.path.join(REPO, top))
                folders.add(dotted if rel == "." else dotted + "." + rel.replace(os.sep, "."))
    assert folders == set(packages)


def test_installed_distribution_has_no_top_level_scenarios(tmp_path):
    """The installed resume-harness (editable or not) exposes harness.scenarios and no module 'scenarios'.

    Checked in a fresh interpreter outside the repository: from the repository root its folder
    scenarios/ (and any stale resume_harness.egg-info there) would be found through the current directory.
    """
    probe = """if True:
        import importlib.metadata, importlib.util, json, os
        try:
            dist = importlib.metadata.distribution("resume-harness")
        except importlib.metadata.PackageNotFoundError:
            dist = None
        try:
            import harness.scenarios
            location = os.path.dirname(harness.scenarios.__file__)
        except ImportError as e:
            location = repr(e)
        print(json.dumps({
            "installed": dist is not None,
            "top_level": (dist.read_text("top_level.txt") or "").split() if dist else [],
            "files": [str(f) for f in (dist.files or [])] if dist else [],
            "scenarios_spec": repr(importlib.util.find_spec("scenarios")),
            "location": location,
        }))
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(out.stdout.splitlines()[-1])
    if not got["installed"]:
        pytest.skip("resume-harness is not installed")
    assert "scenarios" not in got["top_level"], got["top_level"]
    assert not [f for f in got["files"] if f.replace(os.sep, "/").startswith("scenarios/")], got["files"]
    assert got["scenarios_spec"] == "None", got["scenarios_spec"]
    assert os.path.isfile(os.path.join(got["location"], "_common.py")), got["location"]


def test_scenario_names_resolve_to_harness_scenarios():
    from harness.engine import resolve_target

    for spelling in ("default", "scenarios/default", "scenarios.default", "harness.scenarios.default",
                     "harness/scenarios/default"):
        t = resolve_target(spelling)
        assert (t.name, t.module, t.builtin) == ("default", "harness.scenarios.default", True), spelling
    t = resolve_target("scenarios/buggy/ema_not_registered")
    assert (t.name, t.module) == ("buggy/ema_not_registered", "harness.scenarios.buggy.ema_not_registered")
    # the baseline cache key hashes every file of the package, named relative to it
    names = {name for name, _ in t.source_files()}
    assert {"__init__.py", "_common.py", "default.py", "ema.py", os.path.join("buggy", "__init__.py")} <= names


# -- correct scenarios resume bit-exactly ----------------------------------------------------------

CORRECT_PLANS = [
    ("default", "12"),                   # mid-epoch: resume from step 10 (epoch 3, batch 2 of 10)
    pytest.param("default", "6", marks=pytest.mark.slow),  # at an epoch end (epoch 1): resume from 5
    pytest.param("default", "16", marks=pytest.mark.slow),  # after the epoch-boundary checkpoint 15 (phase 2)
    ("default", "microbatch:39"),        # mid-accumulation, inside step 12's window
    ("default", "checkpoint.write:10"),  # mid-save: rank 0's 3rd file of the save at step 10
    ("default", "checkpoint.commit:3"),  # save at 15 written but not committed: resume from 10
    pytest.param("default", "12@1", marks=pytest.mark.slow),  # the other rank
    ("default", "12@all"),               # every rank at once
    ("default", "7,17"),                 # two faults: resume twice (from 5, then from 15)
    ("transformer_lm", "10"),
    pytest.param("transformer_lm", "microbatch:27", marks=pytest.mark.slow),
    ("workers", "12"),
    pytest.param("workers", "16", marks=pytest.mark.slow),
    ("bf16", "12"),
    ("ema", "12"),
    pytest.param("ema", "16", marks=pytest.mark.slow),
    pytest.param("elastic", "12", marks=pytest.mark.slow),  # same world size: bit-exact (--resume-nproc: elsewhere)
    # fp16 at kill 13, 2 and 3 ranks, is in the fast suite: test_fp16_scale_grows_and_backs_off_...
    pytest.param("fp16", "12", marks=pytest.mark.slow),  # the scaler backed off between checkpoint 10 and the kill
    pytest.param("fp16", "16", marks=pytest.mark.slow),  # from 15, saved with a growth tracker of 1
    pytest.param("fp16", "microbatch:39", marks=pytest.mark.slow),  # mid-accumulation: scaled grads in flight
    pytest.param("fp16", "checkpoint.write:10", marks=pytest.mark.slow),
    pytest.param("fp16", "7,17", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("target, plan", CORRECT_PLANS,
                         ids=["-".join(getattr(c, "values", c)) for c in CORRECT_PLANS])
def test_correct_scenario_is_bit_exact(launcher, tmp_path, target, plan):
    res = trial(launcher, tmp_path, target, plan)
    assert res.verdict == "pass" and res.outcome == "bit_exact", describe(res)
    assert res.diagnosis is None
    resumed = [a for a in res.attempts if a.loaded]
    assert len(resumed) == len(plan.split(",")), res.attempts  # every restart resumed from a checkpoint


@pytest.mark.parametrize("nproc", [2, 3])
def test_fp16_scale_grows_and_backs_off_between_checkpoint_and_kill(launcher, tmp_path, nproc):
    """The fp16 scenario's GradScaler state really changes, so a resume that forgets it cannot pass.

    Kill 13 resumes from the checkpoint at step 10; steps 11-13 must both back off (overflow: the
    update is skipped) and grow, and the state saved at step 10 must differ from a fresh scaler's.
    """
    res = run("fp16", nproc=nproc, plan="13", seed=0, backend="gloo", out_dir=str(tmp_path / "out"),
              launcher=launcher, timeout_s=120)
    assert (res.verdict, res.outcome) == ("pass", "bit_exact"), describe(res)
    tr = load_trace(tmp_path / "out" / "trace")
    per_rank = []
    for r in range(nproc):
        final = {row.step: row for row in tr.steps(r)}  # the resumed attempt's rows replace the killed one's
        per_rank.append([(final[s].extra["scale"], final[s].extra["growth_tracker"]) for s in range(1, 25)])
    assert all(p == per_rank[0] for p in per_rank), "the scaler state differs between ranks"
    scale = [sc for sc, _ in per_rank[0]]
    assert all(sc > 0 and math.frexp(sc)[0] == 0.5 for sc in scale), scale  # powers of two, exactly
    prev = [2.0**21] + scale[:-1]  # --init-scale before step 1
    grew = {s for s in range(1, 25) if scale[s - 1] > prev[s - 1]}
    backed_off = {s for s in range(1, 25) if scale[s - 1] < prev[s - 1]}
    assert grew & {11, 12, 13} and backed_off & {11, 12, 13}, (scale, grew, backed_off)
    assert per_rank[0][10 - 1] != (2.0**21, 0), "checkpoint 10 holds a fresh scaler's state"


# -- buggy variants fail with the predicted first divergence ---------------------------------------


@pytest.mark.parametrize("target", BUGGY)
def test_buggy_variant_fails_at_first_step_after_resume(launcher, tmp_path, target):
    exp = EXPECTED[target]
    res = trial(launcher, tmp_path, target, exp.plan)
    assert res.verdict == "fail" and res.outcome == "divergence", describe(res)
    d = res.first_divergence
    assert (d.where, d.step, d.rank, d.attempt) == ("trace", exp.step, exp.rank, 1), describe(res)
    assert d.fields == list(exp.fields), describe(res)
    assert res.diagnosis is not None and res.diagnosis.cause == exp.cause, (res.diagnosis, describe(res))


def test_each_buggy_variant_has_its_own_diagnosis():
    causes = [e.cause for e in EXPECTED.values()]
    assert all(causes) and len(set(causes)) == len(causes), causes


# The same mistakes under other kinds of kills.
BUGGY_OTHER_PLANS = [
    ("buggy/numpy_rng_not_saved", "microbatch:42", 11, ("batch", "rng:numpy", "loss", "params", "optimizer")),
    ("buggy/sampler_epoch_not_set", "12@all", 11, ("batch", "rng:torch", "loss", "params", "optimizer",
                                                    "extra:epoch")),
    ("buggy/optimizer_not_saved", "checkpoint.write:10", 6, ("params", "optimizer")),
    ("buggy/scheduler_not_saved", "12@1", 11, ("params", "optimizer", "extra:lr")),
]  # the diagnosis is the variant's own under every kill


@pytest.mark.slow
@pytest.mark.parametrize("target, plan, step, fields", BUGGY_OTHER_PLANS,
                         ids=[f"{t}-{p}" for t, p, _, _ in BUGGY_OTHER_PLANS])
def test_buggy_variant_under_other_kills(launcher, tmp_path, target, plan, step, fields):
    res = trial(launcher, tmp_path, target, plan)
    assert res.verdict == "fail" and res.outcome == "divergence", describe(res)
    d = res.first_divergence
    assert (d.step, d.rank, d.fields) == (step, 0, list(fields)), describe(res)
    assert res.diagnosis is not None and res.diagnosis.cause == EXPECTED[target].cause, res.diagnosis


def test_rng_from_rank0_shows_on_rank1_rng(launcher, tmp_path):
    """The first divergence names rank 1, whose inputs differ, not rank 0, where only the update does.

    Within the trial itself, rank 1's step 11 ran twice: before the kill (as in the baseline) and after
    the resume. The two rows differ in every RNG stream; rank 0's two rows differ only in the update.
    """
    res = trial(launcher, tmp_path, "buggy/rng_from_rank0", "12")
    assert res.verdict == "fail", describe(res)
    assert res.first_divergence.rank == 1 and "rng:torch" in res.first_divergence.fields, describe(res)
    tr = load_trace(tmp_path / "out" / "trace")
    rows = {(r, row.attempt): row for r in (0, 1) for row in tr.steps(r) if row.step == 11}
    fields1 = compare_step(rows[(1, 0)], rows[(1, 1)])[0]
    fields0 = compare_step(rows[(0, 0)], rows[(0, 1)])[0]
    assert {"rng:python", "rng:numpy", "rng:torch", "batch", "loss"} <= set(fields1), fields1
    assert fields0 == ["params", "optimizer"], fields0


def test_grad_accum_bug_is_silent_at_aligned_checkpoints_but_caught_in_final_state(launcher, tmp_path):
    """Resuming from step 10 (micro-batch 32, a multiple of accum): every step row matches, yet the
    recorded final state holds the wrong micro-batch counter."""
    res = trial(launcher, tmp_path, "buggy/grad_accum_position_lost", "12")
    assert res.verdict == "fail", describe(res)
    d = res.first_divergence
    assert d.where == "final" and d.fields == ["extra:counters"], describe(res)


# -- outside the harness ---------------------------------------------------------------------------


@pytest.mark.slow
def test_default_runs_under_plain_torchrun(tmp_path):
    """The scenario is an ordinary torchrun script; the probe is a no-op there; a rerun resumes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env.update(HARNESS_RUN_DIR=str(tmp_path / "run"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "harness.scenarios.default", "--steps", "6", "--ckpt-every", "3", "--report-time"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "6 steps on 2 rank(s)" in p.stderr
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["checkpoint_0", "checkpoint_1"]
    assert not (tmp_path / "trace").exists()
