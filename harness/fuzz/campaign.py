"""The fuzz loop: Hypothesis searches fault plans, each example is one kill/resume trial.

    result = Campaign(CampaignConfig("default", trials=200, seed=0, out_dir="fuzz-out")).run()
    result.exit_code   # 0 every trial passed, 1 a failing plan (shrunk; 3 when it is rng_only), 2 harness
                       # error or nothing exercised a resume, 4 only stalls, 130 interrupted

A script is fuzzed as ``harness run`` tests it: the baseline is made by the same rule
(``harness.engine.baseline.baseline_with_mode``: a script with no probe calls is recorded in auto mode,
``--auto`` forces it), and every trial runs in the mode the baseline was recorded in. In auto mode
the script's own save calls are fault points (``torch.save:N``, ``safetensors.save_file:N``,
``dcp.save:N``, ``deepspeed.save_checkpoint:N``, ``checkpoint.committed:N`` after each).

A plan whose first fault fires before the first complete checkpoint (``FaultSpace.before_first_checkpoint``)
can only restart from scratch ("no resume tested"). Such plans run once per class (where the fault is:
a step or the point's name, its rank, its signal); once that trial gave an error (``not_resumed``, or
a stall), later plans of the class are rejected without a trial (``skipped_early``). A class whose
trial passed or failed (a SIGTERM handler that saves, a rank that resumed alone) keeps being tried:
the baseline's prediction was wrong for it.

How Hypothesis is used: ``hypothesis.find(space.strategy(), is_failure, ...)``. ``is_failure(plan)``
runs one trial (``harness.engine.run`` with one warm ForkServerLauncher and the cached baseline) and
returns True on a ``fail`` verdict, False on a pass; an error of exercise (the fault never fired, the
job survived it, there was no checkpoint to resume from, a fault was never armed) is not a bug and
is rejected (``hypothesis.reject()``; a plan whose later step fault comes before the checkpoint the
job will resume from is rejected without a trial: ``FaultSpace.unreachable``), as is an error of
the job before any resume (a crash in attempt 0: ``BEFORE_RESUME_ERRORS``, reported apart);
a harness error (baseline_failed, error) stops the campaign. Every ``fail`` verdict is a failure,
whatever its outcome (divergence, rng_only, lost_progress, ...), reported by its outcome's name.

Load is no bug: a trial that stalled (outcome ``stall``: no rank recorded anything for the stall
limit) or hung before any resume (``timeout`` with verdict error), ``harness.engine.monitor.is_stall``,
is run again, up to ``stall_retries`` times; if it stalls every time it is rejected and reported apart
(``stalled``), never a failure, so a stall cannot become the minimal failing example; a campaign
with stalled trials and no failure exits 4 (not a pass).

The baseline is checked first: a target whose two uninterrupted runs differ is not fuzzed (no trial
runs; stop ``nondeterministic_baseline``, with the first difference and a hint, exit 1): every trial
would fail the same way whatever its plan. Hypothesis's engine
generates the plans, replays the failures stored in its example database first, and shrinks a
failure to a minimal plan; ``--seed`` seeds it (``seeded``: the seed ``--hypothesis-seed`` sets,
which keeps the database), so a seed and a database replay the same campaign.

Stopping: the trial budget (``trials``) and the time budget (``time_s``) are checked before each
new trial of the search; once a failure is found, shrinking runs to its end (at most
``MAX_SHRINK_TRIALS`` trials). Ctrl-C stops at once: the running trial's processes are reaped by the
launcher, the launcher is closed, and the result covers what ran so far.

Files under ``out_dir``: ``trials/tNNNN`` per trial (deleted once it passed or was rejected; the
minimal failure's is kept), ``baseline/`` (a failed baseline's logs), the repro file of a failure,
and ``fuzz.json`` (the campaign's result).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import shutil
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Callable

from harness.engine.monitor import is_stall
from harness.faults import SIGNALS, FaultPlan
from harness.fuzz.coverage import Coverage, CoverageCounter
from harness.fuzz.space import EarlyKillGate, FaultSpace
from harness.settings import DEFAULT_TIMEOUT_S

#: Outcomes of a trial that did not exercise what the plan asked for: not bugs, rejected and counted.
EXERCISE_ERRORS = frozenset({"fault_not_fired", "fault_survived", "not_resumed", "fault_not_armed"})
#: Errors of the job before any resume (a rank crashed before its fault): not resume bugs either; rejected,
#: counted, and warned about. (A hang of attempt 0, ``timeout`` with verdict error, is a stall: retried.)
BEFORE_RESUME_ERRORS = frozenset({"crash"})
#: Every outcome that rejects a plan; any other ``error`` verdict (baseline_failed, error) stops the campaign.
#: Stalls (``harness.engine.monitor.is_stall``) are retried first, then rejected and reported apart.
REJECTED_OUTCOMES = EXERCISE_ERRORS | BEFORE_RESUME_ERRORS
#: How many times a trial that stalled is run again before it is reported as stalled.
DEFAULT_STALL_RETRIES = 1
#: The campaign's exit code when trials stalled (and none failed): the outcome ``stall``'s.
EXIT_STALLED = 4
#: The campaign's exit code when the minimal failing plan is ``rng_only``: the outcome's own (harness run's).
EXIT_RNG_ONLY = 3
#: A plan that the engine refused before running (never expected from the space; rejected if it happens).
INVALID_PLAN = "invalid_plan"
#: Trials that shrinking a failure may run beyond the search budget; the best plan so far is reported past it.
MAX_SHRINK_TRIALS = 300
#: Plans in a campaign when neither ``trials`` nor ``time_s`` is given.
DEFAULT_TRIALS = 100


class StopReason(str, enum.Enum):
    """Why a campaign ended."""

    TRIALS = "trials"  # the trial budget was spent
    TIME = "time"  # the time budget was spent
    EXHAUSTED = "exhausted"  # Hypothesis had no new plan to try (a small space), or its example limit
    FAILURE = "failure"  # a failing plan was found and shrunk
    SHRINK_LIMIT = "shrink_limit"  # a failing plan was found; shrinking stopped at MAX_SHRINK_TRIALS
    INTERRUPTED = "interrupted"  # Ctrl-C
    HARNESS_ERROR = "harness_error"  # a trial's verdict was a harness error (crash before any fault, ...)
    BASELINE_FAILED = "baseline_failed"  # the uninterrupted run failed: nothing was fuzzed
    NONDETERMINISTIC_BASELINE = "nondeterministic_baseline"  # two uninterrupted runs differ: nothing was fuzzed

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CampaignConfig:
    """What to fuzz and for how long. ``db``: Hypothesis's example database folder (None: no database).

    target, nproc, seed, backend, timeout_s, stall_s, script_args and auto are the trials' settings:
    ``spec`` is their TrialSpec (checked by its rules), and every trial runs
    ``dataclasses.replace(spec, plan=...)`` (with the backend resolved and the baseline's mode)."""

    target: str = "default"
    nproc: int = 2
    seed: int = 0
    trials: int | None = None
    time_s: float | None = None
    max_faults: int = 3
    backend: str = "auto"
    timeout_s: float = DEFAULT_TIMEOUT_S
    stall_s: float | None = None
    script_args: tuple[str, ...] = ()
    db: str | None = None
    out_dir: str = "harness-out/fuzz"
    signals: tuple[str, ...] = SIGNALS
    stall_retries: int = DEFAULT_STALL_RETRIES  # runs again of a trial that stalled (is_stall)
    auto: bool | None = None  # auto mode: True (--auto), False (never), None (harness run's rule)
    scratch: str = "tmpfs"  # where each trial's run folder lives (TrialSpec.scratch: tmpfs or disk)

    def __post_init__(self):
        object.__setattr__(self, "script_args", tuple(self.script_args))
        object.__setattr__(self, "signals", tuple(self.signals))

    @property
    def spec(self):
        """The trials' TrialSpec (plan: random until each trial replaces it); UsageError names a bad field."""
        from harness.engine.spec import TrialSpec

        return TrialSpec(target=self.target, nproc=self.nproc, seed=self.seed, backend=self.backend,
                         timeout_s=self.timeout_s, stall_s=self.stall_s, script_args=self.script_args, auto=self.auto,
                         scratch=self.scratch)


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the campaign."""

    index: int
    plan: str
    verdict: str
    outcome: str
    seconds: float
    phase: str  # "search" or "shrink"
    retries: int = 0  # runs again after a stall (the last run's verdict is the record's)


@dataclass(frozen=True)
class Failure:
    """A failing plan, as small as Hypothesis could make it."""

    plan: str
    replay: str
    outcome: str
    message: str
    first_divergence: dict | None
    out_dir: str
    found_plan: str  # the first failing plan, before shrinking
    shrink_trials: int
    shrunk: bool  # False when shrinking was cut short (Ctrl-C, MAX_SHRINK_TRIALS)
    repro: str | None = None  # the repro file written for it
    result: object = field(default=None, repr=False, compare=False)  # the RunResult

    def to_json(self) -> dict:
        return {"plan": self.plan, "replay": self.replay, "outcome": self.outcome, "message": self.message,
                "first_divergence": self.first_divergence, "out_dir": self.out_dir, "found_plan": self.found_plan,
                "shrink_trials": self.shrink_trials, "shrunk": self.shrunk, "repro": self.repro}


@dataclass(frozen=True)
class CampaignResult:
    """The result of a campaign: counts, failures, coverage, and why it stopped."""

    target: str
    nproc: int
    backend: str
    seed: int
    stop: StopReason
    trials: int
    passes: int
    failed_trials: int  # trials with a fail verdict (the search's and shrinking's)
    rejected: tuple[tuple[str, int], ...]
    failures: tuple[Failure, ...]
    coverage: Coverage
    space: FaultSpace | None
    elapsed_s: float  # the whole campaign
    fuzz_s: float  # the trials only (no baseline)
    message: str = ""
    log_tail: str | None = None
    out_dir: str = ""
    db: str | None = None
    shrink_trials: int = 0
    before_resume: tuple[tuple[str, str], ...] = ()  # (plan, outcome) of the trials in BEFORE_RESUME_ERRORS
    unreachable: int = 0  # plans rejected without a trial: a later fault could not fire (FaultSpace.unreachable)
    trial_seconds: tuple[float, ...] = field(default=(), repr=False)
    stalled: tuple[tuple[str, str], ...] = ()  # (plan, outcome) of the trials that stalled on every run
    stall_retries: int = 0  # runs again of stalled trials, in all
    hint: str | None = None  # what to check (a nondeterministic baseline)
    auto: bool = False  # the script was tested in auto mode (no probe calls, or --auto)
    skipped_early: int = 0  # plans rejected without a trial: before the first complete checkpoint, class tried

    @property
    def trials_per_minute(self) -> float:
        return 60.0 * self.trials / self.fuzz_s if self.fuzz_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.failures:
            # what harness run exits with for the minimal plan: 3 when it is rng_only (training bit-exact,
            # an RNG stream off), else 1
            return EXIT_RNG_ONLY if all(f.outcome == "rng_only" for f in self.failures) else 1
        if self.stop is StopReason.NONDETERMINISTIC_BASELINE:
            return 1
        if self.stop is StopReason.INTERRUPTED:
            return 130
        if self.stop in (StopReason.HARNESS_ERROR, StopReason.BASELINE_FAILED):
            return 2
        if self.stalled:
            return EXIT_STALLED  # plans left untested because the machine was too loaded: not a pass
        if self.passes == 0:
            return 2  # nothing exercised a resume: not a pass
        return 0

    def to_json(self) -> dict:
        return {
            "target": self.target, "nproc": self.nproc, "backend": self.backend, "seed": self.seed,
            "stop": self.stop.value, "exit_code": self.exit_code, "message": self.message,
            "trials": self.trials, "passes": self.passes, "failed_trials": self.failed_trials,
            "rejected": dict(self.rejected), "unreachable": self.unreachable, "shrink_trials": self.shrink_trials,
            "failures": [f.to_json() for f in self.failures], "coverage": self.coverage.to_json(),
            "space": self.space.to_json() if self.space else None,
            "elapsed_s": round(self.elapsed_s, 3), "fuzz_s": round(self.fuzz_s, 3),
            "trials_per_minute": round(self.trials_per_minute, 1), "out_dir": self.out_dir, "db": self.db,
            "log_tail": self.log_tail, "before_resume": [{"plan": p, "outcome": o} for p, o in self.before_resume],
            "stalled": [{"plan": p, "outcome": o} for p, o in self.stalled], "stall_retries": self.stall_retries,
            "hint": self.hint, "auto": self.auto, "skipped_early": self.skipped_early,
        }


@dataclass(frozen=True)
class Progress:
    """What a progress display is told after each trial."""

    trials: int
    failures: int
    rejected: int
    elapsed_s: float  # since the first trial
    phase: str
    plan: str
    budget_trials: int | None
    budget_s: float | None


class _Stop(BaseException):
    """Raised inside the Hypothesis test to end the search (a BaseException: Hypothesis lets it through)."""

    def __init__(self, reason: StopReason, message: str = ""):
        super().__init__(reason.value)
        self.reason, self.message = reason, message


@contextmanager
def seeded(seed: int):
    """Seed Hypothesis's search while keeping its example database.

    ``hypothesis.seed`` and ``settings(derandomize=True)`` both turn the database off (a seeded run is
    meant to reproduce, not to remember). The seed that Hypothesis's pytest plugin sets for
    ``--hypothesis-seed`` (``hypothesis.core.global_force_seed``) keeps it: with an explicit database key
    the database is replayed first and a new failure is saved, and the generated plans are the
    seed's. Restored on exit.
    """
    from hypothesis import core

    from harness import private_apis

    private_apis.require("hypothesis")
    before = core.global_force_seed
    core.global_force_seed = seed
    try:
        yield
    finally:
        core.global_force_seed = before


def database_key(config: CampaignConfig, space: FaultSpace, backend: str) -> bytes:
    """Examples are stored per job and space: the same job replays its earlier failures first."""
    ident = {"target": config.target, "args": list(config.script_args), "nproc": config.nproc, "backend": backend,
             "space": space.to_json()}
    return b"harness-fuzz:" + hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32].encode()


class Campaign:
    """One campaign. ``run()`` returns a CampaignResult and never raises for what trials do; it raises
    ``harness.engine.UsageError`` for a bad target or configuration, found before any trial."""

    def __init__(self, config: CampaignConfig, *, on_trial: Callable[[Progress], None] | None = None,
                 say: Callable[[str], None] | None = None, launcher=None,
                 write_repro: Callable | None = None):
        self.config = config
        self.on_trial = on_trial or (lambda p: None)
        self.say = say or (lambda line: None)
        self._launcher = launcher
        self._write_repro = write_repro or write_repro_file
        self.records: list[TrialRecord] = []
        self._cache: dict[str, object] = {}  # plan -> RunResult (Hypothesis may draw one plan twice)
        self._found = None  # the first failing RunResult
        self._best = None  # the smallest failing RunResult so far
        self._t_first: float | None = None
        self._unreachable = 0  # plans rejected without a trial (FaultSpace.unreachable)
        self.auto = False  # the mode the baseline was recorded in (set by _baseline)
        self._early = None  # EarlyKillGate over the space, once the space exists

    # -- checks before anything runs -----------------------------------------------------------
    def _check(self):
        from harness.engine import UsageError, resolve_backend, resolve_target

        c = self.config
        if c.trials is not None and (not isinstance(c.trials, int) or c.trials < 1):
            raise UsageError(f"--trials must be an integer >= 1, got {c.trials!r}")
        if c.time_s is not None and not c.time_s > 0:
            raise UsageError(f"--time must be > 0, got {c.time_s!r} s")
        if not isinstance(c.max_faults, int) or c.max_faults < 1:
            raise UsageError(f"--max-faults must be an integer >= 1, got {c.max_faults!r}")
        if not isinstance(c.stall_retries, int) or isinstance(c.stall_retries, bool) or c.stall_retries < 0:
            raise UsageError(f"stall_retries must be an integer >= 0, got {c.stall_retries!r}")
        spec = c.spec  # the trial settings' own rules (UsageError names the field)
        target = resolve_target(spec.target)
        self._spec = spec.replace(target=target.name, backend=resolve_backend(spec.backend))
        return target, self._spec.backend

    # -- the campaign ---------------------------------------------------------------------------
    def run(self) -> CampaignResult:
        target, backend = self._check()
        self.backend = backend
        c = self.config
        os.makedirs(c.out_dir, exist_ok=True)
        t0 = time.monotonic()
        self.counter = CoverageCounter()
        space = None
        stop, message, log_tail, hint = StopReason.EXHAUSTED, "", None, None
        from harness.launch.factory import borrowed

        with borrowed(self._launcher) as self._launcher:
            try:
                baseline, space = self._baseline(target, backend)
                if baseline.error is not None:
                    stop, log_tail = StopReason.BASELINE_FAILED, baseline.log_tail
                    message = f"the baseline run failed: {baseline.error}"
                elif baseline.repro is not None and baseline.repro.first is not None:
                    # every trial would fail the same way, whatever its plan: nothing to search or shrink
                    from harness.oracle import assess

                    v = assess(None, None, baseline_repro=baseline.repro)
                    stop, message, hint = StopReason.NONDETERMINISTIC_BASELINE, v.message, v.hint
                    self.say(f"baseline: {v.outcome}: {v.message}")
                else:
                    self.counter = CoverageCounter(space)
                    stop, message = self._search(space, backend)
            except KeyboardInterrupt:
                stop, message = StopReason.INTERRUPTED, "interrupted (Ctrl-C); every process was stopped"
            except _Stop as s:
                stop, message = s.reason, s.message
        failures = self._failures(stop)
        if failures and stop not in (StopReason.INTERRUPTED, StopReason.SHRINK_LIMIT):
            stop = StopReason.FAILURE
        self._cleanup(failures)
        elapsed = time.monotonic() - t0
        fuzz_s = time.monotonic() - self._t_first if self._t_first is not None else 0.0
        from harness.oracle import VerdictKind

        stalled = [r for r in self.records if is_stall(r.verdict, r.outcome)]  # reported apart, not rejected
        outcomes = Counter(r.outcome for r in self.records
                           if r.verdict == VerdictKind.ERROR and not is_stall(r.verdict, r.outcome))
        result = CampaignResult(
            target=target.name, nproc=c.nproc, backend=backend, seed=c.seed, stop=stop, trials=len(self.records),
            passes=sum(r.verdict == VerdictKind.PASS for r in self.records),
            failed_trials=sum(r.verdict == VerdictKind.FAIL for r in self.records), rejected=tuple(sorted(outcomes.items())),
            failures=failures, coverage=self.counter.snapshot(), space=space, elapsed_s=elapsed, fuzz_s=fuzz_s,
            message=message, log_tail=log_tail, out_dir=os.path.abspath(c.out_dir), db=c.db,
            shrink_trials=sum(r.phase == "shrink" for r in self.records),
            before_resume=tuple((r.plan, r.outcome) for r in self.records if r.outcome in BEFORE_RESUME_ERRORS),
            unreachable=self._unreachable,
            trial_seconds=tuple(r.seconds for r in self.records),
            stalled=tuple((r.plan, r.outcome) for r in stalled), stall_retries=sum(r.retries for r in self.records),
            hint=hint, auto=self.auto, skipped_early=self._early.skipped if self._early is not None else 0)
        with open(os.path.join(c.out_dir, "fuzz.json"), "w") as f:
            json.dump(result.to_json(), f, indent=1)
        return result

    def _baseline(self, target, backend):
        """The cached baseline (run once if missing, twice for a script: its reproducibility is checked)
        and the space derived from its trace."""
        from harness.engine.baseline import baseline_with_mode

        c = self.config
        self.say("baseline ...")
        baseline, self.auto = baseline_with_mode(
            target, self._spec, runs=1 if target.builtin else 2, launcher=self._launcher, use_cache=True,
            runs_dir=os.path.join(os.path.abspath(c.out_dir), "baseline"), progress=self.say)
        self._spec = self._spec.replace(auto=self.auto)  # every trial in the baseline's mode
        if baseline.error is not None or (baseline.repro is not None and baseline.repro.first is not None):
            return baseline, None
        space = FaultSpace.from_trace(baseline.trace(), nproc=c.nproc, max_faults=c.max_faults,
                                      signals=c.signals, auto=self.auto)
        self.say(describe_space(space))
        return baseline, space

    def _search(self, space: FaultSpace, backend: str) -> tuple[StopReason, str]:
        from hypothesis import HealthCheck, Phase, Verbosity, find, settings
        from hypothesis.database import DirectoryBasedExampleDatabase
        from hypothesis.errors import NoSuchExample, Unsatisfiable

        c = self.config
        self._space = space
        trials = c.trials if c.trials is not None else (None if c.time_s is not None else DEFAULT_TRIALS)
        self._budget = (trials, c.time_s)
        db = DirectoryBasedExampleDatabase(c.db) if c.db else None
        config = settings(database=db, max_examples=10 * trials if trials else 10**6, deadline=None, derandomize=False,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
                          verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck), print_blob=False)
        try:
            with seeded(c.seed):
                find(space.strategy(), self._is_failure, settings=config,
                     database_key=database_key(c, space, backend) if db else None)
        except NoSuchExample:
            return (StopReason.TRIALS if trials and len(self.records) >= trials else StopReason.EXHAUSTED), ""
        except Unsatisfiable:
            return StopReason.EXHAUSTED, "every plan tried was rejected: none exercised a resume"
        return StopReason.FAILURE, ""

    def _is_failure(self, plan: FaultPlan) -> bool:
        """The condition Hypothesis searches for: this plan's trial fails."""
        from hypothesis import reject

        from harness.oracle import VerdictKind

        if self._space.unreachable(plan) is not None:  # would end as fault_not_fired: not worth a trial
            self._unreachable += 1
            reject()
        if self._early is None:
            self._early = EarlyKillGate(self._space)
        if plan.format() not in self._cache and not self._early.admit(plan):
            reject()  # its class already gave "no resume tested" (before the first checkpoint): another one would too
        result = self._trial(plan)
        if result is not None:
            # an error (not_resumed; a stall too, which is retried already) closes the class: one trial each
            self._early.record(plan, VerdictKind.ERROR if is_stall(result.verdict, result.outcome) else result.verdict)
        if result is None:  # the engine refused the plan before running it
            reject()
        if is_stall(result.verdict, result.outcome):  # load, not the plan: never a failure, never shrunk to
            reject()
        if result.verdict == VerdictKind.FAIL:  # every failing outcome: divergence, rng_only, lost_progress, ...
            return True
        if result.verdict == VerdictKind.PASS:
            return False
        if str(result.outcome) in REJECTED_OUTCOMES:
            reject()
        raise _Stop(StopReason.HARNESS_ERROR, f"plan {result.plan}: {result.outcome}: {result.message} "
                                              f"(replay: {result.replay})")

    def _trial(self, plan: FaultPlan):
        from harness.engine import UsageError, run
        from harness.oracle import VerdictKind

        key = plan.format()
        if key in self._cache:
            return self._cache[key]
        c = self.config
        phase = "shrink" if self._found is not None else "search"
        now = time.monotonic()
        if self._t_first is None:
            self._t_first = now
        trials, time_s = self._budget
        searched = sum(r.phase == "search" for r in self.records)
        if phase == "search" and trials is not None and searched >= trials:
            raise _Stop(StopReason.TRIALS)
        if phase == "search" and time_s is not None and now - self._t_first >= time_s:
            raise _Stop(StopReason.TIME)
        if phase == "shrink" and len(self.records) - searched >= MAX_SHRINK_TRIALS:
            raise _Stop(StopReason.SHRINK_LIMIT, f"shrinking stopped after {MAX_SHRINK_TRIALS} trials")
        out = os.path.join(os.path.abspath(c.out_dir), "trials", f"t{len(self.records) + 1:04d}")
        retries = 0
        while True:
            shutil.rmtree(out, ignore_errors=True)
            try:
                result = run(dataclasses.replace(self._spec, plan=plan), out_dir=out, use_cache=True,
                             launcher=self._launcher, keep_run=False)
            except UsageError:
                shutil.rmtree(out, ignore_errors=True)
                self._record(key, INVALID_PLAN, "error", now, phase, plan, retries)
                self._cache[key] = None
                return None
            except BaseException as e:
                shutil.rmtree(out, ignore_errors=True)
                if isinstance(e, Exception):  # a harness bug: never let Hypothesis take it for a failing plan
                    raise _Stop(StopReason.HARNESS_ERROR, f"plan {key}: internal error: {type(e).__name__}: {e}\n"
                                                          + traceback.format_exc()) from e
                raise
            if not is_stall(result.verdict, result.outcome) or retries >= c.stall_retries:
                break
            retries += 1  # the machine was too loaded to judge this plan: run it again
            self.say(f"plan {key}: {result.outcome} ({result.message}); running it again "
                     f"({retries}/{c.stall_retries})")
        self._cache[key] = result
        if result.verdict == VerdictKind.FAIL:
            if self._found is None:
                self._found = result
            if self._best is not None:
                shutil.rmtree(self._best.out_dir, ignore_errors=True)
            self._best = result  # Hypothesis only tries plans smaller than its current failure
        else:
            shutil.rmtree(out, ignore_errors=True)
        self._record(key, str(result.outcome), result.verdict, now, phase, plan, retries)
        return result

    def _record(self, key, outcome, verdict, t, phase, plan, retries=0):
        from harness.oracle import VerdictKind

        self.records.append(TrialRecord(len(self.records) + 1, key, verdict, outcome,
                                        round(time.monotonic() - t, 3), phase, retries))
        self.counter.add(plan)
        trials, time_s = self._budget
        self.on_trial(Progress(trials=len(self.records), failures=int(self._found is not None),
                               rejected=sum(r.verdict == VerdictKind.ERROR and not is_stall(r.verdict, r.outcome)
                                            for r in self.records),
                               elapsed_s=time.monotonic() - self._t_first, phase=phase, plan=key,
                               budget_trials=trials, budget_s=time_s))

    def _failures(self, stop: StopReason) -> tuple[Failure, ...]:
        best = self._best
        if best is None:
            return ()
        shrink = sum(r.phase == "shrink" for r in self.records)
        repro = None
        try:
            c = self.config
            repro = self._write_repro(best, os.path.join(c.out_dir, "repro"))
        except OSError as e:
            self.say(f"could not write the repro file: {e}")
        d = best.first_divergence
        return (Failure(plan=best.plan, replay=best.replay, outcome=str(best.outcome), message=best.message,
                        first_divergence=d.to_json() if d is not None else None, out_dir=str(best.out_dir),
                        found_plan=self._found.plan, shrink_trials=shrink,
                        shrunk=stop not in (StopReason.INTERRUPTED, StopReason.SHRINK_LIMIT),
                        repro=repro, result=best),)

    def _cleanup(self, failures) -> None:
        """Remove every trial folder but the minimal failure's."""
        keep = {os.path.abspath(f.out_dir) for f in failures}
        root = os.path.join(os.path.abspath(self.config.out_dir), "trials")
        if not os.path.isdir(root):
            return
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if path not in keep:
                shutil.rmtree(path, ignore_errors=True)
        if not os.listdir(root):
            os.rmdir(root)


def describe_space(space: FaultSpace) -> str:
    """The progress line about what the baseline offers: steps, complete checkpoints, points, boundaries."""
    first = space.first_checkpoint
    ckpt = (f"{len(space.committed)} complete checkpoint(s) (steps {', '.join(map(str, space.committed))})"
            if space.committed else "no complete checkpoint (every kill can only restart from scratch)")
    points = ", ".join(f"{n} x{k}" for n, k in space.points) or "none"
    line = (f"baseline: {space.last_step} steps, {ckpt}; fault points: {points}; "
            f"boundary steps {', '.join(map(str, space.boundary_steps))}")
    if first is not None:
        line += f"; kills up to step {first} can only restart from scratch: one trial per class"
    return line


def write_repro_file(result, stem: str) -> str:
    """Write the bug report of a failing RunResult (``harness.repro``, TOML: the trial's spec) and return its path.

    ``harness repro <path>`` reruns it. Where ``harness.repro`` cannot write it (e.g. the target is
    gone), a JSON file with the RunResult (plan, replay command, first divergence) is written instead.
    """
    from harness.repro import Repro, ReproError

    try:
        return Repro.from_result(result).dump(stem + ".toml")
    except ReproError:
        path = stem + ".json"
        with open(path, "w") as f:
            json.dump(result.to_json(), f, indent=1)
        return path


__all__ = ["Campaign", "CampaignConfig", "CampaignResult", "Failure", "TrialRecord", "Progress", "StopReason",
           "EXERCISE_ERRORS", "BEFORE_RESUME_ERRORS", "REJECTED_OUTCOMES", "DEFAULT_TRIALS", "MAX_SHRINK_TRIALS",
           "DEFAULT_STALL_RETRIES", "EXIT_STALLED", "EXIT_RNG_ONLY", "describe_space",
           "database_key", "seeded", "write_repro_file"]
