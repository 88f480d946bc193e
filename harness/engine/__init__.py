"""The engine: baseline (cached), then a trial under a fault plan, then the oracle's verdict.

    from harness.engine import run
    result = run("tests/scripts/ddp_mlp.py", nproc=2, plan="12", seed=0)   # -> harness.oracle.RunResult

A trial of a plan with k faults has k+1 attempts: attempt a arms fault a (HARNESS_FAULT), and after
an attempt whose fault fired the job is restarted so that it resumes from its own checkpoints. The
trial stops early when an attempt finishes, crashes without its fault, or times out. Every step row
of the trial and its final state are then compared with the baseline (``harness.oracle``).

Files: ``OUT/trace`` (the trial's trace), ``OUT/run`` (its checkpoints), ``OUT/attempt{a}/rank{r}.log``,
``OUT/result.json``. Default OUT: ``harness-out/<target>-<YYYYmmdd-HHMMSS>-<id>``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
import uuid

from harness.engine.baseline import cache_root, get_baseline
from harness.engine.jobs import RunFolder, attempt_spec, exits_summary, failure_message
from harness.engine.target import Target, UsageError, list_scenarios, resolve_target
from harness.faults import FaultPlan
from harness.launch import LaunchError, Launcher
from harness.launch.spec import log_tail

BACKENDS = ("auto", "gloo", "nccl")

__all__ = ["run", "resolve_target", "list_scenarios", "resolve_backend", "replay_command", "UsageError",
           "Target", "cache_root"]


def cuda_available() -> bool:
    """Whether ranks will see a CUDA device, without importing torch in this process if it is not yet."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.cuda.is_available()
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        return bool(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return False


def resolve_backend(backend: str) -> str:
    """``auto``: nccl when a CUDA device is visible, else gloo."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "nccl" if cuda_available() else "gloo"
    return backend


def replay_command(target: Target, *, nproc: int, backend: str, seed: int, plan: FaultPlan, script_args=()) -> str:
    """The ``harness run`` command line that repeats this trial with its concrete fault plan."""
    parts = ["harness", "run", target.name, "--nproc", str(nproc), "--backend", backend, "--seed", str(seed)]
    for fault in plan:
        parts += ["--kill", fault.format()]
    if script_args:
        parts += ["--", *script_args]
    return shlex.join(parts)


def default_out_dir(target: Target) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("harness-out", f"{target.slug}-{stamp}-{uuid.uuid4().hex[:6]}")


def run(target: str = "default", nproc: int = 2, plan=None, seed: int = 0, backend: str = "auto",
        out_dir: str | None = None, script_args=(), baseline_runs: int | None = None, use_cache: bool = True,
        launcher: Launcher | None = None, timeout_s: float = 300.0, progress=None):
    """Run one trial of ``target`` under ``plan`` and judge it against the baseline.

    target: a built-in scenario name or a path to a script. plan: a FaultPlan, a short string
    ("12", "checkpoint.write:2@all:SIGTERM", "random"), a list of them, or None (no fault).
    baseline_runs: uninterrupted runs to make (and compare) for the baseline; default 2 for scripts,
    1 for built-in scenarios. launcher: reuse one (e.g. a ForkServerLauncher shared by many trials);
    by default a ForkServerLauncher is made and closed. progress: a callable taking one line of status.

    Raises UsageError for bad arguments; everything that happens once processes run is reported in
    the returned ``harness.oracle.RunResult`` (verdict pass / fail / error).
    """
    t_start = time.monotonic()
    say = progress or (lambda line: None)
    tgt = resolve_target(target)
    try:
        plan = FaultPlan.coerce(plan)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not isinstance(nproc, int) or nproc < 1:
        raise UsageError(f"--nproc must be an integer >= 1, got {nproc!r}")
    runs = baseline_runs if baseline_runs is not None else (1 if tgt.builtin else 2)
    if not isinstance(runs, int) or runs < 1:
        raise UsageError(f"--baseline-runs must be an integer >= 1, got {baseline_runs!r}")
    if timeout_s <= 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {timeout_s}")
    backend = resolve_backend(backend)
    out = os.path.abspath(out_dir or default_out_dir(tgt))
    folder = RunFolder(out)
    if os.path.isdir(folder.trace_dir) and os.listdir(folder.trace_dir):
        raise UsageError(f"{out} already holds a trial (trace/ is not empty); choose another --out")
    os.makedirs(out, exist_ok=True)

    own_launcher = launcher is None
    if own_launcher:
        from harness.launch.forkserver import ForkServerLauncher

        launcher = ForkServerLauncher()  # the zygote imports torch while the baseline is looked up
    common = dict(target=tgt.name, nproc=nproc, backend=backend, seed=seed, out_dir=out)
    timings: dict = {}
    try:
        result = _run(tgt, plan, folder, launcher=launcher, runs=runs, use_cache=use_cache, timeout_s=timeout_s,
                      script_args=tuple(script_args), say=say, timings=timings, common=common)
    except LaunchError as e:
        result = _error(f"the launcher failed: {e}", plan, common)
    finally:
        if own_launcher:
            launcher.close()
    timings["total_s"] = round(time.monotonic() - t_start, 3)
    result.timings = {**timings, **result.timings}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result.to_json(), f, indent=1)
    return result


def _error(message: str, plan: FaultPlan, common: dict, **extra):
    from harness.oracle import RunResult

    return RunResult(verdict="error", outcome="error", message=message, plan=plan.format(), **common, **extra)


def _run(tgt: Target, plan: FaultPlan, folder: RunFolder, *, launcher, runs, use_cache, timeout_s, script_args,
         say, timings, common):
    from harness.oracle import RunResult, assess, compare_runs, load_trace

    t0 = time.monotonic()
    baseline = get_baseline(tgt, nproc=common["nproc"], backend=common["backend"], script_args=script_args,
                            runs=runs, launcher=launcher, timeout_s=timeout_s, use_cache=use_cache,
                            scratch=os.path.join(folder.root, "baseline"), progress=say)
    timings.update(baseline_s=round(time.monotonic() - t0, 3), baseline_cached=baseline.cached)
    say(f"baseline: {'cached' if baseline.cached else 'ran'}, {baseline.last_step} steps ({baseline.root})")
    replay = replay_command(tgt, nproc=common["nproc"], backend=common["backend"], seed=common["seed"], plan=plan,
                            script_args=script_args)
    if baseline.error is not None or (baseline.repro is not None and baseline.repro.first is not None):
        verdict = assess(None, None, baseline_error=baseline.error, baseline_repro=baseline.repro)
        if baseline.log_tail:
            verdict["log_tail"] = baseline.log_tail
        return RunResult(**verdict, **common, plan=plan.format(), replay=replay)
    try:
        base_trace = load_trace(baseline.trace_dir)
        committed = [row["step"] for row in base_trace.events("checkpoint.committed")]
        concrete = plan.resolve(common["seed"], baseline.last_step, first_checkpoint=min(committed, default=0))
    except ValueError as e:
        return _error(str(e), plan, common, replay=replay)
    replay = replay_command(tgt, nproc=common["nproc"], backend=common["backend"], seed=common["seed"],
                            plan=concrete, script_args=script_args)

    t1 = time.monotonic()
    launches = {}
    for a in range(len(concrete) + 1):
        fault = concrete[a] if a < len(concrete) else None
        spec = attempt_spec(tgt, folder, nproc=common["nproc"], backend=common["backend"], script_args=script_args,
                            role="trial", attempt=a, fault=fault, timeout_s=timeout_s)
        result = launches[a] = launcher.launch(spec)
        trace = load_trace(folder.trace_dir)
        fired = [row for row in trace.faults() if row.get("attempt", 0) == a]
        finished = all(trace.finished(r, a) for r in range(common["nproc"]))
        say(_attempt_line(a, fault, fired, finished, result, timeout_s))
        if result.timed_out:
            tails = "\n".join(f"--- rank {e.rank} ---\n{log_tail(e.log_path, 15)}" for e in result.exits)
            return _error(f"attempt {a} {failure_message(result, timeout_s)}", concrete, common, replay=replay,
                          log_tail=tails, timings={"trial_s": round(time.monotonic() - t1, 3)})
        if fault is None or not fired or finished:
            break
    timings["trial_s"] = round(time.monotonic() - t1, 3)

    t2 = time.monotonic()
    last = launches[max(launches)]
    comparison = compare_runs(base_trace, trace)  # the traces as loaded above: no process writes them now
    verdict = assess(comparison, trace, n_faults=len(concrete),
                     exit_codes={e.rank: e.returncode for e in last.exits},
                     log_tails={e.rank: log_tail(e.log_path) for e in last.exits})
    for summary in verdict["attempts"]:
        launch = launches.get(summary["attempt"])
        if launch is not None:
            summary.update(wall_s=round(launch.wall_s, 3), exits=exits_summary(launch))
    timings["compare_s"] = round(time.monotonic() - t2, 3)
    return RunResult(**verdict, **common, plan=concrete.format(), replay=replay)


def _attempt_line(a, fault, fired, finished, result, timeout_s) -> str:
    armed = f"armed {fault.format()}" if fault is not None else "no fault armed"
    if result.timed_out:
        end = failure_message(result, timeout_s)
    elif fired:
        row = fired[0]
        at = f"point {row['point']}" if row.get("point") else f"step {row.get('step')}"
        end = f"fault fired on rank {row.get('rank')} at {at}"
    elif finished:
        end = "finished"
    else:
        end = failure_message(result, timeout_s) or "ended without finishing"
    return f"attempt {a} ({armed}): {end} [{result.wall_s:.1f} s]"
