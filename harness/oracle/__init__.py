"""The checker: reads recorded traces offline and compares a trial with the baseline, bit for bit.

    trace.py    load_trace -> Trace (typed rows of harness.trace_schema by rank, AttemptSummary)
    compare.py  compare_runs -> Comparison (Divergence, TensorDiff): trace rows and final state
    ulp.py      raw-byte tensor diffs, max abs diff, ULP distance (no tolerances anywhere)
    diagnosis.py  the likely cause of a failure, from the evidence in both traces
    verdict.py  assess() -> Verdict (frozen, Outcome enum); RunResult: a Verdict with its trial's context
"""

from .compare import Comparison, Divergence, TensorDiff, compare_runs, compare_step, same
from .diagnosis import Diagnosis, diagnose
from .trace import Trace, TraceError, load_trace
from .ulp import canonical_dtype, diff_stats, ulp, ulp_distance
from .verdict import (OUTCOMES, Outcome, RankEnd, RunResult, Verdict, assess, describe, error_verdict,
                      timeout_verdict)

__all__ = [
    "Comparison", "Divergence", "TensorDiff", "compare_runs", "compare_step", "same", "Diagnosis", "diagnose",
    "Trace", "TraceError", "load_trace",
    "canonical_dtype", "diff_stats", "ulp", "ulp_distance",
    "OUTCOMES", "Outcome", "RankEnd", "RunResult", "Verdict", "assess", "describe", "error_verdict",
    "timeout_verdict",
]
