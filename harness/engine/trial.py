"""One trial: the baseline (cached), the attempts under a fault plan, then the oracle's verdict.

A trial of a plan with k faults has k+1 attempts: attempt a arms fault a (HARNESS_FAULT), and after
an attempt whose fault fired the job is restarted so that it resumes from its own checkpoints. The
trial stops early when an attempt finishes, crashes without its fault, or hangs. Every step row of
the trial and its final state are then compared with the baseline (``harness.oracle``).

Files: ``OUT/trace`` (the trial's trace), ``OUT/run`` (its checkpoints), ``OUT/attempt{a}/rank{r}.log``,
``OUT/baseline`` (a failed baseline's logs), ``OUT/result.json``.
Default OUT: ``harness-out/<target>-<YYYYmmdd-HHMMSS>-<id>``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
import time
import uuid
from contextlib import contextmanager

from harness.engine.baseline import Baseline, baseline_with_mode, imports_probe
from harness.engine.auto_mode import auto_not_recorded, write_auto_index
from harness.engine.jobs import RunFolder, attempt_spec, exits_summary, failure_message
from harness.engine.monitor import AttemptMonitor, stall_limit
from harness.engine.resume_watch import ResumeWatch
from harness.engine.spec import TrialSpec, check_plan_ranks
from harness.engine.target import Target, UsageError, resolve_target
from harness.faults import FaultPlan
from harness.launch import LaunchError, Launcher
from harness.launch.factory import borrowed
from harness.launch.scratch import scratch_dir
from harness.launch.spec import log_tail
from harness.launch.determinism import cuda_visible
from harness.settings import ACCEPTABLE_RNG, BACKENDS, DEFAULT_TIMEOUT_S, STRATEGIES
from harness.trace_schema import Point



def cuda_available() -> bool:
    """Whether ranks will see a CUDA device, without importing torch in this process if it is not yet."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.cuda.is_available()
    return cuda_visible()


def resolve_backend(backend: str, *, ranks_here: bool = True) -> str:
    """``auto``: nccl when a CUDA device is visible, else gloo. ``nccl`` for ranks on this machine needs CUDA here
    (``ranks_here=False``: a launch prefix runs them elsewhere, so nothing can be checked)."""
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}", field="backend")
    if backend == "auto":
        return "nccl" if cuda_available() else "gloo"
    if backend == "nccl" and ranks_here and not cuda_available():
        raise UsageError("--backend nccl needs a CUDA GPU and none is visible here; use --backend gloo "
                         "(or auto, which picks gloo without CUDA), or run on a machine with a GPU", field="backend")
    return backend


def replay_command(target: Target, *, launcher_args: tuple[str, ...] = (), **fields) -> str:
    """The ``harness run`` command line that repeats a trial: ``TrialSpec.replay()`` of ``target`` and ``fields``
    (TrialSpec's), with the launcher that ``launcher_args`` (a ``Launcher.replay_args()``) names."""
    return TrialSpec(target=target.name, **fields).with_launcher_args(launcher_args).replay()


def default_out_dir(target: Target) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("harness-out", f"{target.slug}-{stamp}-{uuid.uuid4().hex[:6]}")


def check_plan_against_baseline(plan: FaultPlan, last_step: int, points: dict[str, int]) -> list[str]:
    """Steps beyond the baseline's last step and points the baseline never reached cannot fire.

    The first fault's attempt runs as the baseline did, so its point must be one the baseline reached,
    often enough. Later faults are armed in resumed attempts, which may reach points the baseline
    never does (``checkpoint.loaded``): for them an unknown point is only noted (returned).
    """
    notes = []
    for i, fault in enumerate(plan):
        what = f"fault {i + 1} ({fault.format()})"
        if fault.step is not None and fault.step > last_step:
            raise UsageError(f"{what} is at step {fault.step}, but the baseline's last step is {last_step}")
        if fault.point is not None and i > 0 and fault.point not in points:
            notes.append(f"{what}: the baseline never reached point {fault.point!r}; it can only fire after a resume")
        elif fault.point is not None and i == 0:
            if fault.point not in points:
                close = difflib.get_close_matches(fault.point, list(points), n=3, cutoff=0.5)
                known = ", ".join(sorted(points)) or "none (the script calls no probe.point)"
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise UsageError(f"{what}: the baseline never reached point {fault.point!r}{hint} "
                                 f"(points it reached: {known})")
            if fault.occurrence > points[fault.point]:
                raise UsageError(f"{what}: the baseline reached {fault.point!r} at most {points[fault.point]} "
                                 f"time(s) on one rank, not {fault.occurrence}")
    return notes


def run(spec: TrialSpec | str = "default", *, out_dir: str | None = None, use_cache: bool = True,
        launcher: Launcher | None = None, progress=None, keep_run: bool = True, **fields):
    """Run one trial and judge it against the baseline; ``harness.oracle.RunResult`` (its ``spec``: the trial's
    TrialSpec as JSON, concrete: resolved backend and plan, the mode it recorded in).

    spec: a ``TrialSpec``, or the target (a built-in scenario name or a path to a script) of one made from
    ``fields``; ``fields`` (TrialSpec's: nproc, plan, seed, backend, script_args, baseline_runs, timeout_s,
    stall_s, auto, strategy, resume_nproc, loss_rtol, accept_rng, accept_lost_progress, launcher, ...)
    replace the spec's. So ``run("train.py", nproc=2, plan="12")`` and ``run(TrialSpec("train.py", plan="12"))``
    are one trial. The fields are documented on ``harness.engine.spec.TrialSpec``; in short:

    plan: a FaultPlan, a short string ("12", "checkpoint.write:2@all:SIGTERM", "random"), a list of them;
    None means "random" (a PASS needs a resume, so there is no plan without a fault). baseline_runs:
    uninterrupted runs to make (and compare) for the baseline; default 2 for scripts, 1 for built-in
    scenarios. timeout_s: the limit of each launch. stall_s: stop an attempt when no rank records anything
    for this long (default: derived from the baseline's step times, see harness.engine.monitor). auto:
    record with auto mode (harness.probe.auto), for a script that never calls the probe; None (default):
    auto mode when the baseline records no step and no finish through the probe; False: never.
    strategy: how the built-in scenarios wrap the model (``$HARNESS_STRATEGY`` of the ranks, one of
    STRATEGIES; part of the baseline's cache key); None: the scenario's default (ddp). resume_nproc: run the
    attempts after the first fault on this many ranks (an elastic resume, judged by
    ``harness.oracle.elastic`` with the global loss held to ``loss_rtol``). accept_rng: RNG streams whose
    difference is accepted knowingly when training stays bit-exact (outcome rng_accepted).
    accept_lost_progress: a resume from an older checkpoint than the newest committed passes.

    launcher: reuse one (e.g. a ForkServerLauncher shared by many trials; the spec's launcher fields then
    become the ones it replays as); by default one of the spec's ``launcher`` kind is made and closed.
    progress: a callable taking one line of status. keep_run=False: a passing trial's run folder (its
    checkpoints, on tmpfs) is dropped instead of copied to OUT/run (fuzz and certify keep only failures').

    Raises UsageError for bad arguments (``field`` names the spec's field where one is at fault), found before
    anything runs where possible; everything that happens once processes run is in the returned result.
    """
    t_start = time.monotonic()
    say = progress or (lambda line: None)
    if isinstance(spec, TrialSpec):
        spec = spec.replace(**fields)
    else:
        spec = _spec_of_call(spec, fields)
    tgt = resolve_target(spec.target)
    if launcher is not None:
        spec = spec.with_launcher_args(tuple(launcher.replay_args()))
    backend = resolve_backend(spec.backend, ranks_here=not (launcher.remote if launcher is not None
                                                             else bool(spec.launch_prefix)))
    spec = spec.replace(target=tgt.name, backend=backend)
    runs = spec.baseline_runs if spec.baseline_runs is not None else (1 if tgt.builtin else 2)
    out = os.path.abspath(out_dir or default_out_dir(tgt))
    folder = RunFolder(out)
    if os.path.isdir(folder.trace_dir) and os.listdir(folder.trace_dir):
        raise UsageError(f"{out} already holds a trial (trace/ is not empty); choose another --out")
    os.makedirs(out, exist_ok=True)

    # without a launcher, one of the spec's kind (the pool's zygote imports torch while the baseline is looked up)
    # The checkpoints are written on tmpfs (no fsync cost; a process kill proves the same there) and copied to
    # OUT/run when the trial ends, so a run leaves what it always left. An OUT/run already there (an --out
    # reused after a refused trial) is written in place, as before.
    kind = "disk" if os.path.lexists(folder.run_dir) else spec.scratch
    with borrowed(launcher, **spec.launcher_options()) as lent, \
            scratch_dir(kind, disk_path=folder.run_dir) as place:  # a fallback to disk is said on stderr
        _import_torch()
        with _run_dir_at(place, folder.run_dir):
            trial = _Trial(spec, tgt, folder, launcher=lent, runs=runs, use_cache=use_cache, say=say)
            try:
                verdict, context = trial.run()
            except LaunchError as e:
                verdict, context = _error_verdict(f"the launcher failed: {e}"), trial.context()
        if keep_run or verdict.verdict != "pass":  # VerdictKind.PASS (a StrEnum)
            place.keep()
    from harness.oracle import RunResult

    timings = {**trial.timings, "total_s": round(time.monotonic() - t_start, 3)}
    s = trial.spec
    result = RunResult(verdict, target=s.target, nproc=s.nproc, backend=s.backend, seed=s.seed, out_dir=out,
                       timings=timings, **context)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result.to_json(), f, indent=1)
    return result


def _import_torch() -> None:
    """The oracle needs torch in this process (it reads torch.save archives and the final tensors).

    Imported here, on the main thread, right after a new pool has started its zygote, it loads while the
    zygote loads its own (two processes, two cores) instead of after the last launch, where it added its
    whole import time to every ``harness run``. Not on a thread: torch's start-up racing the main thread's
    own imports aborted the process ("terminate called after throwing an instance of 'python_error'").
    """
    import torch  # noqa: F401


@contextmanager
def _run_dir_at(place, run_dir: str):
    """While the trial runs, ``run_dir`` (OUT/run) is a link to the scratch folder on tmpfs: the ranks, the
    trace and every message name OUT/run, wherever the bytes are. Removed before the scratch folder is
    copied there (a failure) or deleted."""
    if place.path == run_dir:
        yield
        return
    os.symlink(place.path, run_dir)
    try:
        yield
    finally:
        os.unlink(run_dir)


def _spec_of_call(target, fields: dict) -> TrialSpec:
    """The spec of ``run(target, **fields)``: an unknown keyword is a TypeError, as for any function."""
    names = {f.name for f in dataclasses.fields(TrialSpec)}
    for name in fields:
        if name not in names:
            raise TypeError(f"run() got an unexpected keyword argument {name!r}")
    return TrialSpec(**{"target": target, **fields})  # run(target="x.py") as before the spec, too


def _error_verdict(message: str, **kw):
    from harness.oracle import error_verdict

    return error_verdict(message, **kw)


class _Trial:
    """The state of one trial while it runs: its spec becomes concrete (plan drawn, mode detected) once the
    baseline exists."""

    def __init__(self, spec: TrialSpec, tgt: Target, folder: RunFolder, *, launcher, runs, use_cache, say):
        self.spec, self.tgt, self.folder = spec, tgt, folder
        self.launcher, self.runs, self.use_cache, self.say = launcher, runs, use_cache, say
        self.timings: dict = {}

    @property
    def plan(self) -> FaultPlan:
        return self.spec.fault_plan

    def context(self, launches: dict | None = None) -> dict:
        out = {"plan": self.spec.plan, "replay": self.spec.replay(), "spec": self.spec.to_json()}
        if launches:
            out["launches"] = tuple({"attempt": a, "wall_s": round(r.wall_s, 3), "exits": exits_summary(r)}
                                    for a, r in sorted(launches.items()))
        return out

    def _artefacts(self, baseline, comparison):
        """The exported files' comparison (assess puts their counts into ``compared["artefacts"]``)."""
        return _artefacts_of(baseline, self.folder.run_dir, self.say)

    def run(self):
        from harness.oracle import RankEnd, assess, compare_runs, load_trace, timeout_verdict

        spec = self.spec
        t0 = time.monotonic()
        baseline, auto = baseline_with_mode(self.tgt, spec, runs=self.runs, launcher=self.launcher,
                                            use_cache=self.use_cache,
                                            runs_dir=os.path.join(self.folder.root, "baseline"), progress=self.say)
        if auto:
            self.spec = spec = spec.replace(auto=True)  # the replay says --auto
        self.timings.update(baseline_s=round(time.monotonic() - t0, 3), baseline_cached=baseline.cached)
        if baseline.error is not None or (baseline.repro is not None and baseline.repro.first is not None):
            if baseline.error is not None:
                self.say(f"baseline: failed ({baseline.root})")
            verdict = assess(None, None, baseline_error=baseline.error, baseline_repro=baseline.repro,
                             log_tail=baseline.log_tail)
            return verdict, self.context()
        self.say(f"baseline: {'cached' if baseline.cached else 'ran'}, {baseline.last_step} steps ({baseline.root})")
        base_trace = baseline.trace()
        plan = self.plan
        committed = [row.event_step for row in base_trace.events(Point.COMMITTED)]
        try:
            for note in check_plan_against_baseline(plan, baseline.last_step, base_trace.event_names()):
                self.say(note)
            concrete = plan.resolve(spec.seed, baseline.last_step, first_checkpoint=min(committed, default=0))
        except ValueError as e:  # UsageError included: the CLI reports it with exit code 2
            if isinstance(e, UsageError):
                raise
            return _error_verdict(str(e)), self.context()
        if concrete is not plan:
            self.say(f"plan: {concrete.format()} (drawn from --seed {spec.seed})")
        self.spec = spec = spec.replace(plan=concrete.format())
        stall = spec.stall_s if spec.stall_s is not None else stall_limit(base_trace)

        index = write_auto_index(base_trace, os.path.join(self.folder.root, "auto_index.json")) if auto else None
        t1 = time.monotonic()
        launches, trace = {}, None
        for a in range(len(concrete) + 1):
            fault = concrete[a] if a < len(concrete) else None
            nproc = spec.nproc if a == 0 or spec.resume_nproc is None else spec.resume_nproc
            monitor = AttemptMonitor(self.folder.trace_dir, nproc, a, stall_s=stall, say=self.say)
            apart = ResumeWatch(self.folder.trace_dir, nproc, a) if a > 0 else None
            stall_reason: list[str] = []

            def watch(elapsed, monitor=monitor, apart=apart, stall_reason=stall_reason):
                reason = apart.check() if apart is not None else None
                if reason is None:
                    reason = monitor.watch(elapsed)
                    if reason is not None:
                        stall_reason.append(reason)
                return reason

            launch = attempt_spec(self.tgt, self.folder, spec, nproc=nproc, role="trial", attempt=a, fault=fault,
                                  watch=watch, auto=auto, index=index)
            result = launches[a] = self.launcher.launch(launch)
            trace = load_trace(self.folder.trace_dir)
            fired = [row for row in trace.faults() if row.attempt == a]
            finished = all(trace.finished(r, a) for r in range(nproc))
            stopped = result.stopped
            self.say(_attempt_line(a, fault, fired, finished, result, spec.timeout_s))
            if result.timed_out or stopped:
                self.timings["trial_s"] = round(time.monotonic() - t1, 3)
                reason = stopped or f"no end within --timeout {spec.timeout_s:g} s"
                last_steps = {r: max((row.step for row in trace.steps(r, a)), default=None)
                              for r in range(nproc)}
                tails = "\n".join(f"--- rank {e.rank} ---\n{log_tail(e.log_path, 15)}" for e in result.exits)
                return (timeout_verdict(trace, a, reason, last_steps, tails, stalled=bool(stall_reason) and not result.timed_out),
                        self.context(launches))
            if fault is None or not fired or finished:
                break
        self.timings["trial_s"] = round(time.monotonic() - t1, 3)

        t2 = time.monotonic()
        last = launches[max(launches)]
        if spec.resume_nproc is not None:
            from harness.oracle.elastic import DEFAULT_LOSS_RTOL, assess_elastic

            ends = [RankEnd(e.rank, e.returncode, e.torn_down, log_tail(e.log_path)) for e in last.exits]
            verdict = assess_elastic(base_trace, trace, nproc=spec.nproc, resume_nproc=spec.resume_nproc,
                                     n_faults=len(concrete), last_exits=ends, launched=len(launches),
                                     loss_rtol=DEFAULT_LOSS_RTOL if spec.loss_rtol is None else spec.loss_rtol)
            self.timings["compare_s"] = round(time.monotonic() - t2, 3)
            return verdict, self.context(launches)
        comparison = compare_runs(base_trace, trace)  # the traces as loaded above: no process writes them now
        ends = [RankEnd(e.rank, e.returncode, e.torn_down, log_tail(e.log_path)) for e in last.exits]
        artefacts = self._artefacts(baseline, comparison)
        verdict = assess(comparison, trace, n_faults=len(concrete), last_exits=ends, launched=len(launches),
                         artefacts=artefacts, accept_rng=spec.accept_rng,
                         accept_lost_progress=spec.accept_lost_progress,
                         not_recorded=auto_not_recorded(base_trace) if auto else None)
        self.timings["compare_s"] = round(time.monotonic() - t2, 3)
        return verdict, self.context(launches)


def _artefacts_of(baseline, run_dir: str, say):
    """The files the trial left in its run folder, compared with the baseline's (harness.oracle.artefacts)."""
    from harness.oracle.artefacts import ArtefactError, compare_artefacts, index_artefacts

    if baseline.artefacts is None:
        if baseline.artefacts_note:
            say(f"exported files not judged: {baseline.artefacts_note}")
        return None
    try:
        return compare_artefacts(baseline.artefacts, index_artefacts(run_dir), trial_dir=run_dir,
                                 unstable=baseline.artefacts_unstable)
    except ArtefactError as e:
        say(f"exported files not judged: {e}")
        return None


def _attempt_line(a, fault, fired, finished, result, timeout_s) -> str:
    armed = f"armed {fault.format()}" if fault is not None else "no fault armed"
    stopped = result.stopped
    if result.timed_out or stopped:
        end = stopped or failure_message(result, timeout_s)
    elif fired:
        row = fired[0]
        at = f"point {row.point}" if row.point else f"step {row.step}"
        end = f"fault fired on rank {row.rank} at {at}"
        if finished:
            end += ", and the job ran to the end anyway"
    elif finished:
        end = "finished"
    else:
        end = failure_message(result, timeout_s) or "ended without finishing"
    return f"attempt {a} ({armed}): {end} [{result.wall_s:.1f} s]"


__all__ = ["run", "TrialSpec", "replay_command", "resolve_backend", "cuda_available", "default_out_dir", "BACKENDS",
           "STRATEGIES", "ACCEPTABLE_RNG", "DEFAULT_TIMEOUT_S", "check_plan_ranks", "check_plan_against_baseline",
           "imports_probe", "Baseline"]
