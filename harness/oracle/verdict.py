"""The verdict of one trial: `Verdict` (frozen, produced once by `assess`) and `RunResult` (it, plus context).

Outcomes and their verdicts, in the order `assess` checks them (exit codes: harness.report.outcomes,
generated from OUTCOME_EXIT_CODES; the README's table is that one):

| outcome                    | verdict | when |
|----------------------------|---------|------|
| baseline_failed            | error   | the uninterrupted run itself failed (the caller says so) |
| nondeterministic_baseline  | fail    | two uninterrupted runs differ: the training is not reproducible, resume or not |
| crash_on_resume            | fail    | a rank of a resumed attempt (> 0) ended without finishing and without a fault, or exited non-zero after finishing |
| crash                      | error   | a rank ended without finishing in attempt 0, before any fault: the baseline ran this code fine |
| fault_not_fired            | error   | an attempt that armed a fault finished without it firing |
| fault_survived             | error   | a fault fired but the attempt ran to the end: the process ignored SIGTERM or caught the exception |
| fault_not_armed            | error   | the trial ended before every fault of the plan was armed |
| ranks_resumed_apart        | fail    | the ranks of one attempt restored different steps (also when the engine stopped the attempt for it) |
| divergence                 | fail    | the training state differs: a trace row's loss/batch/params/optimizer/extras, the final state, an exported file, or missing steps |
| not_resumed                | fail    | a checkpoint was complete before the kill, yet the next attempt restarted from step 1 |
| not_resumed                | error   | no checkpoint was complete before the kill: resume untested ("no resume tested") |
| lost_progress              | fail    | a resumed attempt restored an older step than the newest checkpoint complete before the kill |
| crash_on_resume / crash    | fail / error | a rank exited non-zero after probe.finish |
| exit_unknown               | error   | a rank's exit status of the last attempt is unknown |
| no_evidence                | error   | no step row was compared |
| rng_only                   | fail    | training bit-exact through the end, an RNG stream differs (exit 3) |
| rng_accepted               | pass    | as rng_only, with every differing stream accepted (--accept-rng) |
| unknown_resume_state       | fail    | auto mode: a resumed attempt restored a state that no step of the baseline had |
| stall / timeout            | error / fail | stopped by the stall limit (stall, exit 4) or --timeout (timeout: fail after a resume) (timeout_verdict) |
| bit_exact                  | pass    | every fault fired, ended its attempt and was followed by a resume; everything compared is equal |
| elastic_pass               | pass    | `--resume-nproc`: the exact claims of the elastic oracle hold and the loss is within its tolerance (`elastic.py`); never called bit-exact |
| not_elastic                | error / fail | `--resume-nproc`: the checkpointer refused the data order (error), or the global sample order changed (fail) |
| error                      | error   | anything else that stopped the harness (the caller builds it) |

Two first divergences are reported apart: the first of the training state (``first_divergence``, with
``diagnosis``) and the first of an RNG stream (``rng_divergence``, with ``rng_diagnosis``); a training
divergence is never hidden behind an earlier RNG one.

A PASS therefore needs positive evidence: a plan of at least one fault, every fault fired, every fired
fault ended its attempt, every attempt after a fault resumed (loaded a checkpoint or began past step 1)
from the newest complete checkpoint with all ranks on one step, at least one step row compared, the last
attempt finished on every rank with a known exit code 0, and no divergence.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .compare import Comparison, Divergence, json_float
from .diagnosis import Diagnosis, diagnose, diagnose_rng
from .trace import AttemptSummary, Trace


class Outcome(str, enum.Enum):
    """Why a trial got its verdict (compares equal to its string value)."""

    BIT_EXACT = "bit_exact"
    ELASTIC_PASS = "elastic_pass"  # a resume on another world size: what can be exact is (harness.oracle.elastic)
    RNG_ACCEPTED = "rng_accepted"  # training bit-exact; only RNG streams the user accepted (--accept-rng) differ
    NOT_ELASTIC = "not_elastic"
    DIVERGENCE = "divergence"
    RNG_ONLY = "rng_only"  # training bit-exact through the end, but an RNG stream differs (exit 3)
    LOST_PROGRESS = "lost_progress"  # resumed from an older checkpoint than the newest committed before the kill
    RANKS_RESUMED_APART = "ranks_resumed_apart"  # the ranks of one attempt restored different steps
    NO_EVIDENCE = "no_evidence"  # nothing was compared that a PASS could rest on
    EXIT_UNKNOWN = "exit_unknown"  # a rank's exit status of the last attempt is unknown
    STALL = "stall"  # no rank recorded anything for the stall limit (exit 4): not a resume bug
    NONDETERMINISTIC_BASELINE = "nondeterministic_baseline"
    NOT_RESUMED = "not_resumed"
    UNKNOWN_RESUME_STATE = "unknown_resume_state"
    CRASH_ON_RESUME = "crash_on_resume"
    CRASH = "crash"
    FAULT_NOT_FIRED = "fault_not_fired"
    FAULT_SURVIVED = "fault_survived"
    FAULT_NOT_ARMED = "fault_not_armed"
    TIMEOUT = "timeout"
    BASELINE_FAILED = "baseline_failed"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


OUTCOMES = tuple(o.value for o in Outcome)
VERDICTS = ("pass", "fail", "error")
EXIT_CODES = {"pass": 0, "fail": 1, "error": 2}
#: Outcomes with an exit code of their own (else the verdict's): an RNG-only difference and a stall are
#: told apart from a training divergence (1) and from a harness error (2) by scripts and CI.
OUTCOME_EXIT_CODES = {Outcome.RNG_ONLY: 3, Outcome.STALL: 4}
PASSING = (Outcome.BIT_EXACT, Outcome.ELASTIC_PASS, Outcome.RNG_ACCEPTED)


def exit_code_of(verdict: str, outcome) -> int:
    """The process exit code of a trial: its outcome's own (OUTCOME_EXIT_CODES), else its verdict's."""
    try:
        outcome = Outcome(outcome)
    except ValueError:
        return EXIT_CODES.get(verdict, 2)
    return OUTCOME_EXIT_CODES.get(outcome, EXIT_CODES.get(verdict, 2))


def jsonable(x):
    """Plain JSON types only: Paths and other objects become strings, non-finite floats "inf"/"nan"."""
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [jsonable(v) for v in x]
    if hasattr(x, "to_json"):
        return jsonable(x.to_json())
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return json_float(x)
    if hasattr(x, "item"):  # numpy scalars
        return jsonable(x.item())
    return str(x)


@dataclass(frozen=True)
class Verdict:
    """The judgement of one trial, made once by `assess` (or by the engine for a run that could not be
    judged) and never edited afterwards."""

    verdict: str  # "pass" | "fail" | "error"
    outcome: Outcome
    message: str
    first_divergence: Divergence | None = None
    compared: dict = field(default_factory=dict)
    attempts: tuple[AttemptSummary, ...] = ()
    log_tail: str | None = None
    warnings: tuple[str, ...] = ()
    hint: str | None = None  # what the user should check
    diagnosis: Diagnosis | None = None  # the likely cause of a failure, with its evidence
    # The first divergence of an RNG stream, and its cause, reported apart from the training divergence
    # (first_divergence), which it never hides; the RNG streams a PASS accepted (--accept-rng).
    rng_divergence: Divergence | None = None
    rng_diagnosis: Diagnosis | None = None
    accepted: tuple[str, ...] = ()

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        object.__setattr__(self, "attempts", tuple(self.attempts))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "accepted", tuple(self.accepted))
        if self.verdict == "pass" and self.outcome not in PASSING:
            raise ValueError(f"only {', '.join(o.value for o in PASSING)} pass, not {self.outcome}")


@dataclass(frozen=True)
class RunResult:
    """A Verdict with the context of its trial (target, plan, replay command, files, timings)."""

    verdict_: Verdict
    target: str = ""
    nproc: int = 0
    backend: str = ""
    seed: int | None = None
    plan: str = ""
    replay: str = ""
    out_dir: str = ""
    timings: dict = field(default_factory=dict)
    launches: tuple = ()  # per attempt: {"attempt", "wall_s", "exits": [{"rank", "returncode", "signal", "torn_down"}]}

    verdict = property(lambda self: self.verdict_.verdict)
    outcome = property(lambda self: self.verdict_.outcome)
    message = property(lambda self: self.verdict_.message)
    first_divergence = property(lambda self: self.verdict_.first_divergence)
    compared = property(lambda self: self.verdict_.compared)
    attempts = property(lambda self: self.verdict_.attempts)
    log_tail = property(lambda self: self.verdict_.log_tail)
    warnings = property(lambda self: self.verdict_.warnings)
    hint = property(lambda self: self.verdict_.hint)
    diagnosis = property(lambda self: self.verdict_.diagnosis)
    rng_divergence = property(lambda self: self.verdict_.rng_divergence)
    rng_diagnosis = property(lambda self: self.verdict_.rng_diagnosis)
    accepted = property(lambda self: self.verdict_.accepted)

    @property
    def training_divergence(self) -> Divergence | None:
        """The first divergence of the training state (None when training stayed bit-exact)."""
        d = self.verdict_.first_divergence
        return d if d is not None and any(not f.startswith("rng:") for f in d.fields) else None

    @property
    def exit_code(self) -> int:
        return exit_code_of(self.verdict, self.outcome)

    def to_json(self) -> dict:
        v = self.verdict_
        return jsonable({
            "verdict": v.verdict, "outcome": v.outcome, "message": v.message, "hint": v.hint,
            "diagnosis": v.diagnosis.to_json() if v.diagnosis else None,
            "first_divergence": v.first_divergence.to_json() if v.first_divergence else None,
            "training_divergence": self.training_divergence.to_json() if self.training_divergence else None,
            "rng_divergence": v.rng_divergence.to_json() if v.rng_divergence else None,
            "rng_diagnosis": v.rng_diagnosis.to_json() if v.rng_diagnosis else None,
            "accepted": list(v.accepted), "exit_code": self.exit_code,
            "compared": v.compared, "attempts": self._attempts_json(), "replay": self.replay,
            "out_dir": str(self.out_dir), "timings": self.timings, "warnings": v.warnings,
            "target": self.target, "nproc": self.nproc, "backend": self.backend, "seed": self.seed,
            "plan": self.plan, "log_tail": v.log_tail,
        })


    def _attempts_json(self) -> list:
        """Each attempt's summary, with how its launch ended (wall time, exit codes) where known."""
        launches = {x.get("attempt"): x for x in self.launches}
        out = []
        for s in self.verdict_.attempts:
            j = s.to_json()
            launch = launches.get(s.attempt)
            if launch is not None:
                j.update(wall_s=launch.get("wall_s"), exits=launch.get("exits"))
            out.append(j)
        return out


@dataclass(frozen=True)
class RankEnd:
    """How one rank of the trial's last attempt ended (what the launcher saw)."""

    rank: int
    returncode: int | None
    torn_down: bool = False
    log_tail: str | None = None


def describe(d: Divergence) -> str:
    """One line naming a divergence: where, and which fields."""
    fields = ", ".join(d.fields)
    if d.where == "artefact":
        files = ", ".join(f.split(":", 1)[1] for f in d.fields if f.startswith("artefact:")) or fields
        names = ", ".join(t.name for t in d.tensors[:3])
        more = f" and {len(d.tensors) - 3} more" if len(d.tensors) > 3 else ""
        return f"the exported file {files} differs from the baseline's" + (f": {names}{more}" if names else "")
    if d.where == "final":
        return f"final state of rank {d.rank} differs: {fields}"
    if d.fields == ["missing"]:
        return f"the trial never reached step {d.step} on rank {d.rank}"
    if d.fields == ["extra"]:
        return f"the trial ran step {d.step} on rank {d.rank}, which the baseline never had"
    return f"step {d.step}, rank {d.rank}, attempt {d.attempt}: {fields} differ{'s' if len(d.fields) == 1 else ''}"


def _crashed_rank(trial: Trace, attempt: int, ends: dict[int, RankEnd]) -> int | None:
    """A rank of `attempt` that did not finish; the one that failed by itself when exit codes say so."""
    unfinished = [r for r in trial.ranks if not trial.finished(r, attempt)]
    if not unfinished:
        return None
    for test in (lambda e: e is not None and not e.torn_down and (e.returncode or 0) > 0,
                 lambda e: e is not None and not e.torn_down and e.returncode not in (None, 0)):
        hit = [r for r in unfinished if test(ends.get(r))]
        if hit:
            return hit[0]
    return unfinished[0]


def _fault_text(row) -> str:
    f = row.fault if isinstance(row.fault, dict) else {}
    sig = f.get("signal", "fault")
    at = f"point {row.point}" if row.point else f"step {row.step}"
    return f"{sig} on rank {row.rank} at {at}"


_SURVIVED_HINT = {
    "SIGTERM": "the script handles or ignores SIGTERM (signal.signal(signal.SIGTERM, ...)) and keeps training; "
               "a job manager's SIGTERM means 'stop': save and exit, or let the signal end the process",
    "exception": "the script catches harness.probe.InjectedFault (an `except Exception` around the training "
                 "step, or a retry loop) and keeps training; let it propagate, or re-raise it",
    "SIGKILL": "the process survived SIGKILL, which cannot be caught: was the probe called from a child process?",
}


def assess(
    comparison: Comparison | None,
    trial: Trace | None,
    *,
    n_faults: int | None = None,
    baseline_repro: Comparison | None = None,
    baseline_error: str | None = None,
    last_exits: list[RankEnd] | None = None,
    launched: int | None = None,
    artefacts=None,
    accept_rng=(),
    accept_lost_progress: bool = False,
) -> Verdict:
    """Judge a trial. See the module docstring for the rules, in the order they are checked.

    comparison: compare_runs(baseline, trial). trial: the trial's Trace. n_faults: faults in the plan
    (attempt i arms fault i). baseline_repro: compare_runs(baseline, second baseline), if one was run.
    baseline_error: why the baseline failed, if it did. last_exits: how each rank of the trial's last
    attempt ended. launched: how many attempts were launched (a launched attempt may record nothing:
    a rank that crashes on resume before its first probe call). artefacts: the comparison of the files
    the two runs left in their run folders (``harness.oracle.artefacts.ArtefactReport``); its
    divergences are training divergences. accept_rng: RNG streams ("torch", "numpy"... or "all") whose
    difference the user accepts knowingly (``rng_accepted``). accept_lost_progress: a resume from an older
    checkpoint than the newest committed is accepted (a script that keeps one checkpoint, or resumes
    from an older one on purpose).
    """
    comparison = _with_artefacts(comparison, artefacts)
    warnings = list(comparison.warnings) if comparison else []
    base = dict(first_divergence=comparison.first if comparison else None,
                compared=dict(comparison.compared) if comparison else {},
                attempts=tuple(trial.attempt_summary()) if trial else ())
    ends = {e.rank: e for e in last_exits or []}

    def done(verdict, outcome, message, **kw) -> Verdict:
        return Verdict(**{**base, "verdict": verdict, "outcome": outcome, "message": message,
                          "warnings": tuple(warnings), **kw})

    if baseline_error is not None:
        return done("error", Outcome.BASELINE_FAILED, f"the baseline run failed: {baseline_error}")
    if baseline_repro is not None and baseline_repro.first is not None:
        d = baseline_repro.first
        where = f"first at step {d.step}, rank {d.rank}" if d.where == "trace" else f"in the final state of rank {d.rank}"
        return done("fail", Outcome.NONDETERMINISTIC_BASELINE,
                    f"the training is nondeterministic even without faults: two uninterrupted runs differ "
                    f"{where} ({', '.join(d.fields)})", first_divergence=d, hint=_nondeterminism_hint(d.fields),
                    diagnosis=diagnose(None, None, baseline_repro=baseline_repro))
    if comparison is None or trial is None:
        return done("error", Outcome.ERROR, "no trial trace to judge")
    auto = _auto_verdict(trial, done, warnings)  # auto mode's own findings (harness.probe.auto)
    if auto is not None:
        return auto
    n_faults = n_faults or 0
    if n_faults < 1:
        return done("error", Outcome.FAULT_NOT_ARMED, "the plan has no fault, so no resume was tested",
                    hint="give a fault plan (--kill STEP, or --kill random)")

    summary = base["attempts"]
    if not summary:
        return done("error", Outcome.ERROR, "the trial recorded no trace row: did its ranks start? See attempt0/rank*.log")
    recorded = {s.attempt for s in summary}
    silent = (launched or 0) - 1
    if silent > max(recorded):
        crashed = sorted((e for e in ends.values() if not e.torn_down and e.returncode not in (0, None)),
                         key=lambda e: e.rank)
        if crashed:
            e = crashed[0]
            how = f"was killed by signal {-e.returncode}" if e.returncode < 0 else f"exited with code {e.returncode}"
            return done("fail", Outcome.CRASH_ON_RESUME,
                        f"rank {e.rank} {how} in attempt {silent}, after the resume, before it recorded anything "
                        f"(while loading the checkpoint?)", log_tail=e.log_tail)
        return done("error", Outcome.ERROR, f"attempt {silent} recorded no trace row: did its ranks start? "
                                            f"See attempt{silent}/rank*.log")
    for a in range(max(recorded) + 1):
        if a not in recorded:
            return done("error", Outcome.ERROR, f"attempt {a} recorded no trace row: did its ranks start? "
                                                f"See attempt{a}/rank*.log")
    last = summary[-1]
    if not last.finished and last.fault is None:
        a = last.attempt
        r = _crashed_rank(trial, a, ends)
        end = ends.get(r)
        steps = [row.step for row in trial.steps(r, a)] if r is not None else []
        at = f"its last step was {max(steps)}" if steps else "it recorded no step"
        how = f" (exit code {end.returncode})" if end is not None and end.returncode is not None else ""
        tail = end.log_tail if end is not None else None
        if a > 0:
            return done("fail", Outcome.CRASH_ON_RESUME,
                        f"rank {r} crashed in attempt {a}, after the resume{how}; {at}", log_tail=tail)
        return done("error", Outcome.CRASH, f"rank {r} crashed in attempt 0, before any fault fired{how}; {at}",
                    log_tail=tail)

    for s in summary:
        if s.attempt >= n_faults:
            break
        if s.fault is None and s.finished:
            return done("error", Outcome.FAULT_NOT_FIRED,
                        f"fault {s.attempt + 1} of the plan never fired: attempt {s.attempt} finished "
                        f"at step {s.last_step} without reaching it",
                        hint="check the step is within the run and the point name is one the script reaches")
        fired_on = {row.rank for row in trial.faults() if row.attempt == s.attempt}
        survived = sorted(fired_on & set(s.finished_ranks))
        if s.fault is not None and survived:
            sig = s.fault.fault.get("signal", "SIGKILL") if isinstance(s.fault.fault, dict) else "SIGKILL"
            later = n_faults - s.attempt - 1
            never = f"; {later} later fault(s) of the plan were never armed" if later else ""
            return done("error", Outcome.FAULT_SURVIVED,
                        f"fault {s.attempt + 1} ({_fault_text(s.fault)}) fired, but rank(s) {survived} ran to the "
                        f"end of attempt {s.attempt}: the process survived it, so no resume was tested{never}",
                        hint=_SURVIVED_HINT.get(sig))
    if len(summary) < n_faults + 1:
        return done("error", Outcome.FAULT_NOT_ARMED,
                    f"the trial ended after {len(summary)} attempt(s); fault(s) {len(summary) + 1}..{n_faults} of "
                    f"the plan were never armed")

    apart = _ranks_apart(trial)
    if apart is not None:
        a, steps = apart
        each = ", ".join(f"rank {r} step {st}" for r, st in sorted(steps.items()))
        return done("fail", Outcome.RANKS_RESUMED_APART,
                    f"the ranks of attempt {a} resumed from different checkpoints: {each}",
                    hint=_APART_HINT)

    restarts, resumes = [], []  # (attempt after a fault, the attempt with the fault)
    for prev, nxt in zip(summary, summary[1:]):
        if prev.fault is None:
            continue
        if not nxt.loaded and (nxt.first_step is None or nxt.first_step <= 1):
            restarts.append((nxt, prev))
        else:
            resumes.append((nxt, prev))
    for nxt, prev in restarts:
        if prev.committed_steps:
            warnings.append(f"attempt {nxt.attempt} restarted from step 1 although checkpoint(s) at step(s) "
                            f"{list(prev.committed_steps)} were committed before the kill")

    sizes = {row.world_size for r in trial.ranks for row in trial.rows(r) if row.kind == "start"}
    world = max(sizes, default=None)
    training, rng_first = comparison.training, comparison.rng
    rng_diag = diagnose_rng(comparison, trial, comparison.base) if rng_first is not None else None
    rng_kw = dict(rng_divergence=rng_first, rng_diagnosis=rng_diag)
    lost = [(n, p) for n, p in resumes if p.committed_steps and n.resumed_from is not None
            and n.resumed_from < max(p.committed_steps)]
    if lost and training is not None:
        n, p = lost[0]
        warnings.append(f"attempt {n.attempt} resumed from step {n.resumed_from}, not from the newest checkpoint "
                        f"committed before the kill (step {max(p.committed_steps)})")
    if training is not None and not (lost and not accept_lost_progress and training.where == "artefact"):
        # (an older resume point renumbers the checkpoints the job writes afterwards: then lost_progress, below,
        # says what happened, and the exported files' differences are its consequence)
        diag = diagnose(comparison, trial, comparison.base, world_size=world, divergence=training)
        also = ""
        if rng_first is not None and rng_first is not training:
            also = f"; RNG: {', '.join(f for f in rng_first.fields if f.startswith('rng:'))} first differ at " \
                   f"{_at(rng_first)}"
        return done("fail", Outcome.DIVERGENCE, describe(training) + also, first_divergence=training,
                    diagnosis=diag, **rng_kw)
    for nxt, prev in restarts:
        kill = _fault_where(prev.fault)
        if prev.committed_steps:
            return done("fail", Outcome.NOT_RESUMED,
                        f"checkpoint(s) at step(s) {list(prev.committed_steps)} were committed before the kill {kill}, "
                        f"but attempt {nxt.attempt} restarted from step 1 without loading one", **rng_kw)
        return done("error", Outcome.NOT_RESUMED,
                    f"no resume tested: no checkpoint was complete before the kill {kill}, so attempt "
                    f"{nxt.attempt} restarted from scratch; this plan did not test resumption",
                    hint="kill after the first complete checkpoint (--kill random draws such a step); a script "
                         "that saves nothing never resumes", **rng_kw)
    if not accept_lost_progress:
        for nxt, prev in lost:
            newest = max(prev.committed_steps)
            got = nxt.resumed_from
            also = "; the files it exported differ too" if training is not None else ""
            return done("fail", Outcome.LOST_PROGRESS,
                        f"attempt {nxt.attempt} resumed from step {got}, but the newest checkpoint committed before "
                        f"the kill {_fault_where(prev.fault)} was step {newest}: {newest - got} step(s) of progress "
                        f"lost (a load that picks an older checkpoint, or a rotation that deleted the newest){also}",
                        diagnosis=Diagnosis(
                            "lost_progress",
                            "the resume picked an older checkpoint than the newest complete one: a load that "
                            "picks the oldest or sorts names as text (iter-5 after iter-10), or a rotation "
                            "(total_limit) that deleted the newest",
                            f"attempt {nxt.attempt} loaded step {got}; checkpoints complete before the kill: "
                            f"{list(prev.committed_steps)}"),
                        hint="if the script keeps only an older checkpoint or resumes from one on purpose, accept "
                             "it knowingly with --accept-lost-progress", **rng_kw)

    failed = [e for e in ends.values() if not e.torn_down and e.returncode not in (0, None)]
    if failed:
        e = min(failed, key=lambda e: e.rank)
        how = f"was killed by signal {-e.returncode}" if e.returncode < 0 else f"exited with code {e.returncode}"
        return done("fail" if last.attempt > 0 else "error",
                    Outcome.CRASH_ON_RESUME if last.attempt > 0 else Outcome.CRASH,
                    f"rank {e.rank} {how} after probe.finish in attempt {last.attempt}"
                    f"{', after the resume' if last.attempt > 0 else ''}; the baseline exited 0", log_tail=e.log_tail,
                    hint="the script failed at its end: a check at exit (duplicated log or metric rows after a "
                         "resume are the classic), or a teardown error", **rng_kw)
    unknown = sorted(e.rank for e in ends.values() if e.returncode is None and not e.torn_down)
    if unknown:
        return done("error", Outcome.EXIT_UNKNOWN,
                    f"the exit status of rank(s) {unknown} in attempt {last.attempt} is unknown (no exit record: a "
                    f"crash after probe.finish?), so the end of the run cannot be judged", **rng_kw)

    c = base["compared"]
    if not c.get("rows"):
        return done("error", Outcome.NO_EVIDENCE,
                    "nothing to judge: no step row was compared (the script records no step, or the trial ran none "
                    "that the baseline has), so a PASS would rest on no evidence",
                    hint="call harness.probe.step after each optimizer step, or let auto mode record the script "
                         "(no probe calls at all)", **rng_kw)

    unused = c.get("unused_rng") or []
    note = f"; {', '.join(unused)} unused, not compared" if unused else ""
    if c.get("not_recorded"):
        note += f"; auto mode: {len(c['not_recorded'])} kind(s) of state not recorded (compared['not_recorded'])"
    unseen = _unseen(trial)
    if unseen:
        note += f"; NOT covered: {unseen}"
    if artefacts is not None and getattr(artefacts, "judged", None):
        j = artefacts.judged
        note += f"; exported files: {j.get('files', 0)} file(s), {j.get('tensors', 0)} tensor(s) match" \
            if isinstance(j, dict) else ""
    accepted_note = ""
    if accept_lost_progress:
        lost = [(n.attempt, n.resumed_from, max(p.committed_steps)) for n, p in resumes
                if p.committed_steps and n.resumed_from is not None and n.resumed_from < max(p.committed_steps)]
        if lost:
            accepted_note = "; accepted: " + ", ".join(f"attempt {a} resumed from step {g}, not the newest {w}"
                                                       for a, g, w in lost)
    rows = (f"{c.get('rows', 0)} step rows ({c.get('reexecuted_rows', 0)} re-executed) on "
            f"{c.get('ranks', 0)} rank(s) and {c.get('final_tensors', 0)} final tensors match the baseline")
    if rng_first is not None:
        streams = comparison.rng_streams()
        accept = {a if a.startswith("rng:") else f"rng:{a}" for a in accept_rng}
        what = (f"{', '.join(streams)} differ{'s' if len(streams) == 1 else ''} from {_at(rng_first)} on, while "
                f"training stayed bit-exact")
        # The RNG state inside an exported checkpoint (rng:artefact) is a copy of the streams: accepted with them.
        if "rng:all" in accept or (accept and all(st in accept or st == "rng:artefact" for st in streams)):
            return done("pass", Outcome.RNG_ACCEPTED,
                        f"training bit-exact: {rows}{note}{accepted_note}; accepted: {what} (--accept-rng)",
                        accepted=tuple(streams), **rng_kw)
        return done("fail", Outcome.RNG_ONLY,
                    f"{what}: {rows}, but a model drawing from {'that stream' if len(streams) == 1 else 'those streams'} "
                    f"(dropout, augmentation, sampling) would diverge{note}",
                    first_divergence=rng_first, diagnosis=rng_diag,
                    hint=f"restore the RNG state at the resume, or accept the difference knowingly with "
                         f"{' '.join('--accept-rng ' + st[4:] for st in streams)}", **rng_kw)
    return done("pass", Outcome.BIT_EXACT, f"{rows}{note}{accepted_note}")


def _at(d: Divergence) -> str:
    if d.where != "trace":
        return f"the {d.where} state of rank {d.rank}"
    return f"step {d.step}, rank {d.rank} (attempt {d.attempt})"


def _fault_where(row) -> str:
    if row is None:
        return ""
    return f"at point {row.point}" if row.point else f"after step {row.step}"


_APART_HINT = ("the ranks' checkpoint files were written without a commit protocol (a kill during a save left them "
               "at different steps): save every rank's files, then mark the step complete once all are written (a "
               "barrier and a marker or rename by one rank), and load only a complete step")


def _ranks_apart(trial: Trace) -> tuple[int, dict[int, int]] | None:
    """(attempt, {rank: restored step}) of the first resumed attempt whose ranks restored different steps: a
    rank's ``checkpoint.loaded`` step, else (it loaded nothing) the step before its first step row."""
    for a in trial.attempts():
        if a == 0:
            continue
        steps = {}
        for e in trial.events("checkpoint.loaded"):
            if e.attempt == a and isinstance(e.event_step, int):
                steps.setdefault(e.rank, e.event_step)
        for r in trial.ranks:
            rows = trial.steps(r, a)
            if r not in steps and rows:
                steps[r] = rows[0].step - 1
        if len(set(steps.values())) > 1:
            return a, steps
    return None


def _unseen(trial: Trace) -> str:
    """What auto mode saw but could not compare (``auto.unseen``: modules no optimizer steps)."""
    found = []
    for e in trial.events("auto.unseen"):
        info = e.info if isinstance(e.info, dict) else {}
        for m in info.get("modules") or []:
            if m not in found:
                found.append(str(m))
    if not found:
        return ""
    return (f"{len(found)} module(s) with state no optimizer steps ({'; '.join(found[:3])}) are compared only "
            "through the files the script exports")


def _with_artefacts(comparison: Comparison | None, artefacts) -> Comparison | None:
    """The comparison with the exported artefacts' divergences added (training state, after the final state)."""
    divs = list(getattr(artefacts, "divergences", None) or [])
    if comparison is None or not divs:
        return comparison
    from dataclasses import replace

    merged = sorted([*comparison.divergences, *divs], key=Divergence.sort_key)
    compared = {**comparison.compared, "divergences": len(merged)}
    return replace(comparison, first=merged[0], divergences=merged, compared=compared)


def _auto_verdict(trial: Trace, done, warnings: list) -> Verdict | None:
    """Auto mode's events: a refused script (``auto.error``: bad input, exit 2), a resume into a state the
    baseline never had (``auto.unknown_state``); an ambiguous resume step only warns."""
    for e in trial.events("auto.ambiguous_resume"):
        info = e.info if isinstance(e.info, dict) else {}
        warnings.append(f"auto mode: attempt {e.attempt}, rank {e.rank}: the restored state matches steps "
                        f"{info.get('candidates')} of the baseline; step {info.get('chosen')} was taken (the latest "
                        f"not beyond step {info.get('before')}, where the earlier attempts stopped)")
    for e in trial.events("auto.error"):
        info = e.info if isinstance(e.info, dict) else {}
        return done("error", Outcome.ERROR, f"auto mode, attempt {e.attempt}, rank {e.rank}: {info.get('message')}")
    for e in trial.events("auto.unknown_state"):
        info = e.info if isinstance(e.info, dict) else {}
        closest = info.get("closest")
        near = (f"closest: step {closest}, {info.get('equal')} of {info.get('total')} parameter tensors equal"
                if closest is not None else "no step is close")
        restored = "; ".join(info.get("restored") or []) or "nothing through load_state_dict"
        point = _loaded_checkpoint_step(trial, e.attempt, info.get("loaded_from"))
        if point is not None:
            step, path = point
            resume = f"it loaded {path}, saved at step {step}"
            d = Divergence(step + 1, e.rank, e.attempt, ["params"],
                           note=f"the state restored from {path} (saved at step {step}) is not the baseline's state "
                                f"of step {step} ({near})")
        else:
            resume = "the resume point is unknown (no save of this trial matches what it loaded)"
            d = Divergence(None, e.rank, e.attempt, ["params"],
                           note=f"the state restored before the first step matches no step of the baseline ({near}); "
                                "the resume point is unknown")
        return done("fail", Outcome.UNKNOWN_RESUME_STATE,
                    f"attempt {e.attempt} resumed into a state the uninterrupted run never had: on rank {e.rank}, the "
                    f"parameters before its first step match no step of the baseline ({near}; {resume}; "
                    f"restored: {restored})",
                    first_divergence=d,
                    hint="the checkpoint holds other parameters than the run had at any step: saved before the "
                         "optimizer step, a partial or foreign checkpoint, or state changed after loading")
    return None


def _loaded_checkpoint_step(trial: Trace, attempt: int, path) -> tuple[int, str] | None:
    """(step, path) of the latest save of an earlier attempt that wrote the file ``path`` a resumed rank loaded
    (the same path, or a file inside a saved folder); None when no save matches."""
    if not path:
        return None
    import os

    target = os.path.normpath(str(path))
    found = None
    for e in sorted(trial.events("checkpoint.committed"), key=lambda e: (e.attempt, e.time or 0.0)):
        info = e.info if isinstance(e.info, dict) else {}
        p = info.get("path")
        if e.attempt < attempt and p and isinstance(e.event_step, int):
            p = os.path.normpath(str(p))
            # the same file, a file inside a saved folder, or a file saved as path.tmp and renamed into place
            if p == target or target.startswith(p.rstrip(os.sep) + os.sep) or p.startswith(target + "."):
                found = (e.event_step, str(path))
    return found


def timeout_verdict(trial: Trace | None, attempt: int, reason: str, last_steps: dict[int, int | None],
                    log_tail: str | None, *, stalled: bool = False) -> Verdict:
    """An attempt that was stopped: its ranks resumed from different checkpoints (``ranks_resumed_apart``),
    or it hung. ``stalled``: stopped by the stall limit (no rank recorded anything for that long), which
    machine load alone can cause: outcome ``stall`` (exit 4), never counted as a resume bug. Else it ran
    past ``--timeout``: ``timeout``, a fail after a resume."""
    attempts = tuple(trial.attempt_summary()) if trial else ()
    apart = _ranks_apart(trial) if trial is not None else None
    if apart is not None:
        a, steps = apart
        each = ", ".join(f"rank {r} step {st}" for r, st in sorted(steps.items()))
        return Verdict("fail", Outcome.RANKS_RESUMED_APART,
                       f"the ranks of attempt {a} resumed from different checkpoints: {each}; the attempt was "
                       f"stopped at once", attempts=attempts, log_tail=log_tail,
                       hint=_APART_HINT)
    where = ", ".join(f"rank {r} at step {s}" if s is not None else f"rank {r} before step 1"
                      for r, s in sorted(last_steps.items()))
    after = ", after the resume" if attempt > 0 else ""
    hint = ("a collective that not every rank reaches (a rank that skips a step or a save after the resume) is the "
            "common cause; py-spy dump --pid PID shows where a rank waits")
    if stalled:
        why = reason.removeprefix("stalled: ")
        return Verdict("error", Outcome.STALL, f"attempt {attempt} stalled{after}: {why}; last recorded: {where}",
                       attempts=attempts, log_tail=log_tail,
                       hint=hint + "; on a heavily loaded machine, a longer --stall rules load out")
    verdict = "fail" if attempt > 0 else "error"
    return Verdict(verdict, Outcome.TIMEOUT, f"attempt {attempt} hung{after}: {reason}; last recorded: {where}",
                   attempts=attempts, log_tail=log_tail, hint=hint)


def error_verdict(message: str, outcome: Outcome = Outcome.ERROR, **kw) -> Verdict:
    """A run that could not be judged (bad plan, launcher failure, ...)."""
    return Verdict("error", outcome, message, **kw)


_UNSEEDED = {"rng:python": "python's random is not seeded (random.seed)",
             "rng:numpy": "numpy's global RNG is not seeded (np.random.seed)",
             "rng:torch": "torch's RNG is not seeded (torch.manual_seed)",
             "rng:cuda": "the CUDA RNG is not seeded (torch.manual_seed seeds it)"}


def _nondeterminism_hint(fields: list[str]) -> str:
    unseeded = [_UNSEEDED[f] for f in fields if f in _UNSEEDED]
    if unseeded:
        return "; ".join(unseeded) + " (seed every RNG that the training draws from at startup, the same way on every run)"
    return ("an unseeded RNG is the common cause (numpy's above all); else nondeterministic kernels or "
            "uninitialized memory in the state (torch.empty; DeepSpeed ZeRO-3 pads its partitions so): "
            "torch.use_deterministic_algorithms(True) makes kernels deterministic and fills torch.empty; "
            "or data order (a sampler without a seed)")
