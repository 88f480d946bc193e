import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from harness.engine import TrialSpec, UsageError, list_scenarios, replay_command, resolve_target, run
from harness.engine.baseline import baseline_key, cache_root
from harness.faults import FaultPlan
from harness.launch import make_launcher

from support import SCRIPTS  # noqa: E402
MLP = os.path.join(SCRIPTS, "ddp_mlp.py")
BUGGY = os.path.join(SCRIPTS, "buggy_reseed.py")



@pytest.fixture
def trial(pool, tmp_path):
    def go(target=MLP, **kwargs):
        kwargs.setdefault("out_dir", str(tmp_path / "out"))
        kwargs.setdefault("launcher", pool)
        kwargs.setdefault("timeout_s", 120)
        return run(target, **kwargs)
    return go


def test_correct_resume_is_bit_exact(trial, tmp_path):
    result = trial(plan="10")
    assert (result.verdict, result.outcome) == ("pass", "bit_exact"), result.message
    assert result.exit_code == 0 and result.first_divergence is None
    assert [a.attempt for a in result.attempts] == [0, 1]
    assert result.attempts[0].fault.step == 10 and result.attempts[1].first_step == 9
    assert result.launches[0]["exits"][0]["signal"] == "SIGKILL"
    assert json.loads(json.dumps(result.to_json()))["attempts"][0]["exits"][0]["signal"] == "SIGKILL"
    assert result.compared["reexecuted_rows"] == 4 and result.compared["final_tensors"] > 0
    assert result.replay == f"harness run {MLP} --nproc 2 --backend gloo --seed 0 --kill 10 --timeout 120"
    out = tmp_path / "out"
    assert json.loads((out / "result.json").read_text())["verdict"] == "pass"
    # the result carries its concrete spec (result.json too): the replay is made from it
    spec = TrialSpec.of_result(json.loads((out / "result.json").read_text()))
    assert spec == TrialSpec.of_result(result) == TrialSpec(MLP, backend="gloo", plan="10", timeout_s=120)
    assert spec.replay() == result.replay
    assert sorted(os.listdir(out)) == ["attempt0", "attempt1", "result.json", "run", "trace"]
    assert sorted(os.listdir(out / "attempt1")) == ["rank0.log", "rank1.log"]
    assert "resumed from step 8" in (out / "attempt1" / "rank0.log").read_text()


def test_keep_run_false_drops_only_a_passing_trials_run_folder(trial, tmp_path):
    """Fuzz and certify keep the checkpoints of failures only: a pass's tmpfs folder is never copied out."""
    passed = trial(plan="10", out_dir=str(tmp_path / "pass"), keep_run=False)
    failed = trial(BUGGY, plan="10", out_dir=str(tmp_path / "fail"), keep_run=False)
    assert (passed.verdict, failed.verdict) == ("pass", "fail")
    assert not os.path.lexists(tmp_path / "pass" / "run") and os.path.isdir(tmp_path / "pass" / "trace")
    assert any((tmp_path / "fail" / "run").iterdir())


def test_reseed_on_resume_diverges(trial):
    result = trial(BUGGY, plan="10")
    assert (result.verdict, result.outcome) == ("fail", "divergence")
    d = result.first_divergence
    assert (d.step, d.rank, d.attempt) == (9, 0, 1)
    assert {"rng:python", "rng:numpy", "rng:torch", "loss"} <= set(d.fields)
    assert result.exit_code == 1


@pytest.mark.parametrize("plan, attempts", [
    (["6", "15@1"], 3),                 # two kills, two restarts
    ("13@all:SIGTERM", 2),              # graceful: the script saves on SIGTERM and exits 0
    ("ckpt.save:3:exception", 2),       # an exception inside the third checkpoint save
    ("ckpt.saved:2@1", 2),              # SIGKILL right after rank 1's second checkpoint
])
def test_plans(trial, plan, attempts):
    result = trial(plan=plan, script_args=["--graceful"])
    assert (result.verdict, result.outcome) == ("pass", "bit_exact"), result.message
    assert len(result.attempts) == attempts
    assert all(a.fault is not None for a in result.attempts[:-1])


def test_sigterm_graceful_resumes_from_the_step_it_saved(trial):
    result = trial(plan="13@all:SIGTERM", script_args=["--graceful"])
    assert result.attempts[1].first_step == 14
    assert [e["returncode"] for e in result.launches[0]["exits"]] == [0, 0]


def test_random_plan_is_resolved_from_the_seed(trial, tmp_path):
    a = trial(plan="random", seed=5, out_dir=str(tmp_path / "a"))
    b = trial(plan="random", seed=5, out_dir=str(tmp_path / "b"))
    assert a.verdict == "pass", a.message
    assert a.plan == b.plan and a.plan.isdigit() and 1 <= int(a.plan) <= 23
    assert a.replay.endswith(f"--seed 5 --kill {a.plan} --timeout 120")
    assert b.timings["baseline_cached"]  # the baseline of a was cached and reused


def test_plans_that_cannot_fire_are_refused_before_anything_runs(trial, tmp_path):
    with pytest.raises(UsageError, match=r"rank 2, but the job has --nproc 2"):
        trial(plan="10@2", out_dir=str(tmp_path / "a"))
    assert not os.path.exists(tmp_path / "a")  # refused before the baseline or the trial ran
    with pytest.raises(UsageError, match="step 100, but the baseline's last step is 24"):
        trial(plan="100")
    with pytest.raises(UsageError, match=r"never reached point 'ckpt.sav'; did you mean ckpt.save or ckpt.saved\?"):
        trial(plan="ckpt.sav")
    with pytest.raises(UsageError, match=r"reached 'ckpt.save' at most 6 time\(s\)"):
        trial(plan="ckpt.save:7")
    with pytest.raises(UsageError, match="empty"):
        trial(plan=[])


def test_fault_that_never_fires_is_an_error(trial):
    """A later fault at a point only a resumed attempt reaches, more often than it does: never fires."""
    result = trial(plan="10,ckpt.loaded:3")
    assert (result.verdict, result.outcome) == ("error", "fault_not_fired"), result.message
    assert result.exit_code == 2 and "fault 2 of the plan never fired" in result.message


def test_kill_before_the_first_checkpoint_is_not_resumed(trial):
    result = trial(plan="2")
    assert result.outcome == "not_resumed", result.message
    assert result.attempts[1].first_step == 1


def test_crash_on_resume_shows_the_log_tail(trial):
    result = trial(plan="10", script_args=["--bug", "crash-on-resume"])
    assert result.outcome == "crash_on_resume" and result.verdict == "fail"
    assert "deliberate test bug" in result.log_tail


def test_nondeterministic_baseline(trial):
    result = trial(plan="10", script_args=["--unseeded"])
    assert (result.verdict, result.outcome) == ("fail", "nondeterministic_baseline")
    assert "nondeterministic even without faults" in result.message
    assert result.first_divergence.step == 1


def test_failing_baseline(trial, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import sys\nprint('cannot start: no data')\nsys.exit(4)\n")
    result = trial(str(broken), plan="3")
    assert (result.verdict, result.outcome) == ("error", "baseline_failed")
    assert "exited with code 4" in result.message and "cannot start: no data" in result.log_tail
    log = result.message.split("its log: ")[1].split()[0].rstrip(";,")
    assert os.path.isfile(log) and log.startswith(str(tmp_path / "out")), log  # kept, and named where it is


def test_script_without_probe_calls(trial, tmp_path):
    silent = tmp_path / "silent.py"
    silent.write_text("print('training without the probe')\n")
    result = trial(str(silent), plan="3")
    # No probe import: auto mode (harness.probe.auto), which sees no optimizer step either.
    assert result.outcome == "baseline_failed" and "saw no training step" in result.message


SLOW = """
import os, time
from harness import probe
for step in range(1, 4):
    probe.step(step)
    if step == 1 and os.environ["HARNESS_ROLE"] == "trial":
        time.sleep(600)
probe.finish()
"""


def test_timeout_is_an_error_naming_the_hung_ranks(trial, tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW)
    result = trial(str(slow), plan="2", timeout_s=2, stall_s=100, baseline_runs=1)
    assert (result.verdict, result.outcome) == ("error", "timeout"), result.message
    assert "attempt 0 hung: no end within --timeout 2 s" in result.message
    assert "rank 0 at step 1" in result.message and "rank 1 at step 1" in result.message
    assert "--timeout 2" in result.replay and "--stall 100" in result.replay


def test_a_stall_is_caught_in_seconds(trial, tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW)
    lines = []
    result = trial(str(slow), plan="2", stall_s=1.5, baseline_runs=1, progress=lines.append)
    # A stall is its own outcome and exit code (4), never a divergence or a resume bug.
    assert (result.verdict, result.outcome, result.exit_code) == ("error", "stall", 4), result.message
    assert "stalled: no rank recorded anything" in result.message and "rank 1: step 1" in result.message
    assert result.timings["trial_s"] < 60
    assert any("stalled" in line for line in lines)


def test_baseline_cache_key_and_reuse(trial, tmp_path):
    first = trial(plan="10", script_args=["--steps", "16"], out_dir=str(tmp_path / "1"))
    again = trial(plan="12", script_args=["--steps", "16"], out_dir=str(tmp_path / "2"))
    assert first.verdict == again.verdict == "pass"
    assert again.timings["baseline_cached"]
    target = resolve_target(MLP)
    key = baseline_key(target, nproc=2, backend="gloo", script_args=["--steps", "16"], runs=2)
    assert os.path.isfile(os.path.join(cache_root(), key, "meta.json"))
    assert key != baseline_key(target, nproc=2, backend="gloo", script_args=["--steps", "17"], runs=2)
    assert key != baseline_key(target, nproc=3, backend="gloo", script_args=["--steps", "16"], runs=2)
    no_cache = trial(plan="10", script_args=["--steps", "16"], out_dir=str(tmp_path / "3"), use_cache=False)
    assert not no_cache.timings["baseline_cached"] and os.path.isdir(tmp_path / "3" / "baseline" / "baseline1")


def test_beside_files_are_part_of_the_key(tmp_path):
    (tmp_path / "train.py").write_text("import helper\n")
    (tmp_path / "helper.py").write_text("X = 1\n")
    target = resolve_target(str(tmp_path / "train.py"))
    key = baseline_key(target, nproc=2, backend="gloo", script_args=[], runs=2)
    (tmp_path / "helper.py").write_text("X = 2\n")
    assert baseline_key(target, nproc=2, backend="gloo", script_args=[], runs=2) != key


@pytest.mark.slow
def test_concurrent_trials_share_one_baseline(tmp_path, shared_cache):
    """Two harness processes ask for the same missing baseline: one computes it, both use it."""
    code = ("import sys; from harness.engine import run; "
            "r = run(sys.argv[1], plan='6', out_dir=sys.argv[2], script_args=['--steps', '9', '--save-every', '3']); "
            "print(r.verdict, r.timings['baseline_cached'])")
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code, MLP, str(tmp_path / f"out{i}")], env=env,
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    outs = sorted(p.communicate(timeout=300)[0].split() for p in procs)
    assert outs == [["pass", "False"], ["pass", "True"]]
    entries = [e for e in os.listdir(tmp_path / "cache") if not e.startswith(".")]
    assert len(entries) == 1


def test_usage_errors(trial, tmp_path):
    with pytest.raises(UsageError, match="unknown target 'no_such_thing'.*built-in scenario"):
        trial("no_such_thing")
    with pytest.raises(UsageError, match="no such script"):
        trial(str(tmp_path / "missing.py"))
    with pytest.raises(UsageError, match="'12@x'"):
        trial(plan="12@x")
    with pytest.raises(UsageError, match="nproc"):
        trial(nproc=0)
    with pytest.raises(UsageError, match="backend"):
        trial(backend="mpi")
    out = tmp_path / "used"
    (out / "trace").mkdir(parents=True)
    (out / "trace" / "rank0.jsonl").write_text("{}\n")
    with pytest.raises(UsageError, match="already holds a trial"):
        trial(out_dir=str(out))


def test_target_resolution(tmp_path):
    assert resolve_target(MLP).script == MLP and not resolve_target(MLP).builtin
    assert "_common" not in " ".join(list_scenarios())
    with pytest.raises(UsageError):
        resolve_target("_common")
    with pytest.raises(UsageError):
        resolve_target("../etc")
    if "default" in list_scenarios():
        t = resolve_target("default")
        assert t.module == "harness.scenarios.default" and t.builtin and t.slug == "default"
        assert any(name == "default.py" for name, _ in t.source_files())


def test_replay_command_quotes_arguments():
    target = resolve_target(MLP)
    cmd = replay_command(target, nproc=2, backend="gloo", seed=3, plan=FaultPlan.parse("4,ckpt.save:2@all:TERM"),
                         script_args=["--sleep", "0.1 s"])
    assert cmd == (f"harness run {MLP} --nproc 2 --backend gloo --seed 3 --kill 4 --kill ckpt.save:2@all:SIGTERM "
                   "-- --sleep '0.1 s'")


@pytest.mark.slow
def test_subprocess_launcher_gives_the_same_verdict(tmp_path):
    launcher = make_launcher("subprocess")
    result = run(MLP, plan="10", out_dir=str(tmp_path / "out"), launcher=launcher, timeout_s=120)
    assert result.outcome == "bit_exact", result.message


def test_pytest_fixture(resume_harness):
    result = resume_harness(MLP, plan="10")
    assert result.verdict == "pass", result.message
    assert "/trial0" in result.out_dir


@pytest.mark.slow
def test_engine_runs_in_a_thread_with_its_own_launcher(tmp_path):
    results = []
    t = threading.Thread(target=lambda: results.append(run(MLP, plan="7", out_dir=str(tmp_path / "o"))))
    t.start()
    t.join(300)
    assert results and results[0].verdict == "pass"


def test_crash_before_any_fault(trial, tmp_path):
    crashy = tmp_path / "crashy.py"
    crashy.write_text(textwrap.dedent("""
        import os
        from harness import probe
        for step in range(1, 6):
            probe.step(step, loss=float(step))
            if step == 3 and os.environ["HARNESS_ROLE"] == "trial":
                raise SystemExit("disk full while logging (test)")
        probe.finish()
    """))
    result = trial(str(crashy), plan="4", baseline_runs=1)
    assert (result.verdict, result.outcome) == ("error", "crash"), result.message
    assert "disk full while logging" in result.log_tail and len(result.attempts) == 1


# --- a PASS must never be false: each of these once passed ------------------------------------------

def test_a_script_that_ignores_sigterm_is_not_a_pass(trial):
    result = trial(plan="10:SIGTERM,16", script_args=["--bug", "ignore-sigterm"])
    assert (result.verdict, result.outcome) == ("error", "fault_survived"), result.message
    assert result.exit_code == 2
    assert "ran to the end of attempt 0" in result.message and "1 later fault(s)" in result.message
    assert "SIGTERM" in result.hint


def test_a_script_that_catches_the_injected_exception_is_not_a_pass(trial):
    result = trial(plan="10:exc", script_args=["--bug", "catch-fault"])
    assert (result.verdict, result.outcome) == ("error", "fault_survived"), result.message
    assert "InjectedFault" in result.hint


def test_a_nonzero_exit_after_finish_in_the_resumed_attempt_fails(trial):
    """The job checks its metrics log at exit and finds the steps re-executed after the resume twice."""
    result = trial(plan="10", script_args=["--bug", "metrics-check"])
    assert (result.verdict, result.outcome) == ("fail", "crash_on_resume"), result.message
    assert "rank 0 exited with code 1 after probe.finish in attempt 1" in result.message
    assert "duplicated steps [9]" in result.log_tail  # step 10 was killed before its metrics row
    assert result.exit_code == 1


def test_a_resume_that_turns_int_keys_into_str_keys_fails(trial):
    result = trial(plan="10", script_args=["--bug", "str-keys"])
    assert (result.verdict, result.outcome) == ("fail", "divergence"), result.message
    d = result.first_divergence
    assert d.where == "final" and d.fields == ["extra:epoch_steps"]
    assert {t.name for t in d.tensors} >= {"extra/epoch_steps/#0", "extra/epoch_steps/0"}


def test_no_plan_means_a_seeded_random_kill_and_the_plan_is_said(trial):
    lines = []
    result = trial(plan=None, seed=3, progress=lines.append)
    assert result.verdict == "pass" and result.plan.isdigit(), result.message
    assert any(line == f"plan: {result.plan} (drawn from --seed 3)" for line in lines)
    assert len(result.attempts) == 2 and result.attempts[1].first_step > 1  # it resumed


UNUSED_NUMPY = """
import random
import torch
from harness import probe
random.seed(0)
torch.manual_seed(0)
w = torch.zeros(3)
for step in range(1, 7):
    w += torch.randn(3) * random.random()   # never draws from (or seeds) numpy's global RNG
    probe.step(step, loss=float(w.sum()), w=w)
probe.finish(w=w)
"""


def test_an_unseeded_but_unused_numpy_rng_passes_the_determinism_check(trial, tmp_path):
    script = tmp_path / "unused_numpy.py"
    script.write_text(UNUSED_NUMPY)
    result = trial(str(script), plan="3", nproc=1, use_cache=False)
    # No checkpoint: the resume is not tested, but the baseline was judged reproducible first.
    assert result.outcome == "not_resumed", result.message
    assert result.compared["unused_rng"] == ["rng:cuda", "rng:numpy"]
