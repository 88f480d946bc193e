"""One run of a target (baseline or trial): its folder, the environment of each attempt, launching."""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness.engine.spec import TrialSpec
from harness.engine.target import Target
from harness.faults import Fault
from harness.launch import LaunchResult, LaunchSpec
from harness.run_env import RankEnv


@dataclass(frozen=True)
class RunFolder:
    """``trace/`` (HARNESS_TRACE_DIR), ``run/`` (HARNESS_RUN_DIR, checkpoints), ``attempt{a}/rank{r}.log``."""

    root: str

    @property
    def trace_dir(self) -> str:
        return os.path.join(self.root, "trace")

    @property
    def run_dir(self) -> str:
        return os.path.join(self.root, "run")

    def log_dir(self, attempt: int) -> str:
        return os.path.join(self.root, f"attempt{attempt}")


def attempt_spec(target: Target, folder: RunFolder, spec: TrialSpec, *, role: str, attempt: int,
                 fault: Fault | None, nproc: int | None = None, watch=None, auto: bool = False,
                 index: str | None = None) -> LaunchSpec:
    """The launch of one attempt of ``spec`` (its backend, strategy, script arguments, timeout): the harness
    variables of docs/design.md, section 1. nproc: the attempt's world size (default ``spec.nproc``; an
    elastic trial's later attempts run on ``spec.resume_nproc``).

    auto: record with auto mode (HARNESS_AUTO=1; harness.probe.auto), the ranks starting in the run's
    own folder (``run/``: the same for every attempt of a run, fresh for every run). index: the
    baseline's per-step digests for auto mode's resume inference (HARNESS_BASELINE_INDEX). The strategy
    reaches the ranks here, in the attempt's environment (HARNESS_STRATEGY), never through this process's.
    """
    import json

    for path in (folder.trace_dir, folder.run_dir):
        os.makedirs(path, exist_ok=True)
    env = RankEnv(trace_dir=folder.trace_dir, run_dir=folder.run_dir, attempt=attempt,
                  fault_json=json.dumps(fault.to_json()) if fault is not None else "", backend=spec.backend, role=role,
                  strategy=spec.strategy, auto=bool(auto), baseline_index=index).to_env()
    return LaunchSpec(nproc=spec.nproc if nproc is None else nproc, log_dir=folder.log_dir(attempt),
                      script=target.script, module=target.module, args=spec.script_args, env=env,
                      cwd=folder.run_dir if auto else os.getcwd(), timeout_s=spec.timeout_s, attempt=attempt,
                      watch=watch)


def exits_summary(result: LaunchResult) -> list[dict]:
    return [{"rank": e.rank, "returncode": e.returncode, "signal": e.signal, "torn_down": e.torn_down}
            for e in result.exits]


def failure_message(result: LaunchResult, timeout_s: float) -> str | None:
    """Why a launch failed, in one line, or None if every rank exited 0."""
    if result.stopped:
        return f"stopped: {result.stopped}"
    if result.timed_out:
        return f"timed out after {timeout_s:g} s (--timeout) and was killed"
    failed = result.first_failure
    if failed is None:
        return None
    return f"{failed.describe()}; its log: {failed.log_path}"
