"""Crash consistency: SIGKILL a real saving process at 24 points spread over its writes.

The points are the checkpointer's named fault points (begin, every file, every 16 MiB chunk,
fsync, manifest, commit, committed, rotate) over two saves, as recorded by an uninterrupted
reference run; a seeded schedule picks 24 of them. After each kill the loader must return a
complete checkpoint equal to one that was saved, at least as new as the last commit the trace
recorded, and the next save must work.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "ckpt_crash_child.py")
N_KILLS = 24


def _run_child(run_dir, trace_dir, fault=None, digests=None):
    env = {**os.environ, "HARNESS_TRACE_DIR": str(trace_dir), "RANK": "0", "WORLD_SIZE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("HARNESS_FAULT", None)
    if fault:
        env["HARNESS_FAULT"] = json.dumps(fault)
    args = [sys.executable, CHILD, str(run_dir)] + ([str(digests)] if digests else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def _events(trace_dir):
    with open(os.path.join(trace_dir, "rank0.jsonl")) as f:
        return [row for row in map(json.loads, f) if row["kind"] == "event"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: state digests at each save, and the schedule of kill points."""
    base = tmp_path_factory.mktemp("reference")
    out = _run_child(base / "run", base / "trace", digests=base / "digests.json")
    assert out.returncode == 0, out.stderr
    points, seen = [], {}
    for row in _events(base / "trace"):
        seen[row["name"]] = seen.get(row["name"], 0) + 1
        points.append((row["name"], seen[row["name"]]))
    assert len(points) >= N_KILLS and {"checkpoint.chunk", "checkpoint.commit", "checkpoint.rotate"} <= set(seen)
    schedule = sorted(random.Random(20261126).sample(points, N_KILLS), key=points.index)
    with open(base / "digests.json") as f:
        return {int(k): v for k, v in json.load(f).items()}, schedule


@pytest.mark.parametrize("kill", range(N_KILLS))
def test_kill_mid_save_leaves_old_or_new_checkpoint(reference, tmp_path, kill):
    sys.path.insert(0, HERE)
    from ckpt_crash_child import build, digest

    digests, schedule = reference
    name, occurrence = schedule[kill]
    fault = {"at": {"point": name, "occurrence": occurrence}, "rank": 0, "signal": "SIGKILL"}
    out = _run_child(tmp_path / "run", tmp_path / "trace", fault=fault)
    assert out.returncode == -signal.SIGKILL, f"not killed at {name}:{occurrence}: {out.stderr[-2000:]}"
    committed = [row["info"]["step"] for row in _events(tmp_path / "trace") if row["name"] == "checkpoint.committed"]

    ckpt, model, opt = build(tmp_path / "run")
    loaded = ckpt.load_state(missing_ok=True)
    if loaded is None:
        assert not committed, f"kill at {name}:{occurrence}: checkpoint(s) {committed} were committed but none loads"
    else:
        assert ckpt.step >= max(committed, default=0)
        assert digest(model, opt, ckpt.step) == digests[ckpt.step], f"kill at {name}:{occurrence}: loaded a torn state"
    assert ckpt.save_state()  # the next save cleans up what the kill left
    leftovers = [n for n in os.listdir(tmp_path / "run" / "checkpoints") if n.startswith(".")]
    assert leftovers == []
