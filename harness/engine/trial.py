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

import difflib
import json
import os
import re
import shlex
import sys
import time
import uuid

from harness.engine.baseline import Baseline, get_baseline
from harness.engine.jobs import RunFolder, attempt_spec, auto_not_recorded, exits_summary, failure_message, write_auto_index
from harness.engine.monitor import AttemptMonitor, stall_limit
from harness.engine.resume_watch import ResumeWatch
from harness.engine.target import Target, UsageError, resolve_target
from harness.faults import FaultPlan
from harness.launch import LaunchError, Launcher
from harness.launch.spec import log_tail
from harness.launch.determinism import cuda_visible

BACKENDS = ("auto", "gloo", "nccl")
#: RNG streams that --accept-rng names (or all of them).
ACCEPTABLE_RNG = ("python", "numpy", "torch", "cuda", "all")
DEFAULT_TIMEOUT_S = 300.0


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
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "nccl" if cuda_available() else "gloo"
    if backend == "nccl" and ranks_here and not cuda_available():
        raise UsageError("--backend nccl needs a CUDA GPU and none is visible here; use --backend gloo "
                         "(or auto, which picks gloo without CUDA), or run on a machine with a GPU")
    return backend


#: ``harness run --strategy``: how the built-in scenarios wrap the model (scenarios/_common.py STRATEGIES).
STRATEGIES = ("ddp", "fsdp", "deepspeed-zero0", "deepspeed-zero1", "deepspeed-zero2", "deepspeed-zero3")


def replay_command(target: Target, *, nproc: int, backend: str, seed: int, plan: FaultPlan, script_args=(),
                   timeout_s: float = DEFAULT_TIMEOUT_S, stall_s: float | None = None, auto: bool = False,
                   strategy: str | None = None, resume_nproc: int | None = None,
                   loss_rtol: float | None = None, launcher_args: tuple[str, ...] = (), accept_rng=(),
                   accept_lost_progress: bool = False) -> str:
    """The ``harness run`` command line that repeats this trial with its concrete fault plan."""
    parts = ["harness", "run", target.name, "--nproc", str(nproc), "--backend", backend, "--seed", str(seed),
             *launcher_args]
    if resume_nproc is not None:
        parts += ["--resume-nproc", str(resume_nproc)]
        if loss_rtol is not None:
            parts += ["--loss-rtol", f"{loss_rtol:g}"]
    if strategy is not None:
        parts += ["--strategy", strategy]
    if auto:
        parts.append("--auto")
    for fault in plan:
        parts += ["--kill", fault.format()]
    if timeout_s != DEFAULT_TIMEOUT_S:
        parts += ["--timeout", f"{timeout_s:g}"]
    if stall_s is not None:
        parts += ["--stall", f"{stall_s:g}"]
    for stream in accept_rng:
        parts += ["--accept-rng", stream]
    if accept_lost_progress:
        parts.append("--accept-lost-progress")
    if script_args:
        parts += ["--", *script_args]
    return shlex.join(parts)


_PROBE_IMPORT = re.compile(r"^\s*(from\s+harness(\.\w+)*\s+import\s[^\n]*\bprobe\b|import\s+harness\.probe"
                           r"|from\s+harness\.probe\s+import|from\s+harness\.checkpoint)", re.M)


def imports_probe(target: Target) -> bool:
    """Whether a target may record through harness.probe: a built-in scenario, or a script that imports the
    probe or the reference checkpointer. Any other script goes to auto mode without a first plain run."""
    if target.builtin:
        return True
    try:
        with open(target.script, encoding="utf-8", errors="replace") as f:
            return bool(_PROBE_IMPORT.search(f.read()))
    except OSError:
        return True


def default_out_dir(target: Target) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("harness-out", f"{target.slug}-{stamp}-{uuid.uuid4().hex[:6]}")


def _coerce_plan(plan) -> FaultPlan:
    if plan is None:
        return FaultPlan.parse("random")
    try:
        plan = FaultPlan.coerce(plan)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not plan:
        raise UsageError("the fault plan is empty, so no resume would be tested; give --kill STEP or --kill random")
    return plan


def check_plan_ranks(plan: FaultPlan, nproc: int, resume_nproc: int | None = None) -> None:
    """A fault on a rank that does not exist never fires: refuse it before anything runs. With
    ``resume_nproc``, faults after the first are armed in attempts of that many ranks."""
    for i, fault in enumerate(plan):
        n, flag = (resume_nproc, "--resume-nproc") if resume_nproc is not None and i > 0 else (nproc, "--nproc")
        if fault.rank != "all" and fault.rank >= n:
            raise UsageError(f"fault {i + 1} ({fault.format()}) is on rank {fault.rank}, but the job has "
                             f"{flag} {n} (ranks 0..{n - 1})")


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


def run(target: str = "default", nproc: int = 2, plan=None, seed: int = 0, backend: str = "auto",
        out_dir: str | None = None, script_args=(), baseline_runs: int | None = None, use_cache: bool = True,
        launcher: Launcher | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, stall_s: float | None = None,
        progress=None, auto: bool | None = None, strategy: str | None = None, resume_nproc: int | None = None,
        loss_rtol: float | None = None, accept_rng=(), accept_lost_progress: bool = False):
    """Run one trial of ``target`` under ``plan`` and judge it against the baseline.

    target: a built-in scenario name or a path to a script. plan: a FaultPlan, a short string
    ("12", "checkpoint.write:2@all:SIGTERM", "random"), a list of them; None means "random" (a PASS
    needs a resume, so there is no plan without a fault). baseline_runs: uninterrupted runs to make
    (and compare) for the baseline; default 2 for scripts, 1 for built-in scenarios. launcher: reuse
    one (e.g. a ForkServerLauncher shared by many trials); by default a ForkServerLauncher is made and
    closed. timeout_s: the limit of each launch. stall_s: stop an attempt when no rank records anything
    for this long (default: derived from the baseline's step times, see harness.engine.monitor).
    progress: a callable taking one line of status. auto: record with auto mode (harness.probe.auto), for a
    script that never calls the probe; None (default): auto mode when the baseline records no step and no
    finish through the probe; False: never.

    strategy: how the built-in scenarios wrap the model (``$HARNESS_STRATEGY``, one of STRATEGIES; part
    of the baseline's cache key); None: the scenario's default (ddp).

    resume_nproc: run the attempts after the first fault on this many ranks (an elastic resume): the
    trial is judged by ``harness.oracle.elastic`` (outcome elastic_pass, never bit_exact), with the
    global loss held to ``loss_rtol`` (default ``harness.oracle.elastic.DEFAULT_LOSS_RTOL``). Equal to
    ``nproc``: an ordinary trial.

    accept_rng: RNG streams ("python", "numpy", "torch", "cuda", or "all") whose difference is accepted
    knowingly when training stays bit-exact (outcome rng_accepted, a pass that names them); else such a
    trial is rng_only (exit 3). accept_lost_progress: a resume from an older checkpoint than the newest
    committed before the kill passes (naming both steps) instead of lost_progress.

    Raises UsageError for bad arguments, found before anything runs where possible; everything that
    happens once processes run is reported in the returned ``harness.oracle.RunResult``.
    """
    t_start = time.monotonic()
    say = progress or (lambda line: None)
    tgt = resolve_target(target)
    plan = _coerce_plan(plan)
    if not isinstance(nproc, int) or nproc < 1:
        raise UsageError(f"--nproc must be an integer >= 1, got {nproc!r}")
    if resume_nproc is not None and (not isinstance(resume_nproc, int) or resume_nproc < 1):
        raise UsageError(f"--resume-nproc must be an integer >= 1, got {resume_nproc!r}")
    if resume_nproc == nproc:
        resume_nproc = None  # the same world size: an ordinary, bit-exact trial
    if loss_rtol is not None and (resume_nproc is None or not loss_rtol >= 0):
        raise UsageError(f"--loss-rtol {loss_rtol} needs --resume-nproc (another world size) and a value >= 0")
    if resume_nproc is not None and auto:
        raise UsageError("--resume-nproc cannot be combined with --auto: the elastic oracle needs the probe's "
                         "restored-state and per-sample records")
    check_plan_ranks(plan, nproc, resume_nproc)
    accept_rng = tuple(accept_rng or ())
    bad = [a for a in accept_rng if a.removeprefix("rng:") not in ACCEPTABLE_RNG]
    if bad:
        raise UsageError(f"--accept-rng takes {', '.join(ACCEPTABLE_RNG)}; got {', '.join(map(repr, bad))}")
    runs = baseline_runs if baseline_runs is not None else (1 if tgt.builtin else 2)
    if not isinstance(runs, int) or runs < 1:
        raise UsageError(f"--baseline-runs must be an integer >= 1, got {baseline_runs!r}")
    if timeout_s <= 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {timeout_s}")
    if stall_s is not None and stall_s <= 0:
        raise UsageError(f"--stall must be > 0 seconds, got {stall_s}")
    backend = resolve_backend(backend, ranks_here=launcher is None or not launcher.remote)
    if strategy is not None and strategy not in STRATEGIES:
        raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    out = os.path.abspath(out_dir or default_out_dir(tgt))
    folder = RunFolder(out)
    if os.path.isdir(folder.trace_dir) and os.listdir(folder.trace_dir):
        raise UsageError(f"{out} already holds a trial (trace/ is not empty); choose another --out")
    os.makedirs(out, exist_ok=True)

    own_launcher = launcher is None
    if own_launcher:
        from harness.launch.forkserver import ForkServerLauncher

        launcher = ForkServerLauncher()  # the zygote imports torch while the baseline is looked up
    trial = _Trial(tgt, plan, folder, launcher=launcher, runs=runs, use_cache=use_cache, timeout_s=timeout_s,
                   stall_s=stall_s, script_args=tuple(script_args), say=say, auto=auto, strategy=strategy,
                   common=dict(target=tgt.name, nproc=nproc, backend=backend, seed=seed, out_dir=out),
                   resume_nproc=resume_nproc, loss_rtol=loss_rtol, accept_rng=accept_rng,
                   accept_lost_progress=accept_lost_progress)
    try:
        verdict, context = trial.run()
    except LaunchError as e:
        verdict, context = _error_verdict(f"the launcher failed: {e}"), {"plan": trial.plan.format(),
                                                                         "replay": trial.replay()}
    finally:
        if own_launcher:
            launcher.close()
    from harness.oracle import RunResult

    timings = {**trial.timings, "total_s": round(time.monotonic() - t_start, 3)}
    result = RunResult(verdict, **trial.common, timings=timings, **context)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result.to_json(), f, indent=1)
    return result


def _error_verdict(message: str, **kw):
    from harness.oracle import error_verdict

    return error_verdict(message, **kw)


class _Trial:
    """The state of one trial while it runs (the plan becomes concrete once the baseline exists)."""

    def __init__(self, tgt: Target, plan: FaultPlan, folder: RunFolder, *, launcher, runs, use_cache, timeout_s,
                 stall_s, script_args, say, common, auto=None, strategy=None, resume_nproc=None, loss_rtol=None,
                 accept_rng=(), accept_lost_progress=False):
        self.tgt, self.plan, self.folder = tgt, plan, folder
        self.launcher, self.runs, self.use_cache = launcher, runs, use_cache
        self.timeout_s, self.stall_s, self.script_args, self.say = timeout_s, stall_s, script_args, say
        self.common = common
        self.auto = auto
        self.strategy = strategy
        self.resume_nproc, self.loss_rtol = resume_nproc, loss_rtol  # an elastic trial (harness.oracle.elastic)
        self.accept_rng, self.accept_lost_progress = tuple(accept_rng), accept_lost_progress
        self.timings: dict = {}

    def replay(self) -> str:
        c = self.common
        return replay_command(self.tgt, nproc=c["nproc"], backend=c["backend"], seed=c["seed"], plan=self.plan,
                              script_args=self.script_args, timeout_s=self.timeout_s, stall_s=self.stall_s,
                              auto=bool(self.auto), strategy=self.strategy, resume_nproc=self.resume_nproc,
                              loss_rtol=self.loss_rtol, launcher_args=tuple(self.launcher.replay_args()),
                              accept_rng=self.accept_rng, accept_lost_progress=self.accept_lost_progress)

    def context(self, launches: dict | None = None) -> dict:
        out = {"plan": self.plan.format(), "replay": self.replay()}
        if launches:
            out["launches"] = tuple({"attempt": a, "wall_s": round(r.wall_s, 3), "exits": exits_summary(r)}
                                    for a, r in sorted(launches.items()))
        return out

    def _artefacts(self, baseline, comparison):
        """The exported files' comparison; their counts go into ``comparison.compared``."""
        report = _artefacts_of(baseline, self.folder.run_dir, self.say)
        if report is not None:
            comparison.compared["artefacts"] = report.to_json().get("judged")
        return report

    def run(self):
        from harness.oracle import RankEnd, assess, compare_runs, load_trace, timeout_verdict

        c = self.common
        t0 = time.monotonic()

        held: list[str] = []  # "baseline run 1/2: failed" of a first run that may only mean: no probe calls

        def hold_failed(line: str) -> None:
            (held.append if line.startswith("baseline run") and line.endswith(": failed") else self.say)(line)

        def baseline_of(auto: bool, progress=None):
            return get_baseline(self.tgt, nproc=c["nproc"], backend=c["backend"], script_args=self.script_args,
                                runs=self.runs, launcher=self.launcher, timeout_s=self.timeout_s,
                                use_cache=self.use_cache, scratch=os.path.join(self.folder.root, "baseline"),
                                progress=progress or self.say, auto=auto, strategy=self.strategy)

        if self.auto is None and not imports_probe(self.tgt):
            self.auto = True  # a plain script: auto mode at once (a first run in the user's folder might write there)
        baseline = baseline_of(bool(self.auto), hold_failed if self.auto is None else None)
        if self.auto is None and baseline.no_probe:
            self.say("no probe calls: testing in auto mode (as harness run --auto)")  # not an error: say it plainly
            self.auto = True
            baseline = baseline_of(True)
        else:
            for line in held:  # a real failure: shown as it happened
                self.say(line)
        self.timings.update(baseline_s=round(time.monotonic() - t0, 3), baseline_cached=baseline.cached)
        if baseline.error is not None or (baseline.repro is not None and baseline.repro.first is not None):
            if baseline.error is not None:
                self.say(f"baseline: failed ({baseline.root})")
            verdict = assess(None, None, baseline_error=baseline.error, baseline_repro=baseline.repro)
            if baseline.log_tail:
                from dataclasses import replace

                verdict = replace(verdict, log_tail=baseline.log_tail)
            return verdict, self.context()
        self.say(f"baseline: {'cached' if baseline.cached else 'ran'}, {baseline.last_step} steps ({baseline.root})")
        base_trace = load_trace(baseline.trace_dir)
        committed = [row.event_step for row in base_trace.events("checkpoint.committed")]
        try:
            for note in check_plan_against_baseline(self.plan, baseline.last_step, base_trace.event_names()):
                self.say(note)
            concrete = self.plan.resolve(c["seed"], baseline.last_step, first_checkpoint=min(committed, default=0))
        except ValueError as e:  # UsageError included: the CLI reports it with exit code 2
            if isinstance(e, UsageError):
                raise
            return _error_verdict(str(e)), self.context()
        if concrete is not self.plan:
            self.say(f"plan: {concrete.format()} (drawn from --seed {c['seed']})")
        self.plan = concrete
        stall = self.stall_s if self.stall_s is not None else stall_limit(base_trace)

        index = write_auto_index(base_trace, os.path.join(self.folder.root, "auto_index.json")) if self.auto else None
        t1 = time.monotonic()
        launches, trace = {}, None
        for a in range(len(concrete) + 1):
            fault = concrete[a] if a < len(concrete) else None
            nproc = c["nproc"] if a == 0 or self.resume_nproc is None else self.resume_nproc
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

            spec = attempt_spec(self.tgt, self.folder, nproc=nproc, backend=c["backend"],
                                script_args=self.script_args, role="trial", attempt=a, fault=fault,
                                timeout_s=self.timeout_s, watch=watch, auto=bool(self.auto), index=index,
                                strategy=self.strategy)
            result = launches[a] = self.launcher.launch(spec)
            trace = load_trace(self.folder.trace_dir)
            fired = [row for row in trace.faults() if row.attempt == a]
            finished = all(trace.finished(r, a) for r in range(nproc))
            stopped = result.stopped
            self.say(_attempt_line(a, fault, fired, finished, result, self.timeout_s))
            if result.timed_out or stopped:
                self.timings["trial_s"] = round(time.monotonic() - t1, 3)
                reason = stopped or f"no end within --timeout {self.timeout_s:g} s"
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
        if self.resume_nproc is not None:
            from harness.oracle import RankEnd
            from harness.oracle.elastic import DEFAULT_LOSS_RTOL, assess_elastic

            ends = [RankEnd(e.rank, e.returncode, e.torn_down, log_tail(e.log_path)) for e in last.exits]
            verdict = assess_elastic(base_trace, trace, nproc=c["nproc"], resume_nproc=self.resume_nproc,
                                     n_faults=len(concrete), last_exits=ends, launched=len(launches),
                                     loss_rtol=DEFAULT_LOSS_RTOL if self.loss_rtol is None else self.loss_rtol)
            self.timings["compare_s"] = round(time.monotonic() - t2, 3)
            return verdict, self.context(launches)
        comparison = compare_runs(base_trace, trace)  # the traces as loaded above: no process writes them now
        if self.auto:
            comparison.compared["not_recorded"] = auto_not_recorded(base_trace)
        ends = [RankEnd(e.rank, e.returncode, e.torn_down, log_tail(e.log_path)) for e in last.exits]
        artefacts = self._artefacts(baseline, comparison)
        verdict = assess(comparison, trace, n_faults=len(concrete), last_exits=ends, launched=len(launches),
                         artefacts=artefacts, accept_rng=self.accept_rng,
                         accept_lost_progress=self.accept_lost_progress)
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


__all__ = ["run", "replay_command", "resolve_backend", "cuda_available", "default_out_dir", "BACKENDS",
           "DEFAULT_TIMEOUT_S", "check_plan_ranks", "check_plan_against_baseline", "Baseline"]
