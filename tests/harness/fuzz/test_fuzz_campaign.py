"""harness fuzz with real processes: a resume bug is found and shrunk, a correct job passes, bad input, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from harness.cli import main, parse_duration
from harness.engine import list_scenarios
from harness.fuzz import Campaign, CampaignConfig, StopReason

from support import SCRIPTS
from support.processes import sigint_delivered

MLP = os.path.join(SCRIPTS, "ddp_mlp.py")
needs_scenarios = pytest.mark.skipif("default" not in list_scenarios(),
                                     reason="the built-in scenarios are not installed")


def fuzz_json(capsys, *args) -> tuple[int, dict]:
    code = main(["fuzz", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.mark.slow  # a whole search and shrink; the fast suite fuzzes an unmodified script instead
@needs_scenarios
def test_a_resume_bug_is_found_shrunk_to_one_fault_and_replayed_from_the_database(capsys, pool, tmp_path):
    db, out = str(tmp_path / "db"), str(tmp_path / "out")
    code, res = fuzz_json(capsys, "buggy/scheduler_not_saved", "--trials", "30", "--db", db, "--out", out)
    assert code == 1 and res["exit_code"] == 1 and res["stop"] == "failure", res
    (failure,) = res["failures"]
    # the first step after the first checkpoint (5): earlier kills have nothing to resume from (rejected)
    assert failure["plan"] == "6" and failure["shrunk"] and failure["outcome"] == "divergence"
    assert failure["replay"] == "harness run buggy/scheduler_not_saved --nproc 2 --backend gloo --seed 0 --kill 6"
    assert failure["first_divergence"]["step"] == 6 and "extra:lr" in failure["first_divergence"]["fields"]
    assert res["rejected"].get("not_resumed", 0) >= 1 and res["trials"] <= 30 + res["shrink_trials"]
    # the bug report, and only the minimal failure's trial folder, are kept
    assert failure["repro"].endswith(".toml") and 'plan = "6"' in open(failure["repro"]).read()
    assert os.listdir(os.path.join(out, "trials")) == [os.path.basename(failure["out_dir"])]
    assert json.load(open(os.path.join(out, "fuzz.json")))["failures"][0]["plan"] == "6"
    assert res["coverage"]["signals"] and res["trials_per_minute"] > 0

    # Hypothesis's example database: the next campaign replays the stored minimal failure first
    config = CampaignConfig("buggy/scheduler_not_saved", trials=30, db=db, out_dir=str(tmp_path / "again"))
    again = Campaign(config, launcher=pool).run()
    assert again.exit_code == 1 and again.trials == 1 and again.failures[0].found_plan == "6"


@needs_scenarios
@pytest.mark.slow
def test_a_correct_scenario_passes_a_short_campaign(pool, tmp_path):
    seen = []
    config = CampaignConfig("default", trials=5, seed=0, db=None, out_dir=str(tmp_path / "out"))
    result = Campaign(config, launcher=pool, on_trial=seen.append).run()
    assert result.exit_code == 0 and result.stop is StopReason.TRIALS, (result.message, result.rejected)
    assert result.trials == 5 and result.passes >= 1 and not result.failures and result.failed_trials == 0
    assert result.passes + sum(n for _, n in result.rejected) == 5
    assert [p.trials for p in seen] == [1, 2, 3, 4, 5] and all(p.budget_trials == 5 for p in seen)
    assert result.space.last_step == 24 and result.space.committed == (5, 10, 15, 20)
    assert sum(n for _, n in result.coverage.plan_sizes) == 5
    assert not os.path.exists(tmp_path / "out" / "trials")  # passed and rejected trials leave no folder
    assert json.load(open(tmp_path / "out" / "fuzz.json"))["passes"] == result.passes


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "--trials must be >= 1"),
    (["--trials", "-3"], "--trials must be >= 1"),
    (["--time", "-1"], "--time '-1'"),
    (["--time", "0s"], "must be more than 0"),
    (["--time", "5 minutes"], "expected a duration"),
    (["--trials", "5", "--time", "5m"], "not allowed with argument"),
    (["no/such/target.py"], "no/such/target.py"),
])
def test_bad_input_is_a_usage_error(capsys, args, message):
    assert main(["fuzz", *args]) == 2
    assert message in capsys.readouterr().err


def test_max_faults_below_one_is_a_usage_error(capsys):
    code, res = fuzz_json(capsys, "--max-faults", "0")
    assert code == 2 and "--max-faults" in res["message"]


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("5m", 300), ("1.5h", 5400), ("1h30m", 5400),
                                           ("2m30s", 150)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_target_whose_baseline_fails_fuzzes_nothing(pool, tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("import sys\nprint('cannot start: no data', file=sys.stderr)\nsys.exit(4)\n")
    config = CampaignConfig(str(script), db=None, out_dir=str(tmp_path / "out"))
    result = Campaign(config, launcher=pool).run()
    assert result.exit_code == 2 and result.stop is StopReason.BASELINE_FAILED and result.trials == 0
    assert "baseline run failed" in result.message and "cannot start: no data" in result.log_tail


def _pids_with(marker: str) -> list[int]:
    """Live processes whose environment has FUZZ_MARKER=marker (the harness, its zygote and the ranks)."""
    from harness.launch.reap import processes_with_env

    return processes_with_env("FUZZ_MARKER", marker)


@pytest.mark.slow
def test_ctrl_c_in_the_first_trial_stops_cleanly_and_reports_coverage(tmp_path):
    from harness.launch.reap import alive

    marker = uuid.uuid4().hex
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "FUZZ_MARKER": marker}
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "fuzz", MLP, "--time", "60s", "--json",
                             "--db", str(tmp_path / "db"), "--out", str(out),
                             "--", "--steps", "8", "--save-every", "2", "--sleep", "0.2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_delivered)
    try:
        deadline = time.monotonic() + 90
        first = out / "trials" / "t0001" / "trace" / "rank1.jsonl"
        while not first.exists():  # the first trial's ranks are running (the baselines are done)
            assert time.monotonic() < deadline and proc.poll() is None, "the first trial never started"
            time.sleep(0.02)
        started = _pids_with(marker)
        proc.send_signal(signal.SIGINT)
        stdout, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    res = json.loads(stdout)
    assert res["stop"] == "interrupted" and res["trials"] == 0 and res["failures"] == []
    assert "SIGKILL" in res["coverage"]["never_tried"] and res["space"]["last_step"] == 8
    assert len(started) >= 3  # the harness, its zygote and at least one rank were running
    deadline = time.monotonic() + 5
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in started) and _pids_with(marker) == []
    assert not (out / "trials").exists()
