"""The checker: reads recorded traces offline and compares a trial with the baseline, bit for bit.

    trace.py    load_trace -> Trace (rows by rank, attempts, faults, events, final files)
    compare.py  compare_runs -> Comparison (Divergence, TensorDiff): trace rows and final state
    ulp.py      raw-byte tensor diffs, max abs diff, ULP distance (no tolerances anywhere)
    verdict.py  RunResult, and assess(), which turns a Comparison into a verdict and outcome
"""

from .compare import Comparison, Divergence, TensorDiff, compare_runs, compare_step, same
from .trace import Trace, TraceError, load_trace
from .ulp import canonical_dtype, diff_stats, ulp, ulp_distance
from .verdict import OUTCOMES, RunResult, assess, describe

__all__ = [
    "Comparison", "Divergence", "TensorDiff", "compare_runs", "compare_step", "same",
    "Trace", "TraceError", "load_trace",
    "canonical_dtype", "diff_stats", "ulp", "ulp_distance",
    "OUTCOMES", "RunResult", "assess", "describe",
]
