"""Compare a trial's trace with the baseline's, bit for bit.

Trace rows: every step row of the trial, in every attempt (steps re-executed after a resume too), is
compared field by field with the baseline's row for the same (rank, step). Fields, in this order:
batch, rng:python, rng:numpy, rng:torch, rng:cuda (and any other rng key), loss, params, optimizer,
extra:<key>. Digests and JSON values are compared exactly (floats by their bits); null equals null
only. `loss` is compared on its dtype and raw bytes, and a differing loss also gets a TensorDiff.
A differing `params` names the tensors whose `params_tensors` digests differ (the trace holds no values);
a differing `optimizer` names the param-group hyperparameters that differ (exact values) and the state
entries whose digests differ ("state exp_avg of 0.weight").

Unused RNG streams: a stream whose state never changes on any rank of the baseline is not compared
(`compared["unused_rng"]`); a trial that draws from it (its state changes between two rows of one
attempt) diverges there.

Final state: final/rank{r}.safetensors, tensor by tensor on the raw bytes, then the JSON leaves of
final/rank{r}.json. A final-state divergence is reported per rank, with the differing tensors; its
fields are the key groups: model/... -> "params", optimizer/... -> "optimizer", extra/<k>/... ->
"extra:<k>", rng/<k>/... -> "rng:<k>", else the first key component. JSON leaves appear among the
TensorDiffs with dtype "json".

Ordering: trace divergences by (attempt, step, rank), then final-state ones by rank. A baseline step
the trial never reached is a divergence with fields ["missing"], placed in the attempt that went past
it without running it (or the trial's last attempt when it stopped early); a trial step the baseline
never had has fields ["extra"].
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from harness.trace_schema import StepRow, parse_row

from .trace import Trace, TraceError, load_trace
from .ulp import canonical_dtype, decode_scalar, diff_stats

RNG_STREAMS = ("python", "numpy", "torch", "cuda")
FIELD_ORDER = ("batch", *(f"rng:{s}" for s in RNG_STREAMS), "loss", "params", "optimizer")


def json_float(x: float | None):
    """A float for JSON: non-finite values become the strings "inf", "-inf", "nan"."""
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


@dataclass(frozen=True)
class TensorDiff:
    name: str
    dtype: str | None = None
    shape: list[int] | None = None
    n_diff: int | None = None
    max_abs_diff: float | None = None
    max_ulp: int | None = None
    note: str = ""

    def to_json(self) -> dict:
        return {
            "name": self.name, "dtype": self.dtype, "shape": self.shape, "n_diff": self.n_diff,
            "max_abs_diff": json_float(self.max_abs_diff), "max_ulp": self.max_ulp, "note": self.note,
        }


@dataclass(frozen=True)
class Divergence:
    step: int | None
    rank: int
    attempt: int | None
    fields: list[str]
    tensors: list[TensorDiff] = field(default_factory=list)
    where: str = "trace"  # "trace" | "final" | "artefact" (a file the script exported, harness.oracle.artefacts)
    note: str = ""

    def sort_key(self) -> tuple:
        """Execution order: attempt, step; then, at the same step, a rank whose *inputs* differ (batch,
        RNG, loss) before a rank where only the results differ (params, optimizer), which DDP's
        all-reduce spreads from the rank at fault to every rank; then rank. Final state last."""
        if self.where == "final":
            return (1, 0, 0, 0, self.rank)
        if self.where == "artefact":
            return (2, 0, 0, 0, self.rank)
        inputs = any(f in ("batch", "loss") or f.startswith("rng:") for f in self.fields)
        return (0, self.attempt or 0, self.step if self.step is not None else 0, 0 if inputs else 1, self.rank)

    def to_json(self) -> dict:
        return {
            "step": self.step, "rank": self.rank, "attempt": self.attempt, "fields": list(self.fields),
            "tensors": [t.to_json() for t in self.tensors], "where": self.where, "note": self.note,
        }


def is_rng_field(name: str) -> bool:
    """An RNG stream's field (``rng:torch``...): RNG state, as opposed to training state."""
    return name.startswith("rng:")


def training_fields(d: Divergence) -> list[str]:
    """The fields of a divergence that are training state: everything but the RNG streams (the loss,
    batch, parameters, optimizer, extras, exported artefacts, missing or extra steps)."""
    return [f for f in d.fields if not is_rng_field(f)]


@dataclass(frozen=True)
class Comparison:
    first: Divergence | None
    divergences: list[Divergence]
    compared: dict
    warnings: list[str] = field(default_factory=list)
    base: Trace | None = field(default=None, repr=False, compare=False)  # the baseline, for the diagnosis

    @property
    def ok(self) -> bool:
        return self.first is None

    @property
    def training(self) -> Divergence | None:
        """The first divergence of the training state (any field but an RNG stream's)."""
        return next((d for d in self.divergences if training_fields(d)), None)

    @property
    def rng(self) -> Divergence | None:
        """The first divergence of an RNG stream (it may come with training fields, or alone)."""
        return next((d for d in self.divergences if any(map(is_rng_field, d.fields))), None)

    def rng_streams(self) -> list[str]:
        """Every RNG stream field that differs anywhere, in first-seen order."""
        return list(dict.fromkeys(f for d in self.divergences for f in d.fields if is_rng_field(f)))


def same(a, b) -> bool:
    """Exact equality of JSON values: same types, floats by their bits, dict keys in any order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b


def _dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def _step_fields(b: StepRow, t: StepRow, skip_rng=frozenset()):
    """(field, baseline value, trial value) for every field of a step row pair, in report order."""
    yield "batch", b.batch, t.batch
    rb, rt = _dict(b.rng), _dict(t.rng)
    for s in [*RNG_STREAMS, *sorted((rb.keys() | rt.keys()) - set(RNG_STREAMS))]:
        if s not in skip_rng:
            yield f"rng:{s}", rb.get(s), rt.get(s)
    yield "loss", b.loss, t.loss
    yield "params", [b.params, b.params_tensors], [t.params, t.params_tensors]
    yield "optimizer", [b.optimizer, b.optimizer_groups, b.optimizer_state], \
        [t.optimizer, t.optimizer_groups, t.optimizer_state]
    eb, et = _dict(b.extra), _dict(t.extra)
    for k in sorted(eb.keys() | et.keys()):
        yield f"extra:{k}", eb.get(k, None), et.get(k, None)


def _fmt(x, n: int = 60) -> str:
    s = json.dumps(x) if not isinstance(x, str) else x
    return s if len(s) <= n else s[: n - 3] + "..."


def _loss_value(loss: dict, recorded):
    try:
        v = decode_scalar(bytes.fromhex(loss["hex"]), loss["dtype"])
    except (ValueError, KeyError, TypeError):
        v = None
    return recorded if v is None else v


def _loss_diff(b, t, lb, lt) -> tuple[TensorDiff | None, str]:
    if not (isinstance(b, dict) and isinstance(t, dict)):
        return None, f"loss {_fmt(b)} vs {_fmt(t)}"
    dtype = b.get("dtype")
    types = dtype if dtype == t.get("dtype") else f"{dtype} vs {t.get('dtype')}"
    note = (f"loss {_loss_value(b, lb)!r} vs {_loss_value(t, lt)!r} "
            f"({types}, bytes {b.get('hex')} vs {t.get('hex')})")
    if dtype != t.get("dtype"):
        return TensorDiff("loss", dtype, [], 1, None, None, f"dtype {dtype} vs {t.get('dtype')}"), note
    try:
        st = diff_stats(canonical_dtype(dtype), bytes.fromhex(b["hex"]), bytes.fromhex(t["hex"]))
    except (ValueError, KeyError, TypeError) as e:
        return TensorDiff("loss", dtype, [], 1, None, None, f"unreadable loss bytes: {e}"), note
    return (TensorDiff("loss", canonical_dtype(dtype), [], **st) if st else None), note


def _named_diffs(b: dict | None, t: dict | None) -> list[TensorDiff]:
    b, t = _dict(b), _dict(t)
    out = []
    for name in [*b, *(k for k in t if k not in b)]:
        if name not in t:
            out.append(TensorDiff(name, note="missing in the trial"))
        elif name not in b:
            out.append(TensorDiff(name, note="not in the baseline"))
        elif not same(b[name], t[name]):
            out.append(TensorDiff(name, note="digest differs"))
    return out


def _leaf_text(x) -> str:
    """An exact JSON leaf as people read it: finite floats by their shortest repr, others as recorded."""
    return repr(x) if isinstance(x, float) else _fmt(x, 40)


def _optimizer_notes(b: list, t: list) -> tuple[list[str], list[TensorDiff]]:
    """What differs inside the optimizer: hyperparameters by group, then state entries by parameter."""
    (_, gb, sb), (_, gt, st) = b, t
    notes, tensors = [], []
    if isinstance(gb, list) and isinstance(gt, list):
        if len(gb) != len(gt):
            notes.append(f"optimizer: {len(gb)} vs {len(gt)} param groups")
        for i, (x, y) in enumerate(zip(gb, gt)):
            x, y = _dict(x), _dict(y)
            for k in [*x, *(k for k in y if k not in x)]:
                if k not in y or k not in x or not same(x[k], y[k]):
                    notes.append(f"optimizer: param_groups/{i}/{k} {_leaf_text(x.get(k, '-'))} vs "
                                 f"{_leaf_text(y.get(k, '-'))}")
    if isinstance(sb, dict) and isinstance(st, dict):
        for d in _named_diffs(sb, st):
            param, _, key = d.name.rpartition(" ")
            what = f"state {key} of {param}" if param else f"state {d.name}"
            tensors.append(TensorDiff(f"optimizer {what}", note=d.note))
        if tensors:
            shown = ", ".join(d.name.removeprefix("optimizer ") for d in tensors[:3])
            more = f" and {len(tensors) - 3} more" if len(tensors) > 3 else ""
            notes.append(f"optimizer: {shown}{more}")
    return notes, tensors


def compare_step(b: StepRow, t: StepRow, skip_rng=frozenset()) -> tuple[list[str], list[TensorDiff], str, list[str]]:
    """Compare one trial step row with the baseline's: (differing fields, tensor diffs, note, fields compared).

    skip_rng: RNG streams not compared (unused in the baseline, see compare_runs)."""
    b, t = (parse_row(x) if isinstance(x, dict) else x for x in (b, t))
    fields, tensors, notes, compared = [], [], [], []
    for name, vb, vt in _step_fields(b, t, skip_rng):
        compared.append(name)
        if same(vb, vt):
            continue
        fields.append(name)
        if name == "loss":
            td, note = _loss_diff(vb, vt, b.loss_value, t.loss_value)
            tensors += [td] if td else []
            notes.append(note)
        elif name == "params":
            tensors += _named_diffs(vb[1], vt[1])
        elif name == "optimizer":
            more, diffs = _optimizer_notes(vb, vt)
            notes += more
            tensors += diffs
        elif name.startswith("extra:"):
            notes.append(f"{name} {_fmt(vb, 40)} vs {_fmt(vt, 40)}")
    return fields, tensors, "; ".join(notes), compared


def _final_field(key: str) -> str:
    parts = key.split("/")
    if parts[0] == "model":
        return "params"
    if parts[0] in ("extra", "rng") and len(parts) > 1:
        return f"{parts[0]}:{parts[1]}"
    return parts[0]


def _leaves_file(path: Path | None) -> dict:
    """The final non-tensor leaves: a flat JSON object, key path -> exact JSON leaf."""
    if path is None:
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise TraceError(f"{path}: the final leaves must be a JSON object, got {type(data).__name__}")
    return data


def _raw(t):
    import torch

    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def compare_final_tensors(fb: Path, ft: Path, counts: dict) -> list[TensorDiff]:
    """Tensor by tensor, on the raw bytes. Adds to counts["final_tensors"], counts["final_bytes"]."""
    from safetensors import safe_open

    out = []
    with safe_open(str(fb), framework="pt") as a, safe_open(str(ft), framework="pt") as b:
        ka, kb = set(a.keys()), set(b.keys())
        for k in sorted(ka | kb):
            sa = a.get_slice(k) if k in ka else None
            sb = b.get_slice(k) if k in kb else None
            if sb is None or sa is None:
                s = sa or sb
                note = "missing in the trial" if sb is None else "not in the baseline"
                out.append(TensorDiff(k, canonical_dtype(s.get_dtype()), list(s.get_shape()), note=note))
                continue
            da, db = canonical_dtype(sa.get_dtype()), canonical_dtype(sb.get_dtype())
            shape_a, shape_b = list(sa.get_shape()), list(sb.get_shape())
            if da != db or shape_a != shape_b:
                what = [f"dtype {da} vs {db}"] * (da != db) + [f"shape {shape_a} vs {shape_b}"] * (shape_a != shape_b)
                out.append(TensorDiff(k, da, shape_a, note="; ".join(what)))
                continue
            ra, rb = _raw(a.get_tensor(k)), _raw(b.get_tensor(k))
            counts["final_tensors"] += 1
            counts["final_bytes"] += int(ra.nbytes)
            st = diff_stats(da, ra, rb)
            if st:
                out.append(TensorDiff(k, da, shape_a, **st))
    return out


def compare_final_json(jb: Path | None, jt: Path | None, counts: dict) -> list[TensorDiff]:
    """The non-tensor leaves, exactly; returned as TensorDiffs with dtype "json"."""
    lb, lt = _leaves_file(jb), _leaves_file(jt)
    out = []
    for k in sorted(lb.keys() | lt.keys()):
        counts["final_leaves"] += 1
        if k not in lt:
            out.append(TensorDiff(k, "json", note="missing in the trial"))
        elif k not in lb:
            out.append(TensorDiff(k, "json", note="not in the baseline"))
        elif not same(lb[k], lt[k]):
            out.append(TensorDiff(k, "json", n_diff=1, note=f"{_fmt(lb[k], 40)} vs {_fmt(lt[k], 40)}"))
    return out


def _readable(f: Path, j: Path | None) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(f), framework="pt") as h:
            for k in h.keys():
                h.get_tensor(k)
        if j:
            json.loads(j.read_text())
        return True
    except Exception:
        return False


def _final_divergences(base: Trace, trial: Trace, counts: dict) -> list[Divergence]:
    out = []
    last = max(trial.attempts(), default=0)
    for r in sorted(set(base.ranks) | set(trial.ranks)):
        fb, ft = base.final_file(r), trial.final_file(r)
        if fb is None and ft is None:
            continue
        attempt = next((a for a in trial.attempts() if trial.finished(r, a)), last)
        if ft is None or fb is None:
            where = "missing in the trial" if ft is None else "written by the trial, not by the baseline"
            out.append(Divergence(None, r, attempt, ["missing" if ft is None else "extra"], [], "final",
                                  f"final state {where}"))
            continue
        try:
            diffs = compare_final_tensors(fb, ft, counts)
            diffs += compare_final_json(base.final_json(r), trial.final_json(r), counts)
        except Exception as e:  # an unreadable trial file is a divergence; an unreadable baseline, an error
            if not _readable(fb, base.final_json(r)):
                raise TraceError(f"unreadable baseline final state {fb}: {e}") from e
            out.append(Divergence(None, r, attempt, ["missing"], [], "final", f"final state unreadable: {e}"))
            continue
        if diffs:
            fields = list(dict.fromkeys(_final_field(d.name) for d in diffs))
            out.append(Divergence(None, r, attempt, fields, diffs, "final",
                                  f"final state: {len(diffs)} tensor(s)/leaves differ"))
    return out


def _missing_attempts(trial: Trace, rank: int):
    """For a step the trial never ran on `rank`: the attempt that went past it, else the last attempt."""
    top = {}
    for row in trial.steps(rank):
        top[row.attempt] = max(top.get(row.attempt, row.step), row.step)
    last = max(trial.attempts(), default=0)
    return lambda step: next((a for a in sorted(top) if top[a] > step), last)


def unused_rng_streams(base: Trace) -> set[str]:
    """RNG streams whose state never changes on any rank of the baseline: nothing draws from them.

    An unused stream is not compared (an unseeded but unused numpy RNG is harmless). It needs two step
    rows on a rank to tell; with fewer, every stream counts as used.
    """
    states: dict[str, set] = {}
    for r in base.ranks:
        rows = base.steps(r)
        if len(rows) < 2:
            return set()
        for row in rows:
            for name, d in _dict(row.rng).items():
                states.setdefault(f"{name}@{r}", set()).add(d)
    streams = {k.split("@")[0] for k in states}
    return {s for s in streams if all(len(v) == 1 for k, v in states.items() if k.split("@")[0] == s)}


def compare_runs(baseline_trace_dir, trial_trace_dir) -> Comparison:
    """Compare a trial's trace folder (or Trace) with the baseline's. See the module docstring."""
    base, trial = load_trace(baseline_trace_dir), load_trace(trial_trace_dir)
    warnings = [f"baseline: {w}" for w in base.warnings] + [f"trial: {w}" for w in trial.warnings]
    index = {}
    for r in base.ranks:
        for row in base.steps(r):
            if (r, row.step) in index:
                warnings.append(f"baseline: rank {r} recorded step {row.step} twice; the first row is used")
            index.setdefault((r, row.step), row)
    unused = unused_rng_streams(base)

    divs, seen, fields_seen = [], set(), {}
    rows = reexecuted = 0
    for r in trial.ranks:
        prev_rng: dict = {}
        for row in trial.steps(r):
            # A stream unused by the baseline is compared where the trial draws from it (its state changed).
            rng = _dict(row.rng)
            drawn = {s for s in unused if (row.attempt, s) in prev_rng and prev_rng[row.attempt, s] != rng.get(s)}
            prev_rng.update({(row.attempt, s): rng.get(s) for s in unused})
            key, attempt = (r, row.step), row.attempt
            reexecuted += key in seen
            seen.add(key)
            b = index.get(key)
            if b is None:
                divs.append(Divergence(row.step, r, attempt, ["extra"], [], "trace",
                                       "the baseline has no such step"))
                continue
            rows += 1
            fields, tensors, note, compared = compare_step(b, row, unused - drawn)
            if drawn & {f[4:] for f in fields if f.startswith("rng:")}:
                note = "; ".join(filter(None, [note, ", ".join(f"rng:{s} is drawn from in the trial, never in the "
                                                               "baseline" for s in sorted(drawn))]))
            fields_seen.update(dict.fromkeys(compared))
            if fields:
                divs.append(Divergence(row.step, r, attempt, fields, tensors, "trace", note))
    for r in trial.ranks + [r for r in base.ranks if r not in trial.ranks]:
        missing_attempt = _missing_attempts(trial, r)
        for step in sorted(s for (rr, s) in index if rr == r and (rr, s) not in seen):
            divs.append(Divergence(step, r, missing_attempt(step), ["missing"], [], "trace",
                                   "the trial never reached this step"))

    counts = {"final_tensors": 0, "final_bytes": 0, "final_leaves": 0}
    divs += _final_divergences(base, trial, counts)
    divs.sort(key=Divergence.sort_key)
    compared = {
        "ranks": len(set(base.ranks) | set(trial.ranks)),
        "steps": len({step for (_, step) in seen & index.keys()}),
        "rows": rows,
        "reexecuted_rows": reexecuted,
        **counts,
        "fields": list(fields_seen),
        "unused_rng": sorted(f"rng:{s}" for s in unused),
        "divergences": len(divs),
    }
    return Comparison(divs[0] if divs else None, divs, compared, warnings, base=base)
