"""Explain a failing trial: name the likely cause of the first divergence, with the evidence.

A checker over the recorded histories (both traces), run after the comparison. It looks at the first
divergence: which fields differ, on which ranks, at which step relative to the resume point, and
what the resumed attempt loaded; then it matches the classic resume mistakes, most specific first:

| cause | signature |
|---|---|
| ``baseline_nondeterminism`` | two uninterrupted runs differ (no fault needed) |
| ``partial_checkpoint`` | the resumed attempt loaded a checkpoint that was never committed |
| ``rng_from_other_rank`` | a rank's RNG state after the resume is another rank's state in the baseline |
| ``accumulation_position`` | an accumulation counter (a step extra named like ``window``, ``accum``, ``micro``) differs |
| ``rng_not_restored`` | global RNG streams (python, numpy, or several with torch) differ from the first step after the resume |
| ``torch_rng`` | torch's global RNG differs, python and numpy match: not restored, or drawn from during the resume (a DataLoader iterator without a generator) |
| ``data_order`` | a recorded epoch / data position differs, or the batch is another step's batch of the baseline (a replayed order; both checked first), or the batch differs while every RNG stream matches: sampler epoch not set, or the position in the epoch lost (workers' RNG too, with num_workers > 0) |
| ``lr_schedule`` | a param group's hyperparameter (lr) differs: the scheduler was not restored |
| ``optimizer_state`` | optimizer state differs (its step counts): not saved or not restored |
| ``reduction_order`` | only the update differs (batch, loss, RNG match; optimizer step counts match), at world size >= 3: the all-reduce summation order changed after the restart (DDP's bucket rebuild) |
| ``unregistered_object`` | only an ``extra`` value differs while the model, optimizer and data match: state the checkpoint does not hold |

A Diagnosis is a hypothesis from evidence, never a verdict: it does not change the outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .compare import Comparison, Divergence
from .trace import Trace

_RNG = ("rng:python", "rng:numpy", "rng:torch")
_ACCUM = re.compile(r"accum|window|micro", re.I)
#: Extras that name the data position: when one differs, the data order was not restored (whatever else follows).
_DATA_POSITION = re.compile(r"epoch|data_position|sample", re.I)


@dataclass(frozen=True)
class Diagnosis:
    """The likely cause of a failure (``cause``, an id of the module docstring's table), what it
    means (``summary``) and the evidence it rests on."""

    cause: str
    summary: str
    evidence: str

    def to_json(self) -> dict:
        return {"cause": self.cause, "summary": self.summary, "evidence": self.evidence}


def _resume_point(trial: Trace, attempt: int | None) -> int | None:
    for s in trial.attempt_summary():
        if s.attempt == attempt:
            if s.resumed_from is not None:
                return s.resumed_from
            return None if s.first_step is None else s.first_step - 1
    return None


def _where(d: Divergence, resumed: int | None) -> str:
    if resumed is None or d.step is None:
        return f"at step {d.step}"
    if d.step == resumed + 1:
        return f"at step {d.step}, the first step after the resume from step {resumed}"
    return f"at step {d.step}, {d.step - resumed} steps after the resume from step {resumed}"


def _row(trace: Trace, rank: int, step: int, attempt: int | None = None):
    for row in trace.steps(rank):
        if row.step == step and (attempt is None or row.attempt == attempt):
            return row
    return None


def _other_rank_rng(base: Trace, trial: Trace, d: Divergence) -> int | None:
    """The rank whose baseline RNG state the diverging rank holds at this step, if any."""
    mine = _row(trial, d.rank, d.step, d.attempt)
    if mine is None:
        return None
    for r in base.ranks:
        if r == d.rank:
            continue
        theirs = _row(base, r, d.step)
        if theirs is None:
            continue
        same = [s for s in ("python", "numpy", "torch")
                if mine.rng.get(s) is not None and mine.rng.get(s) == theirs.rng.get(s)]
        if same:
            return r
    return None


def _replayed_batch(base: Trace, trial: Trace, d: Divergence) -> int | None:
    """The baseline step whose batch the diverging row holds, when it is another step's (a replayed order)."""
    mine = _row(trial, d.rank, d.step, d.attempt)
    if mine is None or mine.batch is None:
        return None
    for row in base.steps(d.rank):
        if row.step != d.step and row.batch == mine.batch:
            return row.step
    return None


def _optimizer_step_counts_differ(d: Divergence) -> bool:
    return any(t.name.startswith("optimizer state step of") for t in d.tensors)


def _groups_differ(d: Divergence) -> list[str]:
    return re.findall(r"optimizer: (param_groups/\S+ \S+ vs \S+)", d.note or "")


def diagnose(comparison: Comparison | None, trial: Trace | None, base: Trace | None = None, *,
             world_size: int | None = None, baseline_repro: Comparison | None = None) -> Diagnosis | None:
    """The likely cause of the first divergence (None when nothing diverged or nothing fits)."""
    if baseline_repro is not None and baseline_repro.first is not None:
        d = baseline_repro.first
        streams = [f for f in d.fields if f.startswith("rng:")]
        what = f"{', '.join(streams)} differ" if streams else f"{', '.join(d.fields)} differ"
        return Diagnosis("baseline_nondeterminism",
                         "the training is not reproducible even without a fault: an unseeded RNG stream, a "
                         "nondeterministic kernel or an unseeded data order",
                         f"two uninterrupted runs: {what} at step {d.step} on rank {d.rank}")
    if comparison is None or trial is None or comparison.first is None:
        return None
    d = comparison.first
    resumed = _resume_point(trial, d.attempt)
    where = _where(d, resumed)
    fields = set(d.fields)

    partial = _partial_checkpoint(trial, d.attempt)
    if partial:
        return partial

    if d.where == "final":
        extras = sorted(f[6:] for f in fields if f.startswith("extra:"))
        if extras and not fields & {"params", "optimizer"}:
            return Diagnosis("unregistered_object" if not any(_ACCUM.search(e) for e in extras)
                             else "accumulation_position",
                             f"state the checkpoint does not hold: {', '.join(extras)} (register it with "
                             "register_for_checkpointing, or save and load it yourself)",
                             f"only the final {', '.join('extra:' + e for e in extras)} differ(s) on rank {d.rank}; "
                             "every step row matched")
        return None

    rng = fields & set(_RNG)
    if rng and d.rank != 0 and base is not None:
        other = _other_rank_rng(base, trial, d)
        if other is not None:
            return Diagnosis("rng_from_other_rank",
                             f"rank {d.rank}'s RNG state was restored from rank {other}'s: the per-rank RNG "
                             "states must be saved and restored per rank",
                             f"{', '.join(sorted(rng))} differ on rank {d.rank} {where}, and equal rank {other}'s "
                             f"state at the same step of the baseline")
    # Evidence of a lost data position beats the RNG rules: a fresh epoch also draws a loader's base seed.
    position = sorted(f for f in fields if f.startswith("extra:") and _DATA_POSITION.search(f))
    replayed = _replayed_batch(base, trial, d) if "batch" in fields and base is not None else None
    if position or replayed is not None:
        evidence = (f"{', '.join(position)} differ(s) {where} on rank {d.rank}" if position else
                    f"the batch {where} on rank {d.rank} is the baseline's batch of step {replayed}")
        return Diagnosis("data_order",
                         "the data order or position was not restored: the resumed loop went back to another part "
                         "of the order (the sampler's epoch or the position in the epoch not restored)", evidence)
    accum = sorted(f for f in fields if f.startswith("extra:") and _ACCUM.search(f))
    if accum:
        return Diagnosis("accumulation_position",
                         "the gradient-accumulation position was lost: the resumed step accumulates a "
                         "different number of micro-batches than the baseline's",
                         f"{', '.join(accum)} differ(s) on rank {d.rank} {where}, with "
                         f"{', '.join(sorted(fields - set(accum)))}")
    if rng and rng != {"rng:torch"}:
        names = ", ".join(s[4:] for s in sorted(rng))
        ok = [s for s in _RNG if s not in rng and s in comparison.compared.get("fields", [])]
        return Diagnosis("rng_not_restored",
                         f"the {names} global RNG{'s were' if len(rng) > 1 else ' was'} not saved or not restored "
                         "(or the resume drew from them before the first step)",
                         f"{', '.join(sorted(rng))} differ{'s' if len(rng) == 1 else ''} {where} on rank {d.rank}"
                         + (f"; {', '.join(ok)} match" if ok else ""))
    if rng == {"rng:torch"}:
        return Diagnosis("torch_rng",
                         "torch's global RNG stream is off after the resume: it was not restored, or the resume "
                         "drew from it (a DataLoader iterator created without generator= draws its base seed "
                         "from the global torch RNG)",
                         f"rng:torch differs {where} on rank {d.rank}; rng:python and rng:numpy match")
    if "batch" in fields:
        return Diagnosis("data_order",
                         "the data order or position was not restored: the sampler's epoch not set on resume, "
                         "the position within the epoch lost, or (with num_workers > 0) the workers' RNG",
                         f"the batch differs {where} on rank {d.rank} while every RNG stream matches")
    groups = _groups_differ(d)
    if groups or "extra:lr" in fields:
        what = "; ".join(groups) if groups else "extra:lr differs"
        return Diagnosis("lr_schedule",
                         "the learning-rate schedule was not restored (scheduler state not saved or not loaded)",
                         f"{what} {where}; the batch, loss and RNG streams match")
    if fields & {"params", "optimizer"} and not fields & {"batch", "loss", *_RNG}:
        if _optimizer_step_counts_differ(d):
            return Diagnosis("optimizer_state",
                             "the optimizer state was not saved or not restored (its step counts restart)",
                             f"the optimizer's step counts differ {where} on rank {d.rank}; the batch, loss and "
                             "RNG streams match")
        if world_size is not None and world_size >= 3:
            return Diagnosis("reduction_order",
                             "the gradient all-reduce summed in a different order after the restart (DDP rebuilds "
                             "its gradient buckets after a process's first iteration): register an order-invariant "
                             "reduction (the reference checkpointer's prepare does)",
                             f"only the update differs {where} (params, optimizer), at world size {world_size}; "
                             "the batch, loss, RNG streams and optimizer step counts match")
        return Diagnosis("optimizer_state",
                         "the optimizer state (moments) was not saved or not restored",
                         f"params and optimizer differ {where}; the batch, loss and RNG streams match")
    extras = sorted(f for f in fields if f.startswith("extra:"))
    if extras and fields <= set(extras):
        return Diagnosis("unregistered_object",
                         f"state the checkpoint does not hold: {', '.join(e[6:] for e in extras)} (register it with "
                         "register_for_checkpointing)",
                         f"only {', '.join(extras)} differ(s) {where}; the model, optimizer and data match")
    return None


def _partial_checkpoint(trial: Trace, attempt: int | None) -> Diagnosis | None:
    """The attempt loaded a checkpoint whose commit the earlier attempts never recorded."""
    summary = {s.attempt: s for s in trial.attempt_summary()}
    s, prev = summary.get(attempt), summary.get((attempt or 0) - 1)
    if s is None or prev is None or s.resumed_from is None or not prev.committed_steps:
        return None
    if s.resumed_from not in prev.committed_steps:
        return Diagnosis("partial_checkpoint",
                         "the resume loaded a checkpoint that was never committed (a torn or partial save)",
                         f"attempt {attempt} loaded step {s.resumed_from}; the commits recorded before were "
                         f"{list(prev.committed_steps)}")
    return None
