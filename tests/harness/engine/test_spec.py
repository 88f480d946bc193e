"""TrialSpec without running anything: its one argv form (the replay command) and one table form round-trip,
every validation error names the field, and ``harness.engine.run``'s keywords are its fields."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.engine import TrialSpec, UsageError, add_trial_arguments, run
from harness.engine.spec import FLAG_OF, FLAGS
from harness.settings import ACCEPTABLE_RNG, BACKENDS, LAUNCHERS, STRATEGIES

#: words argparse takes as values: no leading "-", no NUL (a value that looks like an option is never one here)
WORD = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
               max_size=12).filter(lambda w: not w.startswith("-"))
ARG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
FAULT = st.one_of(st.integers(1, 40).map(str), st.just("random"),
                  st.tuples(st.sampled_from(["checkpoint.write", "ckpt.save", "torch.save"]), st.integers(1, 3),
                            st.sampled_from(["0", "all"]), st.sampled_from(["SIGKILL", "SIGTERM", "exception"]))
                  .map(lambda t: f"{t[0]}:{t[1]}@{t[2]}:{t[3]}"))
NUMBER = st.one_of(st.floats(1e-3, 1e4, allow_nan=False, allow_infinity=False), st.integers(1, 1000).map(float),
                   st.sampled_from([0.1, 2.5, 300.0, 1.23456789e-4]))


@st.composite
def specs(draw, auto=st.sampled_from([None, True])):
    launcher = draw(st.sampled_from(LAUNCHERS))
    nnodes = draw(st.sampled_from([1, 2])) if launcher == "torchrun" else 1
    nproc = nnodes * draw(st.integers(1, 4))
    resume = draw(st.one_of(st.none(), st.integers(1, 5)))
    mode = draw(auto)
    if resume is not None and resume != nproc:
        mode = None  # --resume-nproc cannot be combined with --auto
    plan = draw(st.lists(FAULT, min_size=1, max_size=3))
    fields = dict(
        target=draw(st.one_of(st.sampled_from(["default", "buggy/rng_from_rank0"]), WORD.map(lambda w: w + ".py"))),
        nproc=nproc, backend=draw(st.sampled_from(BACKENDS)), seed=draw(st.integers(-5, 2**40)),
        launcher=launcher, resume_nproc=resume, strategy=draw(st.one_of(st.none(), st.sampled_from(STRATEGIES))),
        auto=mode, plan=plan, timeout_s=draw(NUMBER), stall_s=draw(st.one_of(st.none(), NUMBER)),
        accept_rng=tuple(draw(st.lists(st.sampled_from(ACCEPTABLE_RNG), max_size=3))),
        accept_lost_progress=draw(st.booleans()), baseline_runs=draw(st.one_of(st.none(), st.integers(1, 3))),
        script_args=tuple(draw(st.lists(ARG, max_size=4))),
    )
    if resume is not None and resume != nproc:
        fields["loss_rtol"] = draw(st.one_of(st.none(), NUMBER))
    if launcher == "torchrun":
        fields.update(launch_prefix=tuple(draw(st.lists(WORD, max_size=3))), nnodes=nnodes,
                      rdzv_endpoint=draw(st.one_of(st.none(), st.just("node0:29400"))) if nnodes == 1
                      else "node0:29400", rdzv_timeout_s=draw(NUMBER))
    return TrialSpec(**fields)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_argv_round_trip(spec):
    assert TrialSpec.from_argv(spec.to_argv()) == spec
    assert spec.replay() == shlex.join(["harness", "run", *spec.to_argv()])
    assert TrialSpec.from_argv(shlex.split(spec.replay())[2:]) == spec


@settings(max_examples=100, deadline=None)
@given(specs(auto=st.sampled_from([None, True, False])))
def test_toml_and_json_round_trip(spec):
    assert TrialSpec.from_toml(spec.to_toml()) == spec
    assert TrialSpec.from_json(spec.to_json()) == spec
    assert TrialSpec.from_json(spec.to_json(defaults=False)) == spec


def test_auto_false_has_no_flag_and_reads_back_undecided():
    spec = TrialSpec("default", plan="3", auto=False)
    assert "--auto" not in spec.to_argv()
    assert TrialSpec.from_argv(spec.to_argv()) == dataclasses.replace(spec, auto=None)


def test_the_replay_keeps_its_format():
    spec = TrialSpec("t.py", backend="gloo", seed=3, plan="4,ckpt.save:2@all:TERM", timeout_s=120, stall_s=2.5,
                     strategy="fsdp", resume_nproc=3, loss_rtol=0.001, accept_rng=["numpy"],
                     accept_lost_progress=True, script_args=["--sleep", "0.1 s"])
    assert spec.replay() == ("harness run t.py --nproc 2 --backend gloo --seed 3 --resume-nproc 3 --loss-rtol 0.001 "
                             "--strategy fsdp --kill 4 --kill ckpt.save:2@all:SIGTERM --timeout 120 --stall 2.5 "
                             "--accept-rng numpy --accept-lost-progress -- --sleep '0.1 s'")
    # %g where it is exact, every digit where %g would round (the replay then repeats the exact trial)
    exact = spec.replace(loss_rtol=1.23456789e-4)
    assert "--loss-rtol 0.000123456789" in exact.replay() and TrialSpec.from_argv(exact.to_argv()) == exact


def test_the_launcher_is_part_of_the_spec_and_of_the_replay():
    spec = TrialSpec("default", plan="3").with_launcher_args(
        ["--launcher", "torchrun", "--launch-prefix", "srun -N 2", "--nnodes", "2", "--rdzv-endpoint", "n0:29400"])
    assert spec.launch_prefix == ("srun", "-N", "2") and spec.nnodes == 2
    assert "--launcher torchrun --launch-prefix 'srun -N 2' --nnodes 2 --rdzv-endpoint n0:29400 --kill 3" in spec.replay()
    assert spec.launcher_options() == {"kind": "torchrun", "prefix": ("srun", "-N", "2"), "nnodes": 2,
                                       "rdzv_endpoint": "n0:29400", "rdzv_timeout_s": 20.0}
    assert spec.with_launcher_args(()).launcher == "pool" and spec.with_launcher_args(()).nnodes == 1


@pytest.mark.parametrize("fields, field, message", [
    ({"nproc": 0}, "nproc", "--nproc must be an integer >= 1, got 0"),
    ({"nproc": "2"}, "nproc", "--nproc must be an integer >= 1"),
    ({"backend": "mpi"}, "backend", "unknown backend 'mpi'"),
    ({"launcher": "slurm"}, "launcher", "unknown launcher 'slurm'"),
    ({"launcher": "torchrun", "nnodes": 2}, "rdzv_endpoint", "several nodes need a rendezvous endpoint"),
    ({"launcher": "torchrun", "nnodes": 2, "nproc": 3, "rdzv_endpoint": "h:1"}, "nnodes",
     "--nproc 3 is not a multiple of --nnodes 2"),
    ({"launcher": "torchrun", "rdzv_endpoint": "nohost"}, "rdzv_endpoint", "expected HOST:PORT"),
    ({"resume_nproc": 0}, "resume_nproc", "--resume-nproc must be an integer >= 1, got 0"),
    ({"loss_rtol": 0.01}, "loss_rtol", "--loss-rtol 0.01 needs --resume-nproc"),
    ({"resume_nproc": 3, "auto": True}, "resume_nproc", "--resume-nproc cannot be combined with --auto"),
    ({"strategy": "zero9"}, "strategy", "--strategy must be one of ddp, fsdp"),
    ({"plan": "12@x"}, "plan", "bad fault '12@x'"),
    ({"plan": []}, "plan", "the fault plan is empty"),
    ({"plan": "3@5"}, "plan", "fault 1 (3@5) is on rank 5, but the job has --nproc 2"),
    ({"timeout_s": 0}, "timeout_s", "--timeout must be > 0 seconds, got 0"),
    ({"stall_s": -1}, "stall_s", "--stall must be > 0 seconds, got -1"),
    ({"accept_rng": ["dice"]}, "accept_rng", "--accept-rng takes python, numpy, torch, cuda, all; got 'dice'"),
    ({"baseline_runs": 0}, "baseline_runs", "--baseline-runs must be an integer >= 1, got 0"),
    ({"script_args": "--steps 3"}, "script_args", "script_args is a list of arguments"),
    ({"target": ""}, "target", "the target must be a scenario name or a script path"),
])
def test_validation_errors_name_the_field(fields, field, message):
    with pytest.raises(UsageError) as e:
        TrialSpec(**fields)
    assert e.value.field == field and message in str(e.value)
    assert field in FLAG_OF  # a CLI can name the flag of every field


def test_replace_validates_again():
    spec = TrialSpec("default", plan="3")
    with pytest.raises(UsageError) as e:
        dataclasses.replace(spec, nproc=0)
    assert e.value.field == "nproc"
    assert spec.replace(resume_nproc=2).resume_nproc is None  # the same world size: an ordinary trial


def test_from_argv_refuses_what_harness_run_refuses():
    with pytest.raises(UsageError, match="harness run: argument --backend: invalid choice: 'mpi'"):
        TrialSpec.from_argv(["default", "--backend", "mpi"])
    with pytest.raises(UsageError, match="unrecognized arguments: --json"):
        TrialSpec.from_argv(["default", "--json"])


def test_the_cli_can_parse_with_the_same_table():
    """add_trial_arguments + from_namespace: harness run's defaults (no --kill: random; --auto: True; else None)."""
    parser = argparse.ArgumentParser()
    add_trial_arguments(parser)
    parser.add_argument("--json", action="store_true")  # a CLI's own option beside them
    ns = parser.parse_args(["t.py", "--no-pool", "--json", "--kill", "5", "--kill", "9@1", "--accept-rng", "numpy"])
    spec = TrialSpec.from_namespace(ns, ["--steps", "3"])
    assert spec == TrialSpec("t.py", launcher="subprocess", plan="5,9@1", accept_rng=("numpy",),
                             script_args=("--steps", "3"))
    plain = TrialSpec.from_namespace(parser.parse_args([]))
    assert plain == TrialSpec() and plain.plan == "random" and plain.auto is None
    assert TrialSpec.from_namespace(parser.parse_args(["--auto"])).auto is True
    assert [f.flag for f in FLAGS][:3] == ["--nproc", "--backend", "--seed"]


def test_run_takes_a_spec_or_its_fields(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'nprocs'"):
        run("default", nprocs=2)
    with pytest.raises(UsageError) as e:
        run(TrialSpec("default", plan="3"), nproc=0, out_dir=str(tmp_path / "o"))
    assert e.value.field == "nproc"
    with pytest.raises(UsageError, match="no such script"):
        run("gone.py", plan="3", out_dir=str(tmp_path / "o"))
