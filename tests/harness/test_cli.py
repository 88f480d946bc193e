import argparse
import json
import textwrap
import os
import subprocess
import sys

import pytest

from harness import __version__
from harness.cli import main
from harness.engine import list_scenarios

from support import REPO, SCRIPTS  # noqa: E402
MLP = os.path.join(SCRIPTS, "ddp_mlp.py")
BUGGY = os.path.join(SCRIPTS, "buggy_reseed.py")



def harness(*args, cache, cwd=None, timeout=300, columns="200"):
    env = {**os.environ, "HARNESS_CACHE_DIR": cache}
    env.pop("COLUMNS", None)
    if columns:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def test_the_console_script_keeps_what_a_normal_exit_does(tmp_path):
    """`harness` ends without the interpreter's teardown, but after the other threads, the atexit handlers and
    the flush: what they print is there, in order, with main's exit code (the installed script, its own path)."""
    script = os.path.join(os.path.dirname(sys.executable), "harness")  # pip puts it beside the interpreter
    assert "harness.cli import console" in open(script).read()
    code = textwrap.dedent("""
        import atexit, sys, threading, time
        atexit.register(lambda: print("atexit handler ran", flush=False))
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread ran", flush=False))).start()
        sys.argv = ["harness", "run", "--bogus"]
        sys.stdout.write("buffered, not flushed")
        from harness.cli import console
        console()
        print("never reached")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr
    assert proc.stdout == "buffered, not flushedthread ran\natexit handler ran\n", proc.stdout


def test_a_reader_that_goes_away_is_no_error_but_another_broken_pipe_is(capsys):
    """`harness scenarios | head`: exit 141 (as SIGPIPE would end it), no traceback; a BrokenPipeError
    while stdout is fine (a pipe to a launcher's process) stays an internal error, exit 2."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "scenarios"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command prints anything (its start-up takes longer)
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == ""

    from harness.cli.common import guarded

    @guarded()
    def broken(args, script_args):
        raise BrokenPipeError(32, "Broken pipe")

    assert broken(argparse.Namespace(), []) == 2
    assert "internal error: BrokenPipeError" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"resume-harness {__version__}"


@pytest.mark.parametrize("argv, message", [
    (["run", "no_such_scenario"], "unknown target 'no_such_scenario'"),
    (["run", MLP, "--kill", "12@x"], "rank 'x'"),
    (["run", MLP, "--nproc", "two"], "invalid int value"),
    (["run", MLP, "--backend", "mpi"], "invalid choice"),
    (["run", MLP, "extra"], "put script arguments after --"),
    (["frobnicate"], "invalid choice"),
    (["convert", "no/such/folder", "b"], "not an HF Accelerate checkpoint"),
    (["run", MLP, "--launcher", "torchrun", "--nnodes", "0"], "nnodes must be an integer >= 1"),
    (["run", MLP, "--launcher", "torchrun", "--nnodes", "2"], "rendezvous endpoint"),
    (["run", MLP, "--launcher", "torchrun", "--nproc", "3", "--nnodes", "2", "--rdzv-endpoint", "h:1"],
     "not a multiple of --nnodes"),
    (["run", MLP, "--launch-prefix", "srun '"], "--launch-prefix"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_usage_error_in_json_mode_is_json(capsys):
    assert main(["run", "no_such_scenario", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "error" and out["first_divergence"] is None and "no_such_scenario" in out["message"]


def test_no_command_prints_usage(capsys):
    assert main([]) == 2
    assert "usage: harness" in capsys.readouterr().err


def test_help_documents_the_fault_grammar(capsys):
    from harness.faults import KILL_GRAMMAR, plan

    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "FAULT   := AT" in out and "checkpoint.write:2@all:SIGTERM" in out
    assert all(line in out for line in KILL_GRAMMAR.splitlines())
    assert all(line in plan.__doc__ for line in KILL_GRAMMAR.splitlines())


def test_the_docs_hold_the_fault_grammar_and_every_outcome():
    from harness.faults import KILL_GRAMMAR
    from harness.oracle import OUTCOMES

    run_page = open(os.path.join(REPO, "docs", "cli", "run.md")).read()
    assert KILL_GRAMMAR in run_page, "docs/cli/run.md lost the --kill grammar of harness.faults.KILL_GRAMMAR"
    outcomes_page = open(os.path.join(REPO, "docs", "outcomes.md")).read()
    missing = [o for o in OUTCOMES if f"`{o}`" not in outcomes_page]
    assert not missing, f"docs/outcomes.md does not document outcome(s) {missing}"


def test_scenarios_lists_builtins(capsys):
    assert main(["scenarios"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_scenarios()
    assert any(line.startswith("default ") and "DDP" in line for line in lines)  # with its description


def test_json_pass_and_no_lock_files_left(tmp_path):
    cache = str(tmp_path / "cache")  # its own cache: the baseline is made here, under the lock
    proc = harness("run", MLP, "--kill", "6", "--json", "--out", str(tmp_path / "o"), "--", "--steps", "8",
                   cache=cache)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # stdout is exactly one JSON object
    assert result["verdict"] == "pass" and result["first_divergence"] is None and result["outcome"] == "bit_exact"
    assert result["plan"] == "6" and proc.stderr == ""
    assert [e for e in os.listdir(cache) if e.endswith(".lock")] == []


def test_json_divergence(shared_cache, tmp_path):
    proc = harness("run", BUGGY, "--kill", "10@1", "--json", cache=shared_cache, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["verdict"] == "fail"
    d = result["first_divergence"]
    assert d["step"] == 9 and d["rank"] in (0, 1) and "rng:torch" in d["fields"]
    assert os.listdir(tmp_path / "harness-out")[0].startswith("buggy_reseed-")


def test_human_output_and_script_args(shared_cache, tmp_path):
    """Not a terminal and no COLUMNS (a CI log): the verdict and the replay command stay one line each."""
    proc = harness("run", MLP, "--kill", "5", "--kill", "9@1", "--out", str(tmp_path / ("o" * 60)), "--",
                   "--steps", "12", "--save-every", "3", cache=shared_cache, columns=None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout and "bit_exact" in proc.stdout
    lines = proc.stdout.splitlines()
    verdict = [ln for ln in lines if "PASS" in ln]
    replay = [ln for ln in lines if ln.startswith("replay: ")]
    assert len(verdict) == 1 and "match the baseline" in verdict[0]
    assert replay == [f"replay: harness run {MLP} --nproc 2 --backend gloo --seed 0 --kill 5 --kill 9@1 -- "
                      "--steps 12 --save-every 3"]
    assert "attempt 0 (armed 5): fault fired on rank 0 at step 5" in proc.stderr
    result = json.loads((tmp_path / ("o" * 60) / "result.json").read_text())
    assert result["compared"]["steps"] == 12 and len(result["attempts"]) == 3


@pytest.mark.skipif("default" not in list_scenarios(), reason="the default scenario is not installed")
def test_no_target_runs_the_default_scenario_with_a_random_kill(shared_cache, tmp_path):
    proc = harness("run", "--json", cache=shared_cache, cwd=tmp_path)
    result = json.loads(proc.stdout)
    assert result["target"] == "default" and result["seed"] == 0
    assert result["plan"].isdigit()
    assert result["verdict"] == "pass" and proc.returncode == 0, result["message"]


def test_ctrl_c_stops_everything(shared_cache, tmp_path):
    import signal
    import time
    import uuid

    from harness.launch.reap import alive, processes_with_env
    from support.processes import sigint_delivered

    marker = uuid.uuid4().hex
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "CTRL_C_MARKER": marker}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", MLP, "--kill", "10", "--baseline-runs", "1",
                             "--out", str(tmp_path / "o"), "--", "--sleep", "0.5"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_delivered)
    deadline = time.monotonic() + 120
    while len(processes_with_env("CTRL_C_MARKER", marker)) < 5:  # harness, zygote, store, 2 ranks
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    started = processes_with_env("CTRL_C_MARKER", marker)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 5
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in started) and processes_with_env("CTRL_C_MARKER", marker) == []
    assert [e for e in os.listdir(tmp_path / "cache") if e.startswith(".tmp")] == []


def test_a_job_that_never_resumes_is_not_a_pass(shared_cache, tmp_path):
    # GitHub issue #17: it records a point and its final state, no step row; it retrains from scratch after
    # the kill. It was "PASS bit_exact: 0 step rows"; a fresh interpreter, as users run it.
    r = harness("run", os.path.join(SCRIPTS, "no_checkpoint.py"), "--kill", "trained", "--baseline-runs", "1",
                "--out", str(tmp_path / "out"), "--json", cache=shared_cache, cwd=str(tmp_path))
    out = json.loads(r.stdout)
    assert (r.returncode, out["verdict"], out["outcome"]) == (2, "error", "not_resumed"), r.stdout + r.stderr
    assert "no resume tested" in out["message"]


# -- the CLI package's shared pieces: one parser, one envelope, one guard ------------------------------------


@pytest.mark.parametrize("argv, shape", [
    (["run", "no_such_scenario", "--json"], {"verdict", "outcome", "message", "first_divergence"}),
    (["fuzz", "--trials", "0", "--json"], {"verdict", "outcome", "message", "first_divergence"}),
    (["repro", "no/such/report.toml", "--json"], {"status", "exit_code", "message"}),
    (["inspect", "no/such/ckpt", "--json"], {"error"}),
    (["diff", "no/such/a", "no/such/b", "--json"], {"error"}),
])
def test_each_command_family_keeps_its_json_error_shape(capsys, argv, shape):
    assert main(argv) == 2
    out = capsys.readouterr().out
    assert set(json.loads(out)) == shape and len(out.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, line", [
    (["certify", "--no-such-flag"], "harness certify: error: unrecognized arguments: --no-such-flag "
                                    "(see harness certify --help)"),
    (["certify", "merge", "a", "--no-such-flag", "--out", "m"],
     "harness certify: error: unrecognized arguments: --no-such-flag (see harness certify merge --help)"),
    (["certify", "merge"], "harness certify: error: the following arguments are required: OUT, --out "
                           "(see harness certify merge --help)"),
    (["run", "--no-such-flag"], "harness: error: unrecognized arguments: --no-such-flag (see harness --help)"),
    (["inspect"], "harness: error: the following arguments are required: CKPT (see harness inspect --help)"),
])
def test_subcommand_usage_errors_name_their_command(capsys, argv, line):
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == line


def test_certify_merge_help_is_its_own(capsys):
    assert main(["certify", "merge", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: harness certify merge ")


@pytest.mark.parametrize("raised, code, text", [
    (RuntimeError("boom"), 2, "harness: error: internal error: RuntimeError: boom"),
    (KeyboardInterrupt(), 130, "harness: interrupted; all processes were stopped"),
    (OSError("disk full"), 2, "harness: error: disk full"),
])
def test_the_guard_maps_every_exception_to_an_exit_code(capsys, monkeypatch, raised, code, text):
    from harness.checkpoint import from_accelerate

    def convert(*args, **kwargs):
        raise raised

    monkeypatch.setattr(from_accelerate, "convert", convert)
    assert main(["convert", "src", "dst"]) == code
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == text
    assert ("Traceback" in err) == isinstance(raised, RuntimeError)  # a bug of the harness shows where it is


def test_error_flag_hook_names_the_flag_only_when_asked():
    from harness.cli.common import error_message, flag_of

    class UsageError(ValueError):  # as harness.engine's, which names the TrialSpec field at fault
        def __init__(self, message, field):
            super().__init__(message)
            self.field = field

    e = UsageError("bad fault '12@x': rank 'x' must be an integer >= 0 or 'all'", field="plan")
    assert flag_of(e) == "--kill" and error_message(e) == str(e)
    assert error_message(e, name_flag=True) == "--kill: " + str(e)
    named = UsageError("--nproc must be an integer >= 1, got 0", field="nproc")
    assert error_message(named, name_flag=True) == str(named)
    assert flag_of(ValueError("x")) is None


def test_certify_records_its_command_line_as_given(capsys, monkeypatch, tmp_path):
    from harness.certify import campaign
    from harness.certify.errors import CertifyError

    def run_campaign(spec, out, *, command, **kwargs):
        raise CertifyError(f"would run {command}")

    monkeypatch.setattr(campaign, "run_campaign", run_campaign)
    out = str(tmp_path / "o")
    assert main(["certify", MLP, "--world-sizes", "1", "--out", out, "--", "--steps", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"harness certify: error: would run harness certify {MLP} --world-sizes 1 --out {out} -- --steps 8"


def test_fuzz_and_certify_take_the_trial_specs_scratch_flag():
    """--scratch is the TrialSpec's flag, spelled and checked the same in run, fuzz and certify."""
    from harness.cli import build_parser

    parser = build_parser()
    for argv in (["run", "--scratch", "disk"], ["fuzz", "--scratch", "disk"], ["certify", "--scratch", "disk"]):
        assert parser.parse_known_args(argv)[0].scratch == "disk", argv
    assert parser.parse_known_args(["fuzz"])[0].scratch == "tmpfs"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "fuzz", "--scratch", "ram"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "--scratch" in proc.stderr and "ram" in proc.stderr
