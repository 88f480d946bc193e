"""Explain a failing trial: name the likely cause of a divergence, with the evidence.

A checker over the recorded histories (both traces), run after the comparison. A trial has up to two
first divergences, each explained on its own: the first divergence of the *training state* (loss,
batch, parameters, optimizer, extras, final state, exported artefacts) and the first divergence of
an *RNG stream*. An RNG stream that already differed before the training divergence, while training
stayed exact, is latent: it is not taken as the training divergence's cause.

Every rule reads evidence that any script leaves, in probe mode and in auto mode alike: which fields
differ, on which ranks, at which step relative to the resume; the step's backward calls, the batches
the loader yielded and the param groups' hyperparameters (``harness.probe.evidence``); the RNG states
of every rank; the faults and the commits. No rule reads the name of a step extra. Causes, most
specific first (other causes that fit are listed in ``Diagnosis.also``):

| cause | signature |
|---|---|
| ``baseline_nondeterminism`` | two uninterrupted runs differ (no fault needed) |
| ``partial_checkpoint`` | the resumed attempt loaded a checkpoint that was never committed |
| ``computed_after_peer_died`` | the diverging rank computed a step after a peer was faulted earlier in the same attempt |
| ``exported_state`` | only an exported file (an EMA's ``torch.save``) or auto mode's averaged model differs |
| ``accumulation_position`` | a step of the resumed attempt ran another number of backward calls than the baseline's |
| ``data_order`` | the loader's batch is another baseline step's (a replayed order), or differs from the baseline's; or the batch differs while every RNG stream matches |
| ``rng_from_other_rank`` | exactly the diverging RNG streams equal another rank's baseline state (which differs from the rank's own) |
| ``rng_not_restored`` | python or numpy (or several) global RNG streams differ from the resume on |
| ``torch_rng`` | only torch's global RNG differs: not restored, or drawn from during the resume (a DataLoader iterator without a generator) |
| ``lr_schedule`` | a param group's hyperparameter (lr) differs at the diverging step: the scheduler was not restored |
| ``optimizer_state`` | only the update differs and the optimizer's step counts differ, or at world size < 3 |
| ``reduction_order`` | only the update differs (inputs, RNG, hyperparameters, step counts match), at world size >= 3: the all-reduce summation order changed after the restart (DDP's bucket rebuild) |
| ``unregistered_object`` | only an ``extra`` value differs while the model, optimizer and data match: state the checkpoint does not hold |

A Diagnosis is a hypothesis from evidence, never a verdict: it does not change the outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .compare import Comparison, Divergence, same
from .trace import Trace

_RNG = ("rng:python", "rng:numpy", "rng:torch")


@dataclass(frozen=True)
class Diagnosis:
    """The likely cause of a failure (``cause``, an id of the module docstring's table), what it
    means (``summary``) and the evidence it rests on."""

    cause: str
    summary: str
    evidence: str
    also: tuple = ()  # other causes the evidence fits too (Diagnosis each), most likely first

    def to_json(self) -> dict:
        out = {"cause": self.cause, "summary": self.summary, "evidence": self.evidence}
        if self.also:
            out["also"] = [a.to_json() for a in self.also]
        return out


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


def _other_rank_rng(base: Trace, trial: Trace, d: Divergence, rng: set[str]) -> int | None:
    """The rank whose baseline state of exactly the diverging streams the diverging rank holds at this
    step, where those streams differ between the two ranks in the baseline (a stream equal on every rank
    says nothing)."""
    mine = _row(trial, d.rank, d.step, d.attempt)
    own = _row(base, d.rank, d.step)
    streams = [f[4:] for f in rng]
    if mine is None or own is None or not streams:
        return None
    for r in base.ranks:
        if r == d.rank:
            continue
        theirs = _row(base, r, d.step)
        if theirs is None:
            continue
        if all(mine.rng.get(s) is not None and mine.rng.get(s) == theirs.rng.get(s) != own.rng.get(s)
               for s in streams):
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


def _latent_rng(comparison: Comparison, d: Divergence) -> set[str]:
    """RNG streams that already differed before ``d`` (on any rank) while training stayed exact: a latent
    difference (a DataLoader iterator drawing its base seed at another moment) that did not cause ``d``."""
    key = d.sort_key()
    return {f for x in comparison.divergences if x.sort_key() < key for f in x.fields if f.startswith("rng:")}


def _backward_mismatch(base: Trace, trial: Trace, d: Divergence) -> tuple[int, int, int] | None:
    """(step, baseline's, trial's) backward-call count of the first row of d's attempt up to d that differs."""
    for row in trial.steps(d.rank, d.attempt):
        if d.step is not None and row.step > d.step:
            break
        b = _row(base, d.rank, row.step)
        if b is not None and isinstance(b.backward, int) and isinstance(row.backward, int) and b.backward != row.backward:
            return row.step, b.backward, row.backward
    return None


def _hyper(row) -> list | None:
    groups = row.optimizer_groups if row.optimizer_groups else row.hyper
    if groups and isinstance(groups[0], list):  # evidence: per optimizer, per group
        groups = [g for opt in groups for g in opt]
    return groups or None


def _hyper_differs(base: Trace, trial: Trace, d: Divergence) -> list[str]:
    """The param-group hyperparameters (lr, ...) that differ at d's row: ``param_groups/0/lr 0.009 vs 0.01``."""
    mine = _row(trial, d.rank, d.step, d.attempt)
    theirs = _row(base, d.rank, d.step) if mine is not None else None
    if mine is None or theirs is None:
        return []
    gb, gt = _hyper(theirs), _hyper(mine)
    if not gb or not gt:
        return []
    out = []
    for i, (x, y) in enumerate(zip(gb, gt)):
        if not isinstance(x, dict) or not isinstance(y, dict):
            continue
        for k in [*x, *(k for k in y if k not in x)]:
            if k in ("initial_lr",) or same(x.get(k), y.get(k)):
                continue
            out.append(f"param_groups/{i}/{k} {x.get(k, '-')!r} vs {y.get(k, '-')!r}")
    return out


def _order_key(row):
    """What a row's loader batches say about the data order: the sampler's indices when recorded, else
    the batches as the loader yielded them (which include any augmentation done in the dataset)."""
    if isinstance(row.samples, list) and row.samples:
        return "samples", row.samples
    if row.fetched is not None:
        return "fetched", row.fetched
    return None, None


def _fetched_replayed(base: Trace, trial: Trace, d: Divergence) -> int | None:
    """The baseline step whose loader batches the diverging row fetched, when they are another step's."""
    mine = _row(trial, d.rank, d.step, d.attempt)
    if mine is None:
        return None
    kind, key = _order_key(mine)
    if key is None:
        return None
    theirs = _row(base, d.rank, d.step)
    if theirs is not None and getattr(theirs, kind) == key:
        return None
    for row in base.steps(d.rank):
        if row.step != d.step and getattr(row, kind) == key:
            return row.step
    return None


def _window_shift(base: Trace, trial: Trace, d: Divergence) -> tuple[int, int, int] | None:
    """(step, micro-batch index, baseline step) when the first step of d's attempt consumed the baseline's
    micro-batch stream from a point inside another step's window: the same samples, grouped into optimizer
    steps at another offset (an accumulation window cut by the checkpoint)."""
    rows = trial.steps(d.rank, d.attempt)
    first = rows[0] if rows else None
    kind, want = _order_key(first) if first is not None else (None, None)
    if not isinstance(want, list) or not want:
        return None
    stream = []  # (baseline step, index in its window, digest)
    seen = set()
    for row in base.steps(d.rank):
        key = getattr(row, kind)
        if row.step in seen or not isinstance(key, list):
            continue
        seen.add(row.step)
        stream += [(row.step, i, f) for i, f in enumerate(key)]
    digests = [f for _, _, f in stream]
    for p in range(len(stream)):
        if digests[p:p + len(want)] == want or (len(digests) - p < len(want) and digests[p:] == want[:len(digests) - p]):
            step, i, _ = stream[p]
            return (first.step, i, step) if i != 0 else None
    return None


def _fetched_differs(base: Trace, trial: Trace, d: Divergence) -> str | None:
    """"samples" when the sampler's indices differ from the baseline's at d's row (the data order itself),
    "fetched" when only the loader's batches do (order or augmentation), None when equal or unknown."""
    mine = _row(trial, d.rank, d.step, d.attempt)
    theirs = _row(base, d.rank, d.step)
    if mine is None or theirs is None:
        return None
    kind, key = _order_key(mine)
    other = getattr(theirs, kind) if kind else None
    if key is None or other is None or other == key:
        return None
    return kind


def _peer_died(trial: Trace, d: Divergence) -> tuple[int, int, str] | None:
    """(rank, step, signal) of a peer faulted earlier in d's attempt, when d's rank computed past it."""
    if d.where != "trace" or d.step is None:
        return None
    for f in trial.faults():
        if f.attempt == d.attempt and f.rank != d.rank and d.step > f.step:
            sig = f.fault.get("signal", "SIGKILL") if isinstance(f.fault, dict) else "SIGKILL"
            return f.rank, f.step, sig
    return None


def _rng_diagnosis(base: Trace | None, trial: Trace, d: Divergence, rng: set[str], where: str,
                   compared_fields) -> Diagnosis | None:
    """The cause of an RNG stream difference at d (the streams in ``rng``)."""
    if not rng:
        return None
    if d.rank != 0 and base is not None:
        other = _other_rank_rng(base, trial, d, rng)
        if other is not None:
            return Diagnosis("rng_from_other_rank",
                             f"rank {d.rank}'s RNG state was restored from rank {other}'s: the per-rank RNG "
                             "states must be saved and restored per rank",
                             f"{', '.join(sorted(rng))} differ on rank {d.rank} {where}, and each equals rank {other}'s "
                             f"state at the same step of the baseline (where the two ranks' states differ)")
    if rng != {"rng:torch"}:
        names = ", ".join(s[4:] for s in sorted(rng))
        ok = [s for s in _RNG if s not in rng and s in compared_fields]
        return Diagnosis("rng_not_restored",
                         f"the {names} global RNG{'s were' if len(rng) > 1 else ' was'} not saved or not restored "
                         "(or the resume drew from them before the first step)",
                         f"{', '.join(sorted(rng))} differ{'s' if len(rng) == 1 else ''} {where} on rank {d.rank}"
                         + (f"; {', '.join(ok)} match" if ok else ""))
    return Diagnosis("torch_rng",
                     "torch's global RNG stream is off after the resume: it was not restored, or the resume "
                     "drew from it (a DataLoader iterator created without generator= draws its base seed "
                     "from the global torch RNG)",
                     f"rng:torch differs {where} on rank {d.rank}; rng:python and rng:numpy match")


def diagnose(comparison: Comparison | None, trial: Trace | None, base: Trace | None = None, *,
             world_size: int | None = None, baseline_repro: Comparison | None = None,
             divergence: Divergence | None = None) -> Diagnosis | None:
    """The likely cause of a divergence (default: the first training divergence, else the first RNG one);
    None when nothing diverged or nothing fits. Every rule reads evidence that any script leaves (the
    fields that differ, the backward calls, the loader's batches, the hyperparameters, the RNG states,
    the faults and commits), never the name of a step extra. Other causes that fit too are in ``also``."""
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
    d = divergence or comparison.training or comparison.first
    resumed = _resume_point(trial, d.attempt)
    where = _where(d, resumed)
    fields = set(d.fields)
    rng_only = not any(not f.startswith("rng:") for f in fields)
    compared_fields = comparison.compared.get("fields", [])

    partial = _partial_checkpoint(trial, d.attempt)
    if partial:
        return partial
    if rng_only:
        return diagnose_rng(comparison, trial, base) if d is comparison.rng else _rng_diagnosis(
            base, trial, d, fields, where, compared_fields)

    found: list[Diagnosis] = []

    def hit(cause, summary, evidence):
        if all(x.cause != cause for x in found):
            found.append(Diagnosis(cause, summary, evidence))

    peer = _peer_died(trial, d)
    if peer is not None:
        prank, pstep, sig = peer
        hit("computed_after_peer_died",
            f"rank {d.rank} kept training after its peer died: it computed step {d.step} after rank {prank} was "
            f"killed at step {pstep} ({sig}), so its collectives summed stale or partial buffers (a comm hook "
            "or a collective whose failure is ignored); a rank must stop when a peer is gone",
            f"rank {d.rank} computed step {d.step} after rank {prank} was killed at step {pstep}")

    if d.where == "artefact":
        files = [f.split(":", 1)[1] for f in d.fields if f.startswith("artefact:")]
        names = ", ".join(t.name for t in d.tensors[:3]) or "its tensors"
        hit("exported_state",
            f"state the script exports but never checkpoints (an EMA or averaged model, a running statistic) "
            f"restarted after the resume: {', '.join(files)} differs",
            f"{', '.join(files)}: {names} differ(s) from the baseline's export; every compared step row matched"
            if comparison.training is d else f"{', '.join(files)}: {names} differ(s)")
        return _with_also(found)

    if d.where == "final":
        extras = sorted(f[6:] for f in fields if f.startswith("extra:"))
        averaged = [f for f in fields if f == "averaged"]
        if averaged and not fields & {"params", "optimizer"}:
            hit("exported_state",
                "an averaged model (EMA, SWA) is not in the checkpoint: it restarted from the current weights "
                "after the resume",
                f"only the final averaged/... tensors differ on rank {d.rank}; every step row matched")
        if extras and not fields & {"params", "optimizer"}:
            hit("unregistered_object",
                f"state the checkpoint does not hold: {', '.join(extras)} (register it with "
                "register_for_checkpointing, or save and load it yourself)",
                f"only the final {', '.join('extra:' + e for e in extras)} differ(s) on rank {d.rank}; "
                "every step row matched")
        return _with_also(found)

    latent = _latent_rng(comparison, d)
    rng = (fields & {f for f in fields if f.startswith("rng:")}) - latent
    latent_note = (f" ({', '.join(sorted(fields & latent))} already differed before, without effect on training)"
                   if fields & latent else "")
    inputs = bool(fields & {"batch", "loss"})

    back = _backward_mismatch(base, trial, d) if base is not None else None
    if back is not None:
        step, nb, nt = back
        hit("accumulation_position",
            "the gradient-accumulation position was lost: the resumed step accumulates a different number of "
            "micro-batches than the baseline's",
            f"step {step} ran {nt} backward call(s) on rank {d.rank} where the baseline ran {nb}")
    shift = _window_shift(base, trial, d) if base is not None and inputs else None
    if shift is not None:
        step, i, bstep = shift
        hit("accumulation_position",
            "the gradient-accumulation position was lost: the resumed run groups the same micro-batches into "
            "optimizer steps at another offset (the window counter, and the gradients accumulated so far, were "
            "not restored)",
            f"step {step} on rank {d.rank} begins with micro-batch {i + 1} of the baseline's step {bstep} window")
    if base is not None and inputs:
        replayed = _fetched_replayed(base, trial, d)
        if replayed is None and "batch" in fields:
            replayed = _replayed_batch(base, trial, d)
        if replayed is not None:
            hit("data_order",
                "the data order or position was not restored: the resumed loop went back to another part of the "
                "order (the sampler's epoch or the position in the epoch not restored)",
                f"the batch {where} on rank {d.rank} is the baseline's batch of step {replayed}")
        elif (differs := _fetched_differs(base, trial, d)) == "samples" or (differs and not rng):
            # The sampler's indices are the order itself; the loader's batches are, only when no RNG stream
            # (augmentation in the dataset) differs.
            hit("data_order",
                "the data order or position was not restored: the loader yields other samples after the resume "
                "(the sampler's epoch not set, the position in the epoch lost, or a reshuffled order)",
                f"the loader's batch {where} on rank {d.rank} differs from the baseline's")
    if inputs and rng:
        r = _rng_diagnosis(base, trial, d, rng, where, compared_fields)
        if r is not None:
            hit(r.cause, r.summary, r.evidence + latent_note)
    if inputs and "batch" in fields and not rng:
        hit("data_order",
            "the data order or position was not restored: the sampler's epoch not set on resume, the position "
            "within the epoch lost, or (with num_workers > 0) the workers' RNG",
            f"the batch differs {where} on rank {d.rank} while every RNG stream matches{latent_note}")
    groups = (_hyper_differs(base, trial, d) if base is not None else []) or _groups_differ(d)
    if groups or "extra:lr" in fields:
        what = "; ".join(groups[:3]) if groups else "extra:lr differs"
        hit("lr_schedule",
            "the learning-rate schedule was not restored (scheduler state not saved or not loaded)",
            f"{what} {where} on rank {d.rank}")
    # With a hyperparameter that differs, the update-side alternatives (moments, summation order) are not evidenced.
    if fields & {"params", "optimizer"} and not inputs and not rng and not (groups or "extra:lr" in fields):
        if _optimizer_step_counts_differ(d):
            hit("optimizer_state",
                "the optimizer state was not saved or not restored (its step counts restart)",
                f"the optimizer's step counts differ {where} on rank {d.rank}; the batch, loss and RNG streams match")
        elif world_size is not None and world_size >= 3:
            hit("reduction_order",
                "the gradient all-reduce summed in a different order after the restart (DDP rebuilds its "
                "gradient buckets after a process's first iteration): register an order-invariant reduction "
                "(the reference checkpointer's prepare does)",
                f"only the update differs {where} (params, optimizer), at world size {world_size}; the batch, "
                f"loss, RNG streams, hyperparameters and optimizer step counts match{latent_note}")
        else:
            hit("optimizer_state",
                "the optimizer state (moments) was not saved or not restored",
                f"params and optimizer differ {where}; the batch, loss and RNG streams match{latent_note}")
    extras = sorted(f for f in fields if f.startswith("extra:"))
    if extras and fields - latent <= set(extras):
        hit("unregistered_object",
            f"state the checkpoint does not hold: {', '.join(e[6:] for e in extras)} (register it with "
            "register_for_checkpointing)",
            f"only {', '.join(extras)} differ(s) {where}; the model, optimizer and data match")
    return _with_also(found)


def diagnose_rng(comparison: Comparison | None, trial: Trace | None, base: Trace | None = None) -> Diagnosis | None:
    """The cause of the first RNG divergence, on its own (whatever the training state did)."""
    if comparison is None or trial is None or comparison.rng is None:
        return None
    d = comparison.rng
    if d.where != "trace":
        streams = {f for f in d.fields if f.startswith("rng:")}
        return Diagnosis("rng_not_restored", "the final RNG state differs: a stream was not restored",
                         f"final {', '.join(sorted(streams))} differ on rank {d.rank}")
    where = _where(d, _resume_point(trial, d.attempt))
    rng = {f for f in d.fields if f.startswith("rng:")}
    return _rng_diagnosis(base, trial, d, rng, where, comparison.compared.get("fields", []))


#: Causes of an RNG stream's difference: the RNG divergence is diagnosed on its own (diagnose_rng), so for a
#: training divergence they come after direct evidence about the training state (a hyperparameter, the
#: backward calls, the sampler's indices), which the RNG explanation cannot account for.
_RNG_CAUSES = ("rng_from_other_rank", "rng_not_restored", "torch_rng")


def _with_also(found: list[Diagnosis]) -> Diagnosis | None:
    if not found:
        return None
    found = sorted(found, key=lambda x: x.cause in _RNG_CAUSES)  # stable: the order of the rules otherwise
    first = found[0]
    return Diagnosis(first.cause, first.summary, first.evidence, also=tuple(found[1:]))


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
