"""One run of a target (baseline or trial): its folder, the environment of each attempt, launching."""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness.engine.target import Target
from harness.faults import Fault
from harness.launch import LaunchResult, LaunchSpec


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


def attempt_spec(target: Target, folder: RunFolder, *, nproc: int, backend: str, script_args, role: str,
                 attempt: int, fault: Fault | None, timeout_s: float, watch=None) -> LaunchSpec:
    """The launch of one attempt: the harness variables of docs/design.md, section 1."""
    import json

    for path in (folder.trace_dir, folder.run_dir):
        os.makedirs(path, exist_ok=True)
    env = {
        "HARNESS_TRACE_DIR": folder.trace_dir,
        "HARNESS_RUN_DIR": folder.run_dir,
        "HARNESS_ATTEMPT": str(attempt),
        "HARNESS_FAULT": json.dumps(fault.to_json()) if fault is not None else "",
        "HARNESS_BACKEND": backend,
        "HARNESS_ROLE": role,
    }
    extra = {"watch": watch} if watch is not None else {}
    return LaunchSpec(nproc=nproc, log_dir=folder.log_dir(attempt), script=target.script, module=target.module,
                      args=tuple(script_args), env=env, cwd=os.getcwd(), timeout_s=timeout_s, attempt=attempt,
                      **extra)


def exits_summary(result: LaunchResult) -> list[dict]:
    return [{"rank": e.rank, "returncode": e.returncode, "signal": e.signal, "torn_down": e.torn_down}
            for e in result.exits]


def failure_message(result: LaunchResult, timeout_s: float) -> str | None:
    """Why a launch failed, in one line, or None if every rank exited 0."""
    if getattr(result, "stopped", None):
        return f"stopped: {result.stopped}"
    if result.timed_out:
        return f"timed out after {timeout_s:g} s (--timeout) and was killed"
    failed = result.first_failure
    if failed is None:
        return None
    return f"{failed.describe()}; its log: {failed.log_path}"
