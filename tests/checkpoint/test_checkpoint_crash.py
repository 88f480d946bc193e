"""Crash consistency: SIGKILL a real saving process at 24 points spread over its writes.

The points are the checkpointer's named fault points (begin, every file, every 16 MiB chunk,
fsync, manifest, commit, committed, rotate) over two saves, as recorded by an uninterrupted
reference run; the schedule takes every phase point and a seeded sample of the write/chunk points,
24 in all. After each kill the loader must return a
complete checkpoint equal to one that was saved, at least as new as the last commit the trace
recorded, and the next save must work.

The children are forked from the project's warm fork server (`ForkServerLauncher`, one per module),
so each is a real, separate process that the probe SIGKILLs at its armed point (`HARNESS_FAULT`),
without paying a fresh interpreter's torch import every time.
"""

from __future__ import annotations

import json
import os
import random
import signal

import pytest

from harness.launch.spec import LaunchSpec, log_tail

from support import SUPPORT  # noqa: E402

CHILD = os.path.join(SUPPORT, "ckpt_crash_child.py")
N_KILLS = 24


@pytest.fixture(scope="module")
def launcher(pool):
    return pool


def _run_child(launcher, run_dir, trace_dir, fault=None, digests=None, env=None):
    """Run the child as rank 0 of a 1-rank launch; returns (its exit status, the tail of its log)."""
    env = {"CKPT_CRASH_MUTANT": "", **(env or {}), "HARNESS_TRACE_DIR": str(trace_dir),
           "HARNESS_FAULT": json.dumps(fault) if fault else ""}  # "": none armed
    spec = LaunchSpec(nproc=1, log_dir=str(trace_dir) + "-log", script=CHILD, env=env, timeout_s=300,
                      args=(str(run_dir), *([str(digests)] if digests else [])))
    result = launcher.launch(spec)
    assert not result.timed_out, f"the child timed out: {log_tail(spec.log_path(0))}"
    return result.exits[0].returncode, log_tail(spec.log_path(0))


def _events(trace_dir):
    with open(os.path.join(trace_dir, "rank0.jsonl")) as f:
        return [row for row in map(json.loads, f) if row["kind"] == "event"]


BULK = ("checkpoint.write", "checkpoint.chunk")  # many occurrences per save; every other point is a phase


@pytest.fixture(scope="module")
def reference(tmp_path_factory, launcher):
    """The uninterrupted run: state digests at each save, and the schedule of kill points.

    The schedule holds every phase point of both saves (begin, fsync, manifest, commit, committed,
    rotate: where ordering bugs live) and a seeded sample of the write and chunk points.
    """
    base = tmp_path_factory.mktemp("reference")
    code, log = _run_child(launcher, base / "run", base / "trace", digests=base / "digests.json")
    assert code == 0, log
    points, seen = [], {}
    for row in _events(base / "trace"):
        seen[row["name"]] = seen.get(row["name"], 0) + 1
        points.append((row["name"], seen[row["name"]]))
    assert len(points) >= N_KILLS and {"checkpoint.chunk", "checkpoint.commit", "checkpoint.rotate"} <= set(seen)
    phases = [p for p in points if p[0] not in BULK]
    assert len(phases) == 12, phases  # 6 per save
    bulk = random.Random(20261126).sample([p for p in points if p[0] in BULK], N_KILLS - len(phases))
    schedule = sorted(phases + bulk, key=points.index)
    with open(base / "digests.json") as f:
        return {int(k): v for k, v in json.load(f).items()}, schedule


def _kill_and_check(launcher, tmp_path, point, digests, env=None) -> list[str]:
    """SIGKILL the child at `point`, then load and save again; return what went wrong (nothing, if correct)."""
    from support.ckpt_crash_child import build, digest

    name, occurrence = point
    fault = {"at": {"point": name, "occurrence": occurrence}, "rank": 0, "signal": "SIGKILL"}
    code, log = _run_child(launcher, tmp_path / "run", tmp_path / "trace", fault=fault, env=env)
    assert code == -signal.SIGKILL, f"not killed at {name}:{occurrence} (exit status {code}): {log}"
    committed = [row["info"]["step"] for row in _events(tmp_path / "trace") if row["name"] == "checkpoint.committed"]

    problems = []
    ckpt, model, opt = build(tmp_path / "run")
    loaded = ckpt.load_state(missing_ok=True)
    if loaded is None:
        if committed:
            problems.append(f"kill at {name}:{occurrence}: checkpoint(s) {committed} were committed but none loads")
    else:
        if ckpt.step < max(committed, default=0):
            problems.append(f"kill at {name}:{occurrence}: loaded step {ckpt.step}, older than committed {committed}")
        if digest(model, opt, ckpt.step) != digests[ckpt.step]:
            problems.append(f"kill at {name}:{occurrence}: loaded a torn state")
    assert ckpt.save_state()  # the next save cleans up what the kill left
    leftovers = [n for n in os.listdir(tmp_path / "run" / "checkpoints") if n.startswith(".")]
    if leftovers:
        problems.append(f"kill at {name}:{occurrence}: the next save left {leftovers}")
    return problems


# Half of the kills run in the fast set, all of them with the slow set (CI runs both).
@pytest.mark.parametrize("kill", [pytest.param(i, marks=pytest.mark.slow) if i % 2 else i for i in range(N_KILLS)])
def test_kill_mid_save_leaves_old_or_new_checkpoint(reference, launcher, tmp_path, kill):
    digests, schedule = reference
    assert _kill_and_check(launcher, tmp_path, schedule[kill], digests) == []


def test_schedule_catches_a_checkpointer_that_rotates_before_committing(reference, launcher, tmp_path):
    """The test has teeth: a child whose checkpointer deletes the old checkpoint before committing the new
    one (CKPT_CRASH_MUTANT, see ckpt_crash_child.py) is caught at a scheduled kill point."""
    digests, schedule = reference
    point = ("checkpoint.commit", 2)
    assert point in schedule
    problems = _kill_and_check(launcher, tmp_path, point, digests, env={"CKPT_CRASH_MUTANT": "rotate-before-commit"})
    assert problems == ["kill at checkpoint.commit:2: checkpoint(s) [1] were committed but none loads"]
