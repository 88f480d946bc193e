"""Kill/resume trials at 3 and 4 ranks, where the order of DDP's gradient sums can break bit-exactness.

With 3 or more ranks, DDP's first iteration (one bucket, parameter order) and its later iterations
(buckets rebuilt in the order gradients became ready) sum each gradient element in different
orders; a resumed process runs its first step with the first layout while the uninterrupted run
uses the rebuilt one. The reference checkpointer pins the layout (harness/checkpoint/reduction.py);
these trials show that every correct built-in scenario then resumes bit-exactly at 3 and 4 ranks,
and that without it (`deterministic_reduction=False`) the default scenario diverges in `params` and
`optimizer` (and nothing else) at the first step after the resume.

Default scenario, kill at 12: the resume is from the checkpoint at step 10, so step 11 is the first
step a resumed process runs. The full matrix is marked slow.
"""

import os
import textwrap

import pytest

from support.results import describe
from harness.engine import run

from support import REPO  # noqa: E402

CORRECT = ["default", "transformer_lm", "workers", "bf16", "ema", "fp16"]  # fp16 at 3 ranks, fast: test_scenarios.py
FAST = [("default", 3), ("transformer_lm", 3), ("default", 4)]
SLOW = [(t, n) for n in (3, 4) for t in CORRECT if (t, n) not in FAST]

# The default scenario with the checkpointer's knob set from the command line.
KNOB_SCRIPT = textwrap.dedent('''\
    """The default scenario, with Checkpointer(deterministic_reduction=...) from --reduction."""
    from harness.scenarios._common import Scenario

    MODES = {"off": False, "pinned": True, "rank_ordered": "rank_ordered"}


    class Knob(Scenario):
        def add_arguments(self, p):
            p.add_argument("--reduction", choices=sorted(MODES), default="pinned")

        def prepare(self, run):
            run.ckpt.deterministic_reduction = MODES[run.args.reduction]
            super().prepare(run)


    if __name__ == "__main__":
        Knob().main()
''')


@pytest.fixture(scope="session")
def knob_script(tmp_path_factory):
    folder = tmp_path_factory.mktemp("knob")  # alone in its folder: the baseline cache keys on it
    path = folder / "knob.py"
    path.write_text(KNOB_SCRIPT)
    return str(path)


def trial(pool, tmp_path, target, nproc, plan="12", script_args=()):
    res = run(target, nproc=nproc, plan=plan, seed=0, backend="gloo", out_dir=str(tmp_path / "out"), launcher=pool,
              timeout_s=120, script_args=list(script_args), baseline_runs=1)
    assert res.verdict != "error", f"{target} [{plan}] x{nproc}: {res.outcome}: {res.message}\n{res.log_tail or ''}"
    return res


def check_bit_exact(res, nproc):
    assert (res.verdict, res.outcome) == ("pass", "bit_exact"), describe(res)
    assert any(a.loaded for a in res.attempts), res.attempts  # a real resume from a checkpoint
    assert res.compared["ranks"] == nproc, res.compared


@pytest.mark.parametrize("target, nproc", FAST, ids=[f"{t}-x{n}" for t, n in FAST])
def test_correct_scenario_is_bit_exact_at_more_ranks(pool, tmp_path, target, nproc):
    check_bit_exact(trial(pool, tmp_path, target, nproc), nproc)


@pytest.mark.slow
@pytest.mark.parametrize("target, nproc", SLOW, ids=[f"{t}-x{n}" for t, n in SLOW])
def test_correct_scenario_is_bit_exact_at_more_ranks_full(pool, tmp_path, target, nproc):
    check_bit_exact(trial(pool, tmp_path, target, nproc), nproc)


def test_without_deterministic_reduction_default_diverges_at_3_ranks(pool, tmp_path, knob_script):
    """The finding: the knob off, the first resumed step reduces in another order; only params/optimizer differ."""
    res = trial(pool, tmp_path, knob_script, 3, script_args=["--reduction", "off"])
    assert (res.verdict, res.outcome) == ("fail", "divergence"), describe(res)
    d = res.first_divergence
    assert d.step == 11 and d.attempt == 1, describe(res)  # the first step after the resume from step 10
    assert set(d.fields) == {"params", "optimizer"}, describe(res)  # batch, loss and every RNG stream match


@pytest.mark.slow
@pytest.mark.parametrize("nproc, mode", [(3, "pinned"), (3, "rank_ordered"), (4, "off"), (4, "pinned"),
                                         (4, "rank_ordered")])
def test_deterministic_reduction_knob(pool, tmp_path, knob_script, nproc, mode):
    """The same script: diverges with the knob off, bit-exact with the pinned layout or the rank-ordered hook."""
    res = trial(pool, tmp_path, knob_script, nproc, script_args=["--reduction", mode])
    if mode == "off":
        assert res.outcome == "divergence" and res.first_divergence.step == 11, describe(res)
        assert set(res.first_divergence.fields) == {"params", "optimizer"}, describe(res)
    else:
        check_bit_exact(res, nproc)


@pytest.mark.slow
def test_readme_example_is_bit_exact_at_3_ranks(pool, tmp_path):
    res = run(os.path.join(REPO, "examples", "train_ddp.py"), nproc=3, plan="7", backend="gloo",
              out_dir=str(tmp_path / "out"), launcher=pool, timeout_s=120)
    check_bit_exact(res, 3)
