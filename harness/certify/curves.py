"""Loss curves of a trial, as plain data for the report: the baseline and each attempt of the trial, on one rank.

    {"rank": r, "baseline": [[step, loss], ...],
     "attempts": [{"attempt": a, "points": [[step, loss], ...], "fault_step": s | null, "fault": "12@all" | null,
                   "resumed_from": s | null}, ...],
     "divergence_step": s | null}

Losses are the trace rows' ``loss_value`` (floats, for plots only; the oracle compares raw bytes).
"""

from __future__ import annotations


def _points(rows) -> list[list]:
    return [[row.step, row.loss_value] for row in rows if row.loss_value is not None]


def baseline_curve(trace, rank: int = 0) -> list[list]:
    return _points(trace.steps(rank, 0))


def trial_curves(baseline_trace, trial_trace, *, rank: int = 0, divergence_step: int | None = None) -> dict:
    attempts = []
    for s in trial_trace.attempt_summary():
        fault = s.fault
        attempts.append({
            "attempt": s.attempt, "points": _points(trial_trace.steps(rank, s.attempt)),
            "fault_step": fault.step if fault is not None else None,
            "fault": (fault.point or f"step {fault.step}") if fault is not None else None,
            "resumed_from": s.resumed_from if s.resumed_from is not None else
            (s.first_step - 1 if s.attempt > 0 and s.first_step else None),
        })
    return {"rank": rank, "baseline": baseline_curve(baseline_trace, rank), "attempts": attempts,
            "divergence_step": divergence_step}


__all__ = ["baseline_curve", "trial_curves"]
