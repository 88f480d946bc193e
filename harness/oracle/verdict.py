"""The verdict of one trial: RunResult, and `assess`, which derives it from the recorded traces.

Outcomes and their verdicts, in the order `assess` checks them:

| outcome                    | verdict | when |
|----------------------------|---------|------|
| baseline_failed            | error   | the uninterrupted run itself failed (the caller says so) |
| nondeterministic_baseline  | fail    | two uninterrupted runs differ: the training is not reproducible, resume or not |
| crash_on_resume            | fail    | a rank of a resumed attempt (> 0) ended without finishing and without a fault |
| crash                      | error   | the same in attempt 0, before any fault: the baseline ran this code fine |
| fault_not_fired            | error   | an attempt that armed a fault finished without it firing |
| divergence                 | fail    | a trace row or the final state differs, or the trial missed steps |
| not_resumed                | fail    | a checkpoint was committed before the kill, yet the next attempt restarted from step 1 |
| not_resumed                | error   | no checkpoint existed before the kill: the trial restarted from scratch, resume untested |
| bit_exact                  | pass    | everything compared is equal, bit for bit |
| error                      | error   | anything else that stopped the harness (the caller builds it) |
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .compare import Comparison, Divergence, json_float
from .trace import Trace

OUTCOMES = (
    "bit_exact", "divergence", "nondeterministic_baseline", "not_resumed", "crash_on_resume",
    "crash", "fault_not_fired", "baseline_failed", "error",
)
EXIT_CODES = {"pass": 0, "fail": 1, "error": 2}


def jsonable(x):
    """Plain JSON types only: Paths and other objects become strings, non-finite floats "inf"/"nan"."""
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


@dataclass
class RunResult:
    verdict: str  # "pass" | "fail" | "error"
    outcome: str  # one of OUTCOMES
    message: str
    target: str = ""
    nproc: int = 0
    backend: str = ""
    seed: int | None = None
    plan: str = ""
    first_divergence: Divergence | None = None
    compared: dict = field(default_factory=dict)
    attempts: list[dict] = field(default_factory=list)
    log_tail: str | None = None
    replay: str = ""
    out_dir: str = ""
    timings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.verdict, 2)

    def to_json(self) -> dict:
        return jsonable({
            "verdict": self.verdict, "outcome": self.outcome, "message": self.message,
            "first_divergence": self.first_divergence.to_json() if self.first_divergence else None,
            "compared": self.compared, "attempts": self.attempts, "replay": self.replay,
            "out_dir": str(self.out_dir), "timings": self.timings, "warnings": self.warnings,
            "target": self.target, "nproc": self.nproc, "backend": self.backend, "seed": self.seed,
            "plan": self.plan, "log_tail": self.log_tail,
        })


def describe(d: Divergence) -> str:
    """One line naming a divergence: where, and which fields."""
    fields = ", ".join(d.fields)
    if d.where == "final":
        return f"final state of rank {d.rank} differs: {fields}"
    if d.fields == ["missing"]:
        return f"the trial never reached step {d.step} on rank {d.rank}"
    if d.fields == ["extra"]:
        return f"the trial ran step {d.step} on rank {d.rank}, which the baseline never had"
    return f"step {d.step}, rank {d.rank}, attempt {d.attempt}: {fields} differ"


def _crashed_rank(trial: Trace, attempt: int, exit_codes: dict | None) -> int | None:
    """A rank of `attempt` that did not finish; the one that failed by itself when exit codes say so."""
    unfinished = [r for r in trial.ranks if not trial.finished(r, attempt)]
    if not unfinished:
        return None
    codes = exit_codes or {}
    for test in (lambda c: c is not None and c > 0, lambda c: c not in (None, 0)):
        hit = [r for r in unfinished if test(codes.get(r))]
        if hit:
            return hit[0]
    return unfinished[0]


def assess(
    comparison: Comparison | None,
    trial: Trace | None,
    *,
    n_faults: int | None = None,
    baseline_repro: Comparison | None = None,
    baseline_error: str | None = None,
    exit_codes: dict[int, int | None] | None = None,
    log_tails: dict[int, str] | None = None,
) -> dict:
    """Derive verdict, outcome, message, first_divergence, compared, attempts, log_tail, warnings.

    comparison: compare_runs(baseline, trial). trial: the trial's Trace. n_faults: faults in the plan
    (attempt i arms fault i). baseline_repro: compare_runs(baseline, second baseline), if one was run.
    baseline_error: why the baseline failed, if it did. exit_codes / log_tails: per rank, of the last
    attempt. Returns keyword arguments for RunResult (add target, nproc, backend, seed, plan, replay...).
    """
    warnings = list(comparison.warnings) if comparison else []
    out = {"first_divergence": comparison.first if comparison else None,
           "compared": dict(comparison.compared) if comparison else {},
           "attempts": trial.attempt_summary() if trial else [], "log_tail": None, "warnings": warnings}

    def done(verdict, outcome, message, **kw):
        return {**out, "verdict": verdict, "outcome": outcome, "message": message, **kw}

    if baseline_error is not None:
        return done("error", "baseline_failed", f"the baseline run failed: {baseline_error}")
    if baseline_repro is not None and baseline_repro.first is not None:
        d = baseline_repro.first
        where = f"first at step {d.step}, rank {d.rank}" if d.where == "trace" else f"in the final state of rank {d.rank}"
        return done("fail", "nondeterministic_baseline",
                    f"the training is nondeterministic even without faults: two uninterrupted runs differ "
                    f"{where} ({', '.join(d.fields)}); {_nondeterminism_hint(d.fields)}",
                    first_divergence=d)
    if comparison is None or trial is None:
        return done("error", "error", "no trial trace to judge")

    summary = out["attempts"]
    last = summary[-1] if summary else None
    if last and not last["finished"] and last["fault"] is None:
        a = last["attempt"]
        r = _crashed_rank(trial, a, exit_codes)
        code = (exit_codes or {}).get(r)
        tail = (log_tails or {}).get(r)
        steps = [row["step"] for row in trial.steps(r, a)] if r is not None else []
        at = f"its last step was {max(steps)}" if steps else "it recorded no step"
        how = f" (exit code {code})" if code is not None else ""
        if a > 0:
            return done("fail", "crash_on_resume", f"rank {r} crashed in attempt {a}, after the resume{how}; {at}",
                        log_tail=tail)
        return done("error", "crash", f"rank {r} crashed in attempt 0, before any fault fired{how}; {at}",
                    log_tail=tail)

    recorded = {s["attempt"] for s in summary}
    for a in range(len(summary) and max(recorded) + 1):
        if a not in recorded:
            return done("error", "error", f"attempt {a} recorded no trace row: did its ranks start? "
                                          f"See attempt{a}/rank*.log")
    for s in summary:
        if s["attempt"] < (n_faults or 0) and s["fault"] is None and s["finished"]:
            return done("error", "fault_not_fired",
                        f"fault {s['attempt'] + 1} of the plan never fired: attempt {s['attempt']} finished "
                        f"at step {s['last_step']} without reaching it")

    restarts = []  # (attempt after a fault, that attempt's summary, summary of the attempt with the fault)
    for prev, nxt in zip(summary, summary[1:]):
        if prev["fault"] is not None and not nxt["loaded"] and nxt["first_step"] is not None and nxt["first_step"] <= 1:
            restarts.append((nxt, prev))
    for nxt, prev in restarts:
        if prev["committed_steps"]:
            warnings.append(f"attempt {nxt['attempt']} restarted from step 1 although checkpoint(s) at step(s) "
                            f"{prev['committed_steps']} were committed before the kill")

    if comparison.first is not None:
        return done("fail", "divergence", describe(comparison.first))
    for nxt, prev in restarts:
        kill = prev["fault"].get("step")
        if prev["committed_steps"]:
            return done("fail", "not_resumed",
                        f"checkpoint(s) at step(s) {prev['committed_steps']} were committed before the kill after "
                        f"step {kill}, but attempt {nxt['attempt']} restarted from step 1 without loading one")
        return done("error", "not_resumed",
                    f"the trial never resumed: no checkpoint existed before the kill after step {kill}, so attempt "
                    f"{nxt['attempt']} restarted from scratch; this plan did not test resumption")

    c = out["compared"]
    return done("pass", "bit_exact",
                f"{c.get('rows', 0)} step rows ({c.get('reexecuted_rows', 0)} re-executed) on "
                f"{c.get('ranks', 0)} rank(s) and {c.get('final_tensors', 0)} final tensors match the baseline")


_UNSEEDED = {"rng:python": "python's random is not seeded (random.seed)",
             "rng:numpy": "numpy's global RNG is not seeded (np.random.seed)",
             "rng:torch": "torch's RNG is not seeded (torch.manual_seed)",
             "rng:cuda": "the CUDA RNG is not seeded (torch.manual_seed seeds it)"}


def _nondeterminism_hint(fields: list[str]) -> str:
    unseeded = [_UNSEEDED[f] for f in fields if f in _UNSEEDED]
    if unseeded:
        return "; ".join(unseeded) + " (seed every RNG at startup, the same way on every run)"
    return ("an unseeded RNG is the common cause (numpy's above all); else nondeterministic kernels "
            "(torch.use_deterministic_algorithms(True)) or data order (a sampler without a seed)")
