"""Human and JSON rendering of RunResult."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

from harness.oracle import RankEnd, RunResult, Verdict, assess, compare_runs, load_trace
from harness.oracle.compare import Divergence, TensorDiff
from harness.report import render_json, render_text

from support import SCRIPTS
from support.traces import baseline, resumed

REPLAY = "harness run scenarios/mlp.py --nproc 2 --seed 0 --kill step=7"
TOP_KEYS = {"verdict", "outcome", "message", "first_divergence", "compared", "attempts", "replay", "out_dir",
            "timings", "warnings", "target", "nproc", "backend", "seed", "plan", "log_tail"}


def _result(tmp_path, mutate=None, **kw) -> RunResult:
    base = baseline(tmp_path / "baseline").write()
    b = resumed(tmp_path / "trial")
    if mutate:
        mutate(b)
    trial = load_trace(b.write())
    r = assess(compare_runs(base, trial), trial, n_faults=1, **kw)
    return RunResult(r, target="scenarios/mlp.py", nproc=2, backend="gloo", seed=0, plan="step=7",
                     replay=REPLAY, out_dir=str(tmp_path), timings={"baseline_s": 1.5, "trial_s": 2.25})


def _loss_bit(b):
    row = b.row(1, 7, 1)
    row["loss"]["hex"] = np.nextafter(np.float32(row["loss_value"]), np.float32(9)).tobytes().hex()
    row["rng"]["numpy"] = "other"


def _text(result) -> str:
    console = Console(record=True, width=120)
    render_text(result, console)
    return console.export_text()


def test_json_pass_round_trips(tmp_path):
    res = _result(tmp_path)
    line = render_json(res)
    assert "\n" not in line
    obj = json.loads(line)
    assert TOP_KEYS <= obj.keys()
    assert (obj["verdict"], obj["outcome"], obj["first_divergence"]) == ("pass", "bit_exact", None)
    assert obj["compared"]["rows"] == 24 and obj["compared"]["reexecuted_rows"] == 4
    assert [a["attempt"] for a in obj["attempts"]] == [0, 1] and obj["replay"] == REPLAY
    assert obj["timings"] == {"baseline_s": 1.5, "trial_s": 2.25} and obj["nproc"] == 2


def test_json_fail_names_first_divergence(tmp_path):
    obj = json.loads(render_json(_result(tmp_path, _loss_bit)))
    assert (obj["verdict"], obj["outcome"]) == ("fail", "divergence")
    d = obj["first_divergence"]
    assert (d["step"], d["rank"], d["attempt"], d["where"]) == (7, 1, 1, "trace")
    assert d["fields"] == ["rng:numpy", "loss"]
    (t,) = d["tensors"]
    assert (t["name"], t["dtype"], t["max_ulp"], t["n_diff"]) == ("loss", "float32", 1, 1)
    assert isinstance(t["max_abs_diff"], float) and t["shape"] == []


def test_json_is_strict_with_non_finite_values():
    d = Divergence(None, 0, 1, ["params"], [TensorDiff("w", "float32", [2], 1, float("inf"), 5, "")], "final",
                   "final state")
    res = RunResult(Verdict("fail", "divergence", "x", first_divergence=d), timings={"t": float("nan")})
    obj = json.loads(render_json(res))  # allow_nan=False inside: would raise on inf/nan
    assert obj["first_divergence"]["tensors"][0]["max_abs_diff"] == "inf"
    assert obj["first_divergence"]["step"] is None and obj["timings"]["t"] == "nan"
    assert TOP_KEYS <= obj.keys()


def test_text_pass(tmp_path):
    out = _text(_result(tmp_path))
    assert "PASS" in out and "bit_exact" in out and REPLAY in out
    assert "rng:numpy" in out and "re-executed" in out
    assert "SIGKILL after step 7" in out and "resumed from step 5" in out


def test_text_fail_shows_fields_tensor_table_and_replay(tmp_path):
    out = _text(_result(tmp_path, _loss_bit))
    assert "FAIL" in out and "divergence" in out
    assert "step 7, rank 1, attempt 1" in out and "rng:numpy, loss" in out
    assert "max ULP" in out and "float32" in out and REPLAY in out


def test_text_crash_shows_log_tail_and_brackets_survive(tmp_path):
    def crash(b):
        for r in (0, 1):
            b.rows[r] = [x for x in b.rows[r] if not (x["attempt"] == 1 and x["kind"] == "finish")]
        b.finals = {}

    tail = "Traceback (most recent call last):\n  [rank1] KeyError: 'step'"
    res = _result(tmp_path, crash, last_exits=[RankEnd(0, -9, torn_down=True), RankEnd(1, 1, log_tail=tail)])
    assert res.outcome == "crash_on_resume" and res.exit_code == 1
    out = _text(res)
    assert "crash_on_resume" in out and "[rank1] KeyError: 'step'" in out and REPLAY in out
    assert json.loads(render_json(res))["log_tail"] == tail


@pytest.mark.parametrize("verdict", ["pass", "fail", "error"])
def test_text_minimal_result(verdict):
    outcome = "bit_exact" if verdict == "pass" else "error"
    out = _text(RunResult(Verdict(verdict, outcome, "something [bold]odd[/bold]"), replay="harness run x"))
    assert verdict.upper() in out and "[bold]odd[/bold]" in out and "harness run x" in out


# -- piped output (CI logs): no padding --------------------------------------------------------------------------

HARNESS = os.path.join(os.path.dirname(sys.executable), "harness")


def _trailing(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln != ln.rstrip()]


def test_piped_console_pads_no_line(tmp_path):
    from harness.report import make_console

    stream = io.StringIO()  # not a terminal, as `harness run ... | cat`
    render_text(_result(tmp_path, _loss_bit), make_console(stream))
    out = stream.getvalue()
    assert "max ULP" in out and "FAIL" in out and REPLAY in out  # the table and the verdict are all there
    assert not _trailing(out), _trailing(out)[:3]
    stream = io.StringIO()
    console = make_console(stream)
    console.print("a   ", end="")  # spaces held back until the next write ...
    console.print("  b")  # ... kept inside a line
    console.print("c    ")
    assert stream.getvalue() == "a     b\nc\n"


@pytest.mark.slow  # two multi-process runs (~10 s each on a quiet machine)
def test_harness_run_piped_has_no_trailing_whitespace(tmp_path):
    done = subprocess.run([HARNESS, "run", "default", "--kill", "12", "--out", str(tmp_path / "run")], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " PASS  bit_exact" in done.stdout and "replay: harness run default" in done.stdout
    assert not _trailing(done.stdout) and not _trailing(done.stderr), _trailing(done.stdout + done.stderr)[:3]
    assert max(map(len, done.stdout.splitlines())) < 290


@pytest.mark.slow  # a plain run, then the baselines and the trial in auto mode (~30 s)
def test_fallback_to_auto_mode_is_said_plainly(tmp_path):
    script = tmp_path / "train.py"
    with open(os.path.join(SCRIPTS, "plain_ddp.py")) as f:  # imports the probe but never calls it
        script.write_text("from harness import probe  # imported, never called\n" + f.read())
    done = subprocess.run([HARNESS, "run", str(script), "--kill", "6", "--out", str(tmp_path / "run")], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "harness: no probe calls: testing in auto mode" in done.stderr
    assert ": failed" not in done.stderr and "error" not in done.stderr.lower(), done.stderr
    assert not _trailing(done.stdout) and not _trailing(done.stderr)
