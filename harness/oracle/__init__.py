"""The checker: reads recorded traces offline and compares a trial with the baseline, bit for bit.

    trace.py      load_trace -> Trace (typed rows of harness.trace_schema by rank, AttemptSummary)
    compare.py    compare_runs -> Comparison (Divergence, TensorDiff; frozen): trace rows and final state
    ulp.py        raw-byte tensor diffs, max abs diff, ULP distance (no tolerances anywhere)
    diagnosis.py  the likely cause of a failure, from the evidence in both traces
    outcome.py    VerdictKind and Outcome (string enums), their exit codes, Finding, Verdict (frozen)
    lifecycle.py  the checks both oracles share: faults fired, ended their attempts, resumed; exit codes
    verdict.py    assess() -> Verdict: the bit-exact judgement; RunResult: a Verdict with its trial's context
    elastic.py    assess_elastic() -> Verdict: a resume on another world size
"""

from .compare import Comparison, Divergence, TensorDiff, compare_runs, compare_step, same
from .diagnosis import Diagnosis, diagnose
from .trace import Trace, TraceError, load_trace
from .ulp import canonical_dtype, diff_stats, ulp, ulp_distance
from .lifecycle import Lifecycle, RankEnd, timeout_verdict
from .outcome import (EXIT_CODES, OUTCOME_EXIT_CODES, OUTCOMES, PASSING, VERDICTS, Finding, Outcome, Verdict,
                      VerdictKind, exit_code_of)
from .verdict import RunResult, assess, describe, error_verdict

__all__ = [
    "Comparison", "Divergence", "TensorDiff", "compare_runs", "compare_step", "same", "Diagnosis", "diagnose",
    "Trace", "TraceError", "load_trace",
    "canonical_dtype", "diff_stats", "ulp", "ulp_distance",
    "EXIT_CODES", "OUTCOME_EXIT_CODES", "OUTCOMES", "PASSING", "VERDICTS", "Finding", "Outcome", "Verdict",
    "VerdictKind", "exit_code_of", "Lifecycle", "RankEnd", "RunResult", "assess", "describe", "error_verdict",
    "timeout_verdict",
]
