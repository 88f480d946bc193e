"""The bit-exact judgement of one trial: `assess` makes its `Verdict` (harness.oracle.outcome: frozen, its
verdict and outcome enums) once; `RunResult` is a Verdict with its trial's context. The lifecycle rows
of the table below (crash, fault_*, not_resumed, exit codes, stall/timeout) are the checks of
harness.oracle.lifecycle, shared with the elastic oracle; the others judge the training comparison.

Outcomes and their verdicts, in the order `assess` checks them (exit codes: harness.report.outcomes,
generated from OUTCOME_EXIT_CODES; the documentation's table is that one):

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
from dataclasses import dataclass, field, replace

from .compare import Comparison, Divergence, json_float
from .diagnosis import Diagnosis, diagnose, diagnose_rng
from .lifecycle import (BEFORE_COMPARISON, Lifecycle, RankEnd, check_exit_codes, check_exits_known, check_ranks_apart,
                        check_resumed, fault_where, first_finding, restart_warnings, split_resumes, timeout_verdict)
from .outcome import (EXIT_CODES, OUTCOME_EXIT_CODES, OUTCOMES, PASSING, VERDICTS, Finding, Outcome, Verdict,
                      VerdictKind, exit_code_of)
from .trace import Trace
from harness.trace_schema import Point

PASS, FAIL, ERROR = VerdictKind.PASS, VerdictKind.FAIL, VerdictKind.ERROR


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
    spec: dict = field(default_factory=dict)  # the trial's TrialSpec as JSON (harness.engine.spec; {}: none known)

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
            "plan": self.plan, "log_tail": v.log_tail, "spec": self.spec,
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
    not_recorded=None,
    log_tail: str | None = None,
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
    from an older one on purpose). not_recorded: auto mode's kinds of state it cannot record
    (``compared["not_recorded"]``). log_tail: the verdict's log tail where no check names a rank's own
    (the baseline's log, when it failed). The exported files' counts go into ``compared["artefacts"]``.
    """
    comparison = _with_inputs(comparison, not_recorded, artefacts)
    comparison = _with_artefacts(comparison, artefacts)
    warnings = list(comparison.warnings) if comparison else []
    base = dict(first_divergence=comparison.first if comparison else None,
                compared=dict(comparison.compared) if comparison else {},
                attempts=tuple(trial.attempt_summary()) if trial else ())
    if log_tail:
        base["log_tail"] = log_tail

    def done(verdict, outcome, message, **kw) -> Verdict:
        return Verdict(**{**base, "verdict": verdict, "outcome": outcome, "message": message,
                          "warnings": tuple(warnings), **kw})

    def found(finding: Finding, **kw) -> Verdict:
        return done(**{**finding.verdict_fields(), **kw})

    if baseline_error is not None:
        return done(ERROR, Outcome.BASELINE_FAILED, f"the baseline run failed: {baseline_error}")
    if baseline_repro is not None and baseline_repro.first is not None:
        d = baseline_repro.first
        where = f"first at step {d.step}, rank {d.rank}" if d.where == "trace" else f"in the final state of rank {d.rank}"
        return done(FAIL, Outcome.NONDETERMINISTIC_BASELINE,
                    f"the training is nondeterministic even without faults: two uninterrupted runs differ "
                    f"{where} ({', '.join(d.fields)})", first_divergence=d, hint=_nondeterminism_hint(d.fields),
                    diagnosis=diagnose(None, None, baseline_repro=baseline_repro))
    if comparison is None or trial is None:
        return done(ERROR, Outcome.ERROR, "no trial trace to judge")
    auto = _auto_verdict(trial, done, warnings)  # auto mode's own findings (harness.probe.auto)
    if auto is not None:
        return auto
    life = Lifecycle.of(trial, n_faults=n_faults, last_exits=last_exits, launched=launched)
    finding = first_finding(life, (*BEFORE_COMPARISON, check_ranks_apart))
    if finding is not None:
        return found(finding)
    restarts, resumes = split_resumes(life.summary)
    warnings += restart_warnings(restarts)

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
        return done(FAIL, Outcome.DIVERGENCE, describe(training) + also, first_divergence=training,
                    diagnosis=diag, **rng_kw)
    finding = check_resumed(life)
    if finding is not None:
        return found(finding, **rng_kw)
    if not accept_lost_progress:
        for nxt, prev in lost:
            newest = max(prev.committed_steps)
            got = nxt.resumed_from
            also = "; the files it exported differ too" if training is not None else ""
            return done(FAIL, Outcome.LOST_PROGRESS,
                        f"attempt {nxt.attempt} resumed from step {got}, but the newest checkpoint committed before "
                        f"the kill {fault_where(prev.fault)} was step {newest}: {newest - got} step(s) of progress "
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

    finding = first_finding(life, (check_exit_codes, check_exits_known))
    if finding is not None:
        return found(finding, **rng_kw)

    c = base["compared"]
    if not c.get("rows"):
        return done(ERROR, Outcome.NO_EVIDENCE,
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
            return done(PASS, Outcome.RNG_ACCEPTED,
                        f"training bit-exact: {rows}{note}{accepted_note}; accepted: {what} (--accept-rng)",
                        accepted=tuple(streams), **rng_kw)
        return done(FAIL, Outcome.RNG_ONLY,
                    f"{what}: {rows}, but a model drawing from {'that stream' if len(streams) == 1 else 'those streams'} "
                    f"(dropout, augmentation, sampling) would diverge{note}",
                    first_divergence=rng_first, diagnosis=rng_diag,
                    hint=f"restore the RNG state at the resume, or accept the difference knowingly with "
                         f"{' '.join('--accept-rng ' + st[4:] for st in streams)}", **rng_kw)
    return done(PASS, Outcome.BIT_EXACT, f"{rows}{note}{accepted_note}")


def _at(d: Divergence) -> str:
    if d.where != "trace":
        return f"the {d.where} state of rank {d.rank}"
    return f"step {d.step}, rank {d.rank} (attempt {d.attempt})"


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


def _with_inputs(comparison: Comparison | None, not_recorded, artefacts) -> Comparison | None:
    """The comparison with what the engine knows beside the traces in ``compared``: the kinds of state auto
    mode does not record, and the exported files' counts (``judged``)."""
    extra = {}
    if not_recorded is not None:
        extra["not_recorded"] = list(not_recorded)
    if artefacts is not None and hasattr(artefacts, "to_json"):
        extra["artefacts"] = artefacts.to_json().get("judged")
    if comparison is None or not extra:
        return comparison
    return replace(comparison, compared={**comparison.compared, **extra})


def _with_artefacts(comparison: Comparison | None, artefacts) -> Comparison | None:
    """The comparison with the exported artefacts' divergences added (training state, after the final state)."""
    divs = list(getattr(artefacts, "divergences", None) or [])
    if comparison is None or not divs:
        return comparison
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
        return done(ERROR, Outcome.ERROR, f"auto mode, attempt {e.attempt}, rank {e.rank}: {info.get('message')}")
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
        return done(FAIL, Outcome.UNKNOWN_RESUME_STATE,
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
    for e in sorted(trial.events(Point.COMMITTED), key=lambda e: (e.attempt, e.time or 0.0)):
        info = e.info if isinstance(e.info, dict) else {}
        p = info.get("path")
        if e.attempt < attempt and p and isinstance(e.event_step, int):
            p = os.path.normpath(str(p))
            # the same file, a file inside a saved folder, or a file saved as path.tmp and renamed into place
            if p == target or target.startswith(p.rstrip(os.sep) + os.sep) or p.startswith(target + "."):
                found = (e.event_step, str(path))
    return found


def error_verdict(message: str, outcome: Outcome = Outcome.ERROR, **kw) -> Verdict:
    """A run that could not be judged (bad plan, launcher failure, ...)."""
    return Verdict(ERROR, outcome, message, **kw)


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


__all__ = [  # the judgement, and the outcome table and lifecycle names it was the home of (re-exported)
    "assess", "describe", "error_verdict", "RunResult", "jsonable",
    "EXIT_CODES", "OUTCOME_EXIT_CODES", "OUTCOMES", "PASSING", "VERDICTS", "Finding", "Outcome", "Verdict",
    "VerdictKind", "exit_code_of", "RankEnd", "timeout_verdict",
]
