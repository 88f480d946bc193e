"""The elastic oracle: a trial whose resumed attempts run on another world size than the baseline.

Bit-exactness across world sizes is impossible in general: the gradient all-reduce sums in another
order, so the weights after the first step on the new world size differ in their last bits. What
can be exact is checked exactly; what cannot is measured and held to a stated tolerance.

Exact (raw bits / digests, as in the bit-exact oracle):

- before the resume: every step row of attempt 0 (same world size as the baseline) equals the
  baseline's, field by field (``compare_step``);
- at the resume point: the state each rank of a resumed attempt restored (``probe.restored``: weights,
  optimizer state and hyperparameters, and the values it records, e.g. scheduler, step, data position,
  accumulation counter) equals the state the run had when it saved: the baseline's row of the
  checkpoint's step (rank 0) for a checkpoint of attempt 0; for a checkpoint saved after an elastic
  resume, the run's own row of that step (rank 0, the attempt that saved it);
- after the resume: the global sample sequence. Per step, the ``samples`` value each rank records (its
  sample ids, space-separated, micro-batches separated by ``;``), micro-batch by micro-batch, the ranks'
  slices concatenated in rank order, equals the baseline's for that step.

Measured, with a tolerance (``loss_rtol``): the global loss after the resume (the mean of the ranks'
losses, each the mean over an equal share of the global batch), against the baseline's: the max
absolute and the max relative deviation over the steps of the resumed attempts. The final weights'
max absolute deviation is reported, not judged.

Outcomes: ``elastic_pass`` (verdict pass; never called bit-exact), ``not_elastic`` (the data order is
not elastic: the checkpointer refused the resume (error), or the global sample order changed (fail)),
``divergence`` (an exact claim failed, or the loss is beyond the tolerance), and the lifecycle outcomes
(crash_on_resume, fault_not_fired, not_resumed, exit_unknown, ...), found by the same checks as in the
bit-exact oracle (harness.oracle.lifecycle), with the same messages: the faults, resumes and exit codes
first, before anything is compared; an unknown exit status last.
"""

from __future__ import annotations

import math

from harness.trace_schema import Point, RestoredRow

from .compare import Divergence, TensorDiff, _named_diffs, _optimizer_notes, compare_step, same, unused_rng_streams
from .lifecycle import (BEFORE_COMPARISON, Lifecycle, RankEnd, check_exit_codes, check_exits_known, check_resumed,
                        first_finding)
from .outcome import Finding, Outcome, Verdict, VerdictKind
from .trace import Trace, load_trace

PASS, FAIL, ERROR = VerdictKind.PASS, VerdictKind.FAIL, VerdictKind.ERROR

#: The default relative tolerance of the global loss after an elastic resume.
DEFAULT_LOSS_RTOL = 1e-3
SAMPLES_KEY = "samples"


def _restored_rows(trial: Trace, attempt: int, ranks) -> dict[int, RestoredRow]:
    out = {}
    for r in ranks:
        for row in trial.rows(r):
            if isinstance(row, RestoredRow) and row.attempt == attempt:
                out.setdefault(r, row)
    return out


def compare_restored(b, t: RestoredRow) -> tuple[list[str], list[TensorDiff], str, int]:
    """Compare a restored row with the baseline's step row of its step: (fields, tensor diffs, note, n compared)."""
    fields, tensors, notes = [], [], []
    n = 0
    if t.params_tensors is not None:
        n += len(t.params_tensors)
        if not same(b.params_tensors, t.params_tensors):
            fields.append("params")
            tensors += _named_diffs(b.params_tensors, t.params_tensors)
    if t.optimizer_state is not None or t.optimizer_groups is not None:
        n += len(t.optimizer_state or {}) + len(t.optimizer_groups or [])
        vb = [b.optimizer, b.optimizer_groups, b.optimizer_state]
        vt = [t.optimizer, t.optimizer_groups, t.optimizer_state]
        if not (same(b.optimizer_groups, t.optimizer_groups) and same(b.optimizer_state, t.optimizer_state)):
            fields.append("optimizer")
            more, diffs = _optimizer_notes(vb, vt)
            notes += more
            tensors += diffs
    eb = b.extra if isinstance(b.extra, dict) else {}
    for k, v in sorted((t.extra or {}).items()):
        n += 1
        if k not in eb:
            fields.append(f"extra:{k}")
            notes.append(f"extra:{k} is not in the baseline's row")
        elif not same(eb[k], v):
            fields.append(f"extra:{k}")
            notes.append(f"extra:{k} {eb[k]!r:.40} (baseline) vs {v!r:.40} (restored)")
    return fields, tensors, "; ".join(notes), n


def _samples(row) -> list[list[str]] | None:
    """A row's sample ids, per micro-batch (``;`` separates micro-batches, spaces separate samples)."""
    v = (row.extra or {}).get(SAMPLES_KEY) if row is not None else None
    return [m.split() for m in v.split(";")] if isinstance(v, str) else None


def _global(rows: list) -> tuple[list[str] | None, float | None]:
    """The global sample sequence of one step (per micro-batch, the ranks' slices in rank order) and the
    global loss (the mean of the ranks')."""
    per_rank = [_samples(row) for row in rows]
    seq: list[str] | None = None
    if all(p is not None for p in per_rank) and len({len(p) for p in per_rank}) == 1:
        seq = [x for m in range(len(per_rank[0])) for p in per_rank for x in p[m]]
    losses = [row.loss_value for row in rows]
    loss = sum(losses) / len(losses) if losses and all(isinstance(x, (int, float)) for x in losses) else None
    return seq, loss


def _final_deviation(base: Trace, trial: Trace) -> tuple[float | None, int]:
    """Max |final weight difference| between baseline and trial rank 0 (model/ tensors of equal shape)."""
    fb, ft = base.final_file(0), trial.final_file(0)
    if fb is None or ft is None:
        return None, 0
    from safetensors import safe_open

    worst, n = 0.0, 0
    with safe_open(str(fb), "pt") as a, safe_open(str(ft), "pt") as b:
        keys = [k for k in a.keys() if k.startswith("model/") and k in set(b.keys())]
        for k in keys:
            x, y = a.get_tensor(k), b.get_tensor(k)
            if x.shape != y.shape or not x.is_floating_point():
                continue
            n += 1
            worst = max(worst, float((x.double() - y.double()).abs().max()) if x.numel() else 0.0)
    return (worst if n else None), n


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2g}"


def assess_elastic(base, trial, *, nproc: int, resume_nproc: int, n_faults: int,
                   last_exits: list[RankEnd] | None = None, launched: int | None = None,
                   loss_rtol: float = DEFAULT_LOSS_RTOL, log_tail: str | None = None) -> Verdict:
    """Judge a trial whose attempt 0 ran on ``nproc`` ranks (as the baseline) and later attempts on
    ``resume_nproc``. See the module docstring for what is exact and what is measured. The lifecycle of
    the trial (faults fired and ended their attempts, every attempt resumed, exit codes) is checked as
    the bit-exact oracle checks it (harness.oracle.lifecycle), each attempt on its own world size.
    log_tail: the verdict's log tail where no check names a rank's own."""
    base, trial = load_trace(base), load_trace(trial)
    warnings = [f"baseline: {w}" for w in base.warnings] + [f"trial: {w}" for w in trial.warnings]
    world = {0: nproc}
    summary = tuple(trial.attempt_summary())
    compared: dict = {"elastic": {"world_sizes": [nproc, resume_nproc], "loss_rtol": loss_rtol}}

    def size(a: int) -> int:
        return world.get(a, resume_nproc)

    def done(verdict, outcome, message, **kw) -> Verdict:
        if log_tail:
            kw.setdefault("log_tail", log_tail)
        return Verdict(verdict, outcome, message, compared=compared, attempts=summary, warnings=tuple(warnings), **kw)

    def found(finding: Finding) -> Verdict:
        return done(**finding.verdict_fields())

    refused = trial.events(Point.NOT_ELASTIC)
    if refused:
        e = refused[0]
        info = e.info if isinstance(e.info, dict) else {}
        return done(ERROR, Outcome.NOT_ELASTIC,
                    f"not elastic: the resume on {resume_nproc} rank(s) (attempt {e.attempt}) was refused by the "
                    f"checkpointer: data loader {info.get('loader')}: {info.get('reason')}; nothing of the elastic "
                    "resume could be checked, and nothing is claimed exact",
                    hint="build the loader with harness.checkpoint.elastic.elastic_loader(dataset, global_batch_size, "
                         "seed=...) (one global order cut into fixed global batches), or resume with --resume-nproc "
                         f"{nproc}")
    for e in trial.events(Point.CANNOT_RESHARD)[:1]:
        info = e.info if isinstance(e.info, dict) else {}
        return done(ERROR, Outcome.ERROR,
                    f"the checkpointer refused the resume on {resume_nproc} rank(s) (attempt {e.attempt}): strategy "
                    f"{info.get('strategy')!r} cannot reshard a checkpoint saved by {info.get('saved_world')} rank(s) "
                    f"({info.get('reason')}); nothing of the elastic resume could be checked",
                    hint=f"resume with --resume-nproc {nproc} (the same world size), or use a strategy that reshards "
                         "(ddp, fsdp, deepspeed-zero1/2)")
    life = Lifecycle.of(trial, n_faults=n_faults, last_exits=last_exits, launched=launched,
                        world=lambda a: range(size(a)))
    # a crash after the resume is told before any comparison: its state is not the run's to judge
    finding = first_finding(life, (*BEFORE_COMPARISON, check_exit_codes, check_resumed))
    if finding is not None:
        return found(finding)
    last = life.last.attempt

    # -- exact: before the resume, at the resume point, the sample order -----------------------------
    index = {}
    for r in base.ranks:
        for row in base.steps(r):
            index.setdefault((r, row.step), row)
    unused = unused_rng_streams(base)
    rows0 = 0
    for r in range(nproc):
        for row in trial.steps(r, 0):
            b = index.get((r, row.step))
            if b is None:
                return done(FAIL, Outcome.DIVERGENCE, f"step {row.step} of rank {r} (attempt 0) is not in the baseline",
                            first_divergence=Divergence(row.step, r, 0, ["extra"]))
            fields, tensors, note, _ = compare_step(b, row, unused)
            rows0 += 1
            if fields:
                d = Divergence(row.step, r, 0, fields, tensors, note=note)
                return done(FAIL, Outcome.DIVERGENCE, f"before the resume (attempt 0, {nproc} rank(s), as the "
                                                      f"baseline): step {row.step}, rank {r}: {', '.join(fields)} differ",
                            first_divergence=d)

    restored_checks, samples_n, steps_n = 0, 0, 0
    resume_steps, dev_abs, dev_rel, worst_step = [], 0.0, 0.0, None
    no_loss = []
    rng_restored, rng_rederived, dropped = set(), set(), set()
    for a in range(1, last + 1):
        ranks = range(size(a))
        restored = _restored_rows(trial, a, ranks)
        loaded = [e for e in trial.events(Point.LOADED) if e.attempt == a]
        if not restored and not loaded:  # began past step 1 (check_resumed took restarts) with nothing restored
            prev = summary[a - 1] if a - 1 < len(summary) else None
            committed = list(prev.committed_steps) if prev else []
            return done(FAIL if committed else ERROR, Outcome.NOT_RESUMED,
                        f"attempt {a} did not resume (no checkpoint loaded)"
                        + (f" although checkpoint(s) at step(s) {committed} were committed" if committed else
                           ": no checkpoint existed before the kill; this plan did not test resumption"))
        missing = [r for r in ranks if r not in restored]
        if missing:
            return done(ERROR, Outcome.ERROR,
                        f"attempt {a}: rank(s) {missing} recorded no restored state: the elastic oracle compares the "
                        "state at the resume point, which the script records with probe.restored(step, model=..., "
                        "optimizer=..., **values) right after loading (see the elastic scenario)")
        for r, row in sorted(restored.items()):
            # The reference: the state the run had when it saved, i.e. rank 0's row of that step in the latest
            # earlier attempt (attempt 0's equal the baseline's, checked above; a checkpoint saved after an
            # elastic resume holds the resumed run's own, inexact, weights).
            earlier = [x for x in trial.steps(0) if x.attempt < a and x.step == row.step]
            b = earlier[-1] if earlier else None
            whose = f"the run's own at step {row.step} (attempt {b.attempt})" if b is not None else ""
            if b is None or b.attempt == 0:
                b, whose = index.get((0, row.step)), f"the baseline's at step {row.step}"
            if b is None:
                return done(FAIL, Outcome.DIVERGENCE, f"attempt {a}, rank {r} restored step {row.step}, which the "
                                                      "baseline never had", first_divergence=Divergence(row.step, r, a, ["step"]))
            fields, tensors, note, n = compare_restored(b, row)
            if n == 0:  # a restored row that holds nothing: "state at resume exact" would rest on no value
                return done(ERROR, Outcome.NO_EVIDENCE,
                            f"attempt {a}, rank {r}: probe.restored(step {row.step}) recorded no state (no model, "
                            "optimizer or value), so nothing at the resume point could be compared",
                            hint="pass what was restored: probe.restored(step, model=..., optimizer=..., **values)")
            restored_checks = max(restored_checks, n)
            if fields:
                d = Divergence(row.step, r, a, fields, tensors, note=f"restored state vs {whose}: {note}".rstrip(": "))
                return done(FAIL, Outcome.DIVERGENCE,
                            f"the state restored at the resume point differs: attempt {a} on {size(a)} rank(s), rank "
                            f"{r}, checkpoint of step {row.step}: {', '.join(fields)} differ from {whose}",
                            first_divergence=d)
        resume_steps.append(restored[0].step)
        for e in trial.events(Point.ELASTIC):
            if e.attempt == a and isinstance(e.info, dict):
                (rng_rederived if e.info.get("rng") == "re-derived" else rng_restored).add(e.rank)
                dropped |= set(e.info.get("dropped_ranks") or [])
        by_step: dict[int, list] = {}
        for r in ranks:
            for row in trial.steps(r, a):
                by_step.setdefault(row.step, {})[r] = row
        for step in sorted(by_step):
            rows = by_step[step]
            if sorted(rows) != list(ranks):
                return done(FAIL, Outcome.DIVERGENCE, f"attempt {a}: step {step} was recorded by rank(s) "
                                                      f"{sorted(rows)} of {size(a)}")
            base_rows = [index.get((r, step)) for r in range(nproc)]
            if any(x is None for x in base_rows):
                return done(FAIL, Outcome.DIVERGENCE, f"attempt {a} ran step {step}, which the baseline never had",
                            first_divergence=Divergence(step, 0, a, ["extra"]))
            seq_t, loss_t = _global([rows[r] for r in ranks])
            seq_b, loss_b = _global(base_rows)
            if seq_t is None or seq_b is None:
                return done(ERROR, Outcome.ERROR,
                            f"step {step}: the {'trial' if seq_t is None else 'baseline'} recorded no per-sample ids "
                            f"(probe.step(..., {SAMPLES_KEY}='<ids of this rank's samples, space-separated, micro-batches "
                            "separated by ;>'), the same number of micro-batches on every rank): the "
                            "elastic oracle cannot check the global sample order")
            if seq_t != seq_b:
                k = next((i for i, (x, y) in enumerate(zip(seq_t, seq_b)) if x != y), min(len(seq_t), len(seq_b)))
                return done(FAIL, Outcome.NOT_ELASTIC,
                            f"not elastic: the global sample order after the resume on {size(a)} rank(s) differs from "
                            f"the baseline's on {nproc}: step {step}, attempt {a}, position {k} of {len(seq_b)} "
                            f"(sample {seq_t[k] if k < len(seq_t) else '-'} vs {seq_b[k] if k < len(seq_b) else '-'})",
                            first_divergence=Divergence(step, 0, a, ["samples"]),
                            hint="the data order depends on the world size (a DistributedSampler does): use an "
                                 "elastic order (harness.checkpoint.elastic.ElasticSampler)")
            samples_n += len(seq_t)
            steps_n += 1
            if loss_t is None or loss_b is None:
                no_loss.append(step)
                continue
            diff = abs(loss_t - loss_b)
            rel = diff / abs(loss_b) if loss_b else (0.0 if diff == 0 else math.inf)
            dev_abs = max(dev_abs, diff)
            if rel >= dev_rel:
                dev_rel, worst_step = rel, step
        last_base = max((s for (_, s) in index), default=0)
        if a == last and max(by_step, default=0) < last_base:
            return done(FAIL, Outcome.DIVERGENCE, f"the resumed run never reached step {last_base} (its last step "
                                                  f"was {max(by_step, default=None)})")
    if no_loss:
        warnings.append(f"no finite scalar loss recorded at step(s) {no_loss[:8]}: not in the loss deviation")
    if steps_n and len(no_loss) == steps_n:
        return done(ERROR, Outcome.NO_EVIDENCE,
                    f"no step after the resume recorded a finite scalar loss ({steps_n} step(s)), so the loss after "
                    "the resume was never compared: an ELASTIC PASS would rest on the sample order alone",
                    hint="record the loss: probe.step(step, loss=loss, ...)")
    finding = check_exits_known(life)
    if finding is not None:
        return found(finding)
    final_dev, final_n = _final_deviation(base, trial)
    rng = []
    if rng_restored:
        rng.append(f"rank(s) {sorted(rng_restored)} restored their own streams")
    if rng_rederived:
        rng.append(f"rank(s) {sorted(rng_rederived)} re-derived theirs (new ranks)")
    if dropped:
        rng.append(f"saved rank(s) {sorted(dropped)} dropped")
    compared["elastic"].update(
        resumed_at=resume_steps, rows_before_resume=rows0, restored_values=restored_checks, steps_after_resume=steps_n,
        samples_after_resume=samples_n, loss_max_abs=dev_abs, loss_max_rel=dev_rel, loss_worst_step=worst_step,
        final_weights_max_abs=final_dev, final_weights_tensors=final_n, rng="; ".join(rng) or None,
        exact=["steps before the resume", "state at the resume point", "global sample order after the resume"],
        not_exact=["loss after the resume (tolerance)", "weights after the resume (reported)",
                   "per-rank RNG streams of new ranks"])
    compared.update(ranks=len(set(base.ranks) | set(trial.ranks)), steps=steps_n, rows=rows0)
    loss_text = (f"loss after the resume within rtol {loss_rtol:g} (max rel {_fmt(dev_rel)}, max abs {_fmt(dev_abs)}"
                 f"{f', at step {worst_step}' if worst_step is not None else ''})")
    if dev_rel > loss_rtol:
        d = Divergence(worst_step, 0, last, ["loss"], note=f"global loss deviates by {dev_rel:.3g} relative")
        return done(FAIL, Outcome.DIVERGENCE,
                    f"elastic: state at resume exact; sample order exact; but the loss after the resume deviates by up "
                    f"to {_fmt(dev_rel)} relative (max abs {_fmt(dev_abs)}, step {worst_step}), beyond rtol {loss_rtol:g}",
                    first_divergence=d, hint="more than reduction-order noise: per-rank randomness in the training "
                                             "(dropout, augmentation drawn from a rank's RNG), or a loss that is not "
                                             "the mean over the global batch")
    final = f"; final weights max abs deviation {_fmt(final_dev)} (reported, not judged)" if final_dev is not None else ""
    return done(PASS, Outcome.ELASTIC_PASS,
                   f"ELASTIC PASS ({nproc} -> {resume_nproc} ranks, resumed at step(s) {resume_steps}): "
                   f"{rows0} step rows before the resume exact; state at resume exact ({restored_checks} values per "
                   f"rank); sample order exact ({steps_n} steps, {samples_n} samples); {loss_text}{final}"
                   + (f"; RNG: {'; '.join(rng)}" if rng else "")
                + ". Weights and loss after the resume are not claimed exact (the reduction order differs)")


__all__ = ["assess_elastic", "compare_restored", "DEFAULT_LOSS_RTOL", "SAMPLES_KEY"]
