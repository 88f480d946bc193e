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
                 attempt: int, fault: Fault | None, timeout_s: float, watch=None, auto: bool = False,
                 index: str | None = None, strategy: str | None = None) -> LaunchSpec:
    """The launch of one attempt: the harness variables of docs/design.md, section 1.

    auto: record with auto mode (HARNESS_AUTO=1; harness.probe.auto), the ranks starting in the run's
    own folder (``run/``: the same for every attempt of a run, fresh for every run). index: the
    baseline's per-step digests for auto mode's resume inference (HARNESS_BASELINE_INDEX).
    """
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
    if strategy is not None:
        env["HARNESS_STRATEGY"] = strategy  # read by the built-in scenarios (ddp, fsdp, deepspeed-zeroN)
    if auto:
        env["HARNESS_AUTO"] = "1"
        if index is not None:
            env["HARNESS_BASELINE_INDEX"] = index
    return LaunchSpec(nproc=nproc, log_dir=folder.log_dir(attempt), script=target.script, module=target.module,
                      args=tuple(script_args), env=env, cwd=folder.run_dir if auto else os.getcwd(),
                      timeout_s=timeout_s, attempt=attempt, watch=watch)


def write_auto_index(base_trace, path: str) -> str:
    """Auto mode's baseline index at ``path``: per rank, per step (0 = the initial state), the parameter
    digests (buffers left out) and the optimizer-state digests, which a resumed rank matches against
    what it restored (harness.probe.auto). ``base_trace``: the baseline's Trace."""
    import json

    index: dict = {}
    for r in base_trace.ranks:
        steps = index.setdefault(str(r), {})
        try:
            with open(os.path.join(base_trace.path, "auto", f"rank{r}.json")) as f:
                initial = json.load(f)["initial"]
            steps["0"] = {"params": initial["params"], "state": initial["state"]}
        except (OSError, ValueError, KeyError):
            pass
        for row in base_trace.steps(r):
            params = {n: d for n, d in (row.params_tensors or {}).items() if not n.endswith(" (buffer)")}
            steps.setdefault(str(row.step), {"params": params, "state": row.optimizer_state or {}})
    with open(path + ".tmp", "w") as f:
        json.dump(index, f)
    os.replace(path + ".tmp", path)
    return path


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


#: What auto mode does not record that the probe would (harness.probe.auto.NOT_RECORDED; named here
#: because engine/ does not import probe/).
AUTO_NOT_RECORDED = (
    "extra values (probe.step(**extra): an EMA, counters, a scheduler's own state)",
    "parameters no optimizer steps (frozen ones), per step; they are in the final state",
    "final state outside the model, the optimizers and torch.optim.swa_utils.AveragedModel instances "
    "(schedulers, custom objects; a module no optimizer steps, such as a hand-made EMA, is named by the event "
    "auto.unseen)",
)


def auto_not_recorded(base_trace) -> list[str]:
    """``compared["not_recorded"]`` of an auto-mode trial: the fixed list, plus the loss or the batch when
    the baseline never saw one (no backward call, no torch DataLoader)."""
    rows = [row for r in base_trace.ranks for row in base_trace.steps(r)]
    out = []
    if rows and all(row.loss is None for row in rows):
        out.append("loss (no backward call seen: torch.autograd.grad, or a loss computed elsewhere)")
    if rows and all(row.batch is None for row in rows):
        out.append("batch (no torch.utils.data.DataLoader batch was followed by a backward call)")
    return out + list(AUTO_NOT_RECORDED)
