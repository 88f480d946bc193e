"""The lifecycle of a trial, checked the same way by both oracles (bit-exact: verdict.py; elastic: elastic.py).

A trial is a run killed by each fault of its plan and resumed after each. Whatever the training state
says, a PASS needs its lifecycle to have happened as planned:

    check_plan          the plan has a fault (else no resume is tested)
    check_recorded      every launched attempt recorded rows (a silent one crashed before its first probe call)
    check_last_attempt  the last attempt did not stop without a fault (a crash, or a crash on resume)
    check_faults        each fault fired, ended its attempt, and every fault of the plan was armed
    check_resumed       every attempt after a fault resumed from a checkpoint, not from step 1
    check_exit_codes    no rank of the last attempt exited non-zero after probe.finish
    check_exits_known   every rank's exit status of the last attempt is known

Each check takes a `Lifecycle` (the trial, its plan and how its last attempt's ranks ended) and returns
a `Finding`, or None when it found nothing; `first_finding` runs a sequence of them. The oracles run
`BEFORE_COMPARISON` first, and the others where their rules place them (a training divergence is
reported before a failed exit code). `timeout_verdict` judges an attempt the engine stopped (a stall, a
timeout, ranks resumed apart).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .outcome import Finding, Outcome, Verdict, VerdictKind
from .trace import AttemptSummary, Trace
from harness.trace_schema import resumed_from

FAIL, ERROR = VerdictKind.FAIL, VerdictKind.ERROR


@dataclass(frozen=True)
class RankEnd:
    """How one rank of the trial's last attempt ended (what the launcher saw)."""

    rank: int
    returncode: int | None
    torn_down: bool = False
    log_tail: str | None = None


@dataclass(frozen=True)
class Lifecycle:
    """What the lifecycle checks read: the trial, the number of faults of its plan (attempt i arms fault i),
    how each rank of its last attempt ended, and how many attempts were launched (a launched attempt may
    record nothing: a rank that crashes on resume before its first probe call). ``world``: the ranks of
    attempt a (the elastic oracle's attempts run on other world sizes); by default every rank of the trace."""

    trial: Trace
    n_faults: int = 0
    ends: Mapping[int, RankEnd] = field(default_factory=dict)
    launched: int | None = None
    world: Callable[[int], Sequence[int]] | None = None
    summary: tuple[AttemptSummary, ...] = ()

    @classmethod
    def of(cls, trial: Trace, *, n_faults: int | None = None, last_exits: Iterable[RankEnd] | None = None,
           launched: int | None = None, world: Callable[[int], Sequence[int]] | None = None) -> Lifecycle:
        return cls(trial, n_faults or 0, {e.rank: e for e in last_exits or []}, launched, world,
                   tuple(trial.attempt_summary()))

    def ranks(self, attempt: int) -> list[int]:
        return list(self.world(attempt)) if self.world is not None else list(self.trial.ranks)

    def finished(self, attempt: int) -> bool:
        """Every rank of the attempt recorded a finish row in it."""
        ranks = self.ranks(attempt)
        return bool(ranks) and all(self.trial.finished(r, attempt) for r in ranks)

    @property
    def last(self) -> AttemptSummary:
        return self.summary[-1]


Check = Callable[[Lifecycle], "Finding | None"]


def first_finding(life: Lifecycle, checks: Iterable[Check]) -> Finding | None:
    """The finding of the first check that finds something, in order."""
    for check in checks:
        found = check(life)
        if found is not None:
            return found
    return None


def check_plan(life: Lifecycle) -> Finding | None:
    if life.n_faults < 1:
        return Finding(ERROR, Outcome.FAULT_NOT_ARMED, "the plan has no fault, so no resume was tested",
                       hint="give a fault plan (--kill STEP, or --kill random)")
    return None


def check_recorded(life: Lifecycle) -> Finding | None:
    """Every launched attempt recorded a row; a silent last attempt after a resume crashed while loading."""
    if not life.summary:
        return Finding(ERROR, Outcome.ERROR, "the trial recorded no trace row: did its ranks start? See attempt0/rank*.log")
    recorded = {s.attempt for s in life.summary}
    silent = (life.launched or 0) - 1
    if silent > max(recorded):
        crashed = sorted((e for e in life.ends.values() if not e.torn_down and e.returncode not in (0, None)),
                         key=lambda e: e.rank)
        if crashed:
            e = crashed[0]
            return Finding(FAIL, Outcome.CRASH_ON_RESUME,
                           f"rank {e.rank} {_how(e)} in attempt {silent}, after the resume, before it recorded anything "
                           f"(while loading the checkpoint?)", log_tail=e.log_tail)
        return Finding(ERROR, Outcome.ERROR, f"attempt {silent} recorded no trace row: did its ranks start? "
                                             f"See attempt{silent}/rank*.log")
    for a in range(max(recorded) + 1):
        if a not in recorded:
            return Finding(ERROR, Outcome.ERROR, f"attempt {a} recorded no trace row: did its ranks start? "
                                                 f"See attempt{a}/rank*.log")
    return None


def check_last_attempt(life: Lifecycle) -> Finding | None:
    """The last attempt ended without finishing and without a fault: a crash (attempt 0: before any fault, so
    not a resume bug; later: after the resume)."""
    last = life.last
    if life.finished(last.attempt) or last.fault is not None:
        return None
    a = last.attempt
    r = _crashed_rank(life, a)
    end = life.ends.get(r)
    steps = [row.step for row in life.trial.steps(r, a)] if r is not None else []
    at = f"its last step was {max(steps)}" if steps else "it recorded no step"
    how = f" (exit code {end.returncode})" if end is not None and end.returncode is not None else ""
    tail = end.log_tail if end is not None else None
    if a > 0:
        return Finding(FAIL, Outcome.CRASH_ON_RESUME, f"rank {r} crashed in attempt {a}, after the resume{how}; {at}",
                       log_tail=tail)
    return Finding(ERROR, Outcome.CRASH, f"rank {r} crashed in attempt 0, before any fault fired{how}; {at}",
                   log_tail=tail)


def check_faults(life: Lifecycle) -> Finding | None:
    """Each fault of the plan fired, ended its attempt (no rank it fired on ran to the end), and was armed."""
    n_faults = life.n_faults
    for s in life.summary:
        if s.attempt >= n_faults:
            break
        if s.fault is None and life.finished(s.attempt):
            return Finding(ERROR, Outcome.FAULT_NOT_FIRED,
                           f"fault {s.attempt + 1} of the plan never fired: attempt {s.attempt} finished "
                           f"at step {s.last_step} without reaching it",
                           hint="check the step is within the run and the point name is one the script reaches")
        fired_on = {row.rank for row in life.trial.faults() if row.attempt == s.attempt}
        survived = sorted(fired_on & set(s.finished_ranks))
        if s.fault is not None and survived:
            sig = s.fault.fault.get("signal", "SIGKILL") if isinstance(s.fault.fault, dict) else "SIGKILL"
            later = n_faults - s.attempt - 1
            never = f"; {later} later fault(s) of the plan were never armed" if later else ""
            return Finding(ERROR, Outcome.FAULT_SURVIVED,
                           f"fault {s.attempt + 1} ({_fault_text(s.fault)}) fired, but rank(s) {survived} ran to the "
                           f"end of attempt {s.attempt}: the process survived it, so no resume was tested{never}",
                           hint=_SURVIVED_HINT.get(sig))
    if len(life.summary) < n_faults + 1:
        return Finding(ERROR, Outcome.FAULT_NOT_ARMED,
                       f"the trial ended after {len(life.summary)} attempt(s); fault(s) {len(life.summary) + 1}.."
                       f"{n_faults} of the plan were never armed")
    return None


#: The lifecycle checks both oracles run before they compare any training state, in this order.
BEFORE_COMPARISON: tuple[Check, ...] = (check_plan, check_recorded, check_last_attempt, check_faults)


def split_resumes(summary: Sequence[AttemptSummary]) -> tuple[list, list]:
    """(restarts, resumes): each a list of (the attempt after a fault, the attempt with the fault). An attempt
    resumed when it loaded a checkpoint or began past step 1; else it restarted from scratch."""
    restarts, resumes = [], []
    for prev, nxt in zip(summary, summary[1:]):
        if prev.fault is None:
            continue
        if not nxt.loaded and (nxt.first_step is None or nxt.first_step <= 1):
            restarts.append((nxt, prev))
        else:
            resumes.append((nxt, prev))
    return restarts, resumes


def restart_warnings(restarts) -> list[str]:
    return [f"attempt {nxt.attempt} restarted from step 1 although checkpoint(s) at step(s) "
            f"{list(prev.committed_steps)} were committed before the kill"
            for nxt, prev in restarts if prev.committed_steps]


def check_resumed(life: Lifecycle) -> Finding | None:
    """Every attempt after a fault resumed: a restart from step 1 although a checkpoint was complete before the
    kill fails; with none complete, resumption was not tested (error)."""
    for nxt, prev in split_resumes(life.summary)[0]:
        kill = fault_where(prev.fault)
        if prev.committed_steps:
            return Finding(FAIL, Outcome.NOT_RESUMED,
                           f"checkpoint(s) at step(s) {list(prev.committed_steps)} were committed before the kill "
                           f"{kill}, but attempt {nxt.attempt} restarted from step 1 without loading one")
        return Finding(ERROR, Outcome.NOT_RESUMED,
                       f"no resume tested: no checkpoint was complete before the kill {kill}, so attempt "
                       f"{nxt.attempt} restarted from scratch; this plan did not test resumption",
                       hint="kill after the first complete checkpoint (--kill random draws such a step); a script "
                            "that saves nothing never resumes")
    return None


def check_exit_codes(life: Lifecycle) -> Finding | None:
    """No rank of the last attempt exited non-zero (or was killed) after it finished."""
    failed = [e for e in life.ends.values() if not e.torn_down and e.returncode not in (0, None)]
    if not failed:
        return None
    e = min(failed, key=lambda e: e.rank)
    a = life.last.attempt
    return Finding(FAIL if a > 0 else ERROR, Outcome.CRASH_ON_RESUME if a > 0 else Outcome.CRASH,
                   f"rank {e.rank} {_how(e)} after probe.finish in attempt {a}"
                   f"{', after the resume' if a > 0 else ''}; the baseline exited 0", log_tail=e.log_tail,
                   hint="the script failed at its end: a check at exit (duplicated log or metric rows after a "
                        "resume are the classic), or a teardown error")


def check_exits_known(life: Lifecycle) -> Finding | None:
    unknown = sorted(e.rank for e in life.ends.values() if e.returncode is None and not e.torn_down)
    if unknown:
        return Finding(ERROR, Outcome.EXIT_UNKNOWN,
                       f"the exit status of rank(s) {unknown} in attempt {life.last.attempt} is unknown (no exit "
                       f"record: a crash after probe.finish?), so the end of the run cannot be judged")
    return None


def _how(e: RankEnd) -> str:
    return f"was killed by signal {-e.returncode}" if e.returncode < 0 else f"exited with code {e.returncode}"


def _crashed_rank(life: Lifecycle, attempt: int) -> int | None:
    """A rank of `attempt` that did not finish; the one that failed by itself when exit codes say so."""
    unfinished = [r for r in life.ranks(attempt) if not life.trial.finished(r, attempt)]
    if not unfinished:
        return None
    for test in (lambda e: e is not None and not e.torn_down and (e.returncode or 0) > 0,
                 lambda e: e is not None and not e.torn_down and e.returncode not in (None, 0)):
        hit = [r for r in unfinished if test(life.ends.get(r))]
        if hit:
            return hit[0]
    return unfinished[0]


def _fault_text(row) -> str:
    f = row.fault if isinstance(row.fault, dict) else {}
    sig = f.get("signal", "fault")
    at = f"point {row.point}" if row.point else f"step {row.step}"
    return f"{sig} on rank {row.rank} at {at}"


def fault_where(row) -> str:
    """Where a fault row's fault fired, for a message ("at point X" / "after step N")."""
    if row is None:
        return ""
    return f"at point {row.point}" if row.point else f"after step {row.step}"


_SURVIVED_HINT = {
    "SIGTERM": "the script handles or ignores SIGTERM (signal.signal(signal.SIGTERM, ...)) and keeps training; "
               "a job manager's SIGTERM means 'stop': save and exit, or let the signal end the process",
    "exception": "the script catches harness.probe.InjectedFault (an `except Exception` around the training "
                 "step, or a retry loop) and keeps training; let it propagate, or re-raise it",
    "SIGKILL": "the process survived SIGKILL, which cannot be caught: was the probe called from a child process?",
}

APART_HINT = ("the ranks' checkpoint files were written without a commit protocol (a kill during a save left them "
              "at different steps): save every rank's files, then mark the step complete once all are written (a "
              "barrier and a marker or rename by one rank), and load only a complete step")


def ranks_apart(trial: Trace) -> tuple[int, dict[int, int]] | None:
    """(attempt, {rank: restored step}) of the first resumed attempt whose ranks restored different steps, each
    rank's from its first row in the attempt that shows it (trace_schema.resumed_from)."""
    for a in trial.attempts():
        if a == 0:
            continue
        steps = {}
        for r in trial.ranks:
            for row in trial.rows(r):
                step = resumed_from(row) if row.attempt == a else None
                if step is not None:
                    steps[r] = step
                    break
        if len(set(steps.values())) > 1:
            return a, steps
    return None


def check_ranks_apart(life: Lifecycle) -> Finding | None:
    """The ranks of every resumed attempt restored the same step."""
    apart = ranks_apart(life.trial)
    if apart is None:
        return None
    a, steps = apart
    each = ", ".join(f"rank {r} step {st}" for r, st in sorted(steps.items()))
    return Finding(FAIL, Outcome.RANKS_RESUMED_APART, f"the ranks of attempt {a} resumed from different checkpoints: "
                                                      f"{each}", hint=APART_HINT)


def timeout_verdict(trial: Trace | None, attempt: int, reason: str, last_steps: dict[int, int | None],
                    log_tail: str | None, *, stalled: bool = False) -> Verdict:
    """An attempt that was stopped: its ranks resumed from different checkpoints (``ranks_resumed_apart``),
    or it hung. ``stalled``: stopped by the stall limit (no rank recorded anything for that long), which
    machine load alone can cause: outcome ``stall`` (exit 4), never counted as a resume bug. Else it ran
    past ``--timeout``: ``timeout``, a fail after a resume."""
    attempts = tuple(trial.attempt_summary()) if trial else ()
    apart = ranks_apart(trial) if trial is not None else None
    if apart is not None:
        a, steps = apart
        each = ", ".join(f"rank {r} step {st}" for r, st in sorted(steps.items()))
        return Verdict(FAIL, Outcome.RANKS_RESUMED_APART,
                       f"the ranks of attempt {a} resumed from different checkpoints: {each}; the attempt was "
                       f"stopped at once", attempts=attempts, log_tail=log_tail,
                       hint=APART_HINT)
    where = ", ".join(f"rank {r} at step {s}" if s is not None else f"rank {r} before step 1"
                      for r, s in sorted(last_steps.items()))
    after = ", after the resume" if attempt > 0 else ""
    hint = ("a collective that not every rank reaches (a rank that skips a step or a save after the resume) is the "
            "common cause; py-spy dump --pid PID shows where a rank waits")
    if stalled:
        why = reason.removeprefix("stalled: ")
        return Verdict(ERROR, Outcome.STALL, f"attempt {attempt} stalled{after}: {why}; last recorded: {where}",
                       attempts=attempts, log_tail=log_tail,
                       hint=hint + "; on a heavily loaded machine, a longer --stall rules load out")
    return Verdict(FAIL if attempt > 0 else ERROR, Outcome.TIMEOUT,
                   f"attempt {attempt} hung{after}: {reason}; last recorded: {where}",
                   attempts=attempts, log_tail=log_tail, hint=hint)
