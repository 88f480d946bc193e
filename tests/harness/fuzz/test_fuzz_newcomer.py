"""harness fuzz on a new user's own scripts, unmodified (no harness import): auto mode, their torch.save
calls as fault points, a real rank race found and shrunk, a correct two-phase commit that survives.

The scripts (tests/support/scripts/newcomer_*.py) are copied into the test's folder under the names the
user gave them, and fuzzed there with the real ``harness`` console script, as the user would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.faults import FaultPlan

from support import SCRIPTS

HARNESS = os.path.join(os.path.dirname(sys.executable), "harness")


def fuzz(tmp_path, shared_cache, script: str, *args: str, as_json: bool = True, timeout: int = 900):
    """``harness fuzz <script> ...`` in tmp_path: (exit code, the result as JSON, stderr). Without ``as_json`` the
    text report is printed (stdout, returned in place of stderr's progress when asked) and the JSON read from
    out/fuzz.json."""
    name = script.removeprefix("newcomer_").replace("rank_race", "train_rank_race").replace(
        "two_phase", "train_two_phase")
    shutil.copyfile(os.path.join(SCRIPTS, script), tmp_path / name)
    env = {**os.environ, "HARNESS_CACHE_DIR": shared_cache, "COLUMNS": "200"}
    proc = subprocess.run([HARNESS, "fuzz", name, "--db", "none", "--out", "out", *(["--json"] if as_json else []),
                           *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    res = json.loads(proc.stdout) if as_json else json.load(open(tmp_path / "out" / "fuzz.json"))
    return proc.returncode, res, proc.stderr + proc.stdout


def assert_left_nothing_beside_the_script(tmp_path):
    # auto mode starts the ranks in the run's own folder: the script's relative "ckpt/" never lands here
    assert not (tmp_path / "ckpt").exists(), sorted(os.listdir(tmp_path))


@pytest.mark.slow  # ~1-2 min: trials of 2 ranks, then shrinking
def test_the_rank_race_is_found_shrunk_and_written_as_a_bug_report(tmp_path, shared_cache):
    """Each rank saves rank{r}.pt in place, with no commit protocol: a kill while the ranks save leaves them on
    different steps, and the resumed ranks restore different checkpoints (ranks_resumed_apart)."""
    # --stall 8: a kill before rank 0's first save leaves rank 1 alone resumed, a hang the engine stops as a stall
    code, res, err = fuzz(tmp_path, shared_cache, "newcomer_rank_race.py", "--trials", "30", "--stall", "8",
                          "--save-repro", "race.toml")
    assert code == 1 and res["exit_code"] == 1 and res["stop"] == "failure", (res["stop"], res["message"], err[-3000:])
    assert res["auto"] is True
    space = res["space"]
    assert space["points"] == {"torch.save": 6, "checkpoint.committed": 6}  # its own saves, nothing of the harness's
    assert space["committed"] == [5, 10, 15, 20, 25, 30]
    (failure,) = res["failures"]
    assert failure["outcome"] == "ranks_resumed_apart" and failure["shrunk"], failure
    assert len(FaultPlan.parse(failure["plan"])) == 1  # shrunk to one fault (found as: failure["found_plan"])
    assert failure["replay"].startswith("harness run train_rank_race.py --nproc 2 --backend gloo --seed 0 --auto")
    report = (tmp_path / "race.toml").read_text()
    assert report == (tmp_path / failure["repro"]).read_text()  # OUT/repro.toml, OUT as given (relative here)
    assert 'outcome = "ranks_resumed_apart"' in report and "auto = true" in report
    assert f'plan = "{failure["plan"]}"' in report and 'path = "train_rank_race.py"' in report
    assert_left_nothing_beside_the_script(tmp_path)


@pytest.mark.slow  # ~35 s: 10 trials of 2 ranks
def test_the_two_phase_commit_survives_every_plan(tmp_path, shared_cache):
    """Per-step files per rank, a barrier, then rank 0 points ``latest`` at the step: every trial passes or
    tests no resume (a kill before the first complete checkpoint, tried once per class)."""
    code, res, out = fuzz(tmp_path, shared_cache, "newcomer_two_phase.py", "--trials", "10", "--stall", "8")
    assert code == 0 and res["exit_code"] == 0 and res["failures"] == [] and res["failed_trials"] == 0, out[-3000:]
    assert res["auto"] is True and res["passes"] >= 1
    assert set(res["rejected"]) <= {"not_resumed"} and res["stalled"] == []
    assert res["passes"] + sum(res["rejected"].values()) == res["trials"] == 10
    assert_left_nothing_beside_the_script(tmp_path)


def test_an_unmodified_script_is_fuzzed_in_auto_mode_and_the_progress_says_so(tmp_path, shared_cache):
    """No harness import: the baseline goes to auto mode at once (no probe-mode run writing into the user's
    folder), the progress says it plainly, and the script's own saves are the fault points."""
    code, res, out = fuzz(tmp_path, shared_cache, "newcomer_two_phase.py", "--trials", "2", "--stall", "8",
                          as_json=False)
    assert "no probe calls: testing in auto mode" in out and "mode            auto" in out, out[-3000:]
    assert "fault points: torch.save x6, checkpoint.committed x6" in out
    assert "6 complete checkpoint(s) (steps 5, 10, 15, 20, 25, 30)" in out
    assert res["auto"] is True and res["trials"] == 2 and res["failures"] == [] and code == res["exit_code"]
    assert "baseline run failed" not in out and "does the script call harness.probe" not in out
    assert_left_nothing_beside_the_script(tmp_path)


IMPORTS_THE_PROBE_ONLY = """
import torch
import torch.distributed as dist
from harness import probe  # imported, never called

dist.init_process_group("gloo")
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
dist.destroy_process_group()
"""


def test_a_script_that_imports_the_probe_but_never_calls_it_goes_to_auto_mode(pool, tmp_path):
    """The rule fuzz and certify share with harness run: a first baseline run in probe mode records nothing,
    so the script is recorded in auto mode, said plainly, and that probe-mode run's failure is not shown."""
    from harness.engine import TrialSpec
    from harness.engine.baseline import AUTO_MODE_LINE, baseline_with_mode
    from harness.engine.target import resolve_target

    script = tmp_path / "train.py"
    script.write_text(IMPORTS_THE_PROBE_ONLY)
    lines: list[str] = []
    spec = TrialSpec(str(script), nproc=1, backend="gloo", timeout_s=120)
    baseline, auto = baseline_with_mode(resolve_target(str(script)), spec, runs=2, launcher=pool, use_cache=False,
                                        runs_dir=str(tmp_path / "baseline"), progress=lines.append)
    assert auto is True and baseline.error is None and baseline.last_step == 3, (baseline.error, lines)
    assert AUTO_MODE_LINE in lines and not any(line.endswith(": failed") for line in lines), lines
    # --auto: no probe-mode run at all
    lines.clear()
    _, auto = baseline_with_mode(resolve_target(str(script)), spec.replace(auto=True), runs=1, launcher=pool,
                                 use_cache=False, runs_dir=str(tmp_path / "baseline2"), progress=lines.append)
    assert auto is True and lines[0] == "baseline run 1/1 ...", lines
