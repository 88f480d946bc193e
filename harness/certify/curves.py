"""Loss curves of a trial, as plain data for the report: the baseline and each attempt of the trial, on one rank.

    {"rank": r, "baseline": [[step, loss], ...],
     "attempts": [{"attempt": a, "points": [[step, loss], ...], "fault_step": s | null, "fault": "12@all" | null,
                   "resumed_from": s | null, "deltas": [[step, loss_ulp | null, params_differ | null], ...]}, ...],
     "divergence_step": s | null}

Losses are the trace rows' ``loss_value`` (floats, for plots only; the oracle compares raw bytes).
``deltas`` compare each step of the attempt with the baseline's same step, from the raw bytes: how many ULPs
apart the losses are (0: the same bits) and whether the parameters' digest differs. They show a divergence
too small to see in the loss curves (the trace holds parameter digests, not values: "differ", not how much).
"""

from __future__ import annotations


def _points(rows) -> list[list]:
    return [[row.step, row.loss_value] for row in rows if row.loss_value is not None]


def _loss_ulp(a, b) -> int | None:
    """ULPs between two raw losses ({"dtype", "hex"}); None when either is missing or they cannot be ordered."""
    from harness.oracle.ulp import canonical_dtype, diff_stats

    if not (isinstance(a, dict) and isinstance(b, dict)) or a.get("dtype") != b.get("dtype"):
        return None
    try:
        stats = diff_stats(canonical_dtype(a["dtype"]), bytes.fromhex(a["hex"]), bytes.fromhex(b["hex"]))
    except (KeyError, TypeError, ValueError):
        return None
    return 0 if stats is None else stats["max_ulp"]


def _deltas(base_rows, rows) -> list[list]:
    base = {row.step: row for row in base_rows}
    out = []
    for row in rows:
        b = base.get(row.step)
        if b is None:
            continue
        params = None if b.params is None or row.params is None else b.params != row.params
        out.append([row.step, _loss_ulp(b.loss, row.loss), params])
    return out


def baseline_curve(trace, rank: int = 0) -> list[list]:
    return _points(trace.steps(rank, 0))


def trial_curves(baseline_trace, trial_trace, *, rank: int = 0, divergence_step: int | None = None) -> dict:
    attempts = []
    base_rows = baseline_trace.steps(rank, 0)
    for s in trial_trace.attempt_summary():
        fault = s.fault
        rows = trial_trace.steps(rank, s.attempt)
        attempts.append({
            "attempt": s.attempt, "points": _points(rows), "deltas": _deltas(base_rows, rows),
            "fault_step": fault.step if fault is not None else None,
            "fault": (fault.point or f"step {fault.step}") if fault is not None else None,
            "resumed_from": s.resumed_from if s.resumed_from is not None else
            (s.first_step - 1 if s.attempt > 0 and s.first_step else None),
        })
    return {"rank": rank, "baseline": baseline_curve(baseline_trace, rank), "attempts": attempts,
            "divergence_step": divergence_step}


__all__ = ["baseline_curve", "trial_curves"]
