"""The outcomes of a trial with their verdicts and exit codes, as one table for --help and the docs.

Generated from ``harness.oracle.outcome`` (the outcome and verdict enums and their exit codes), so the
help text and the documentation cannot drift from the code.
"""

from __future__ import annotations

from harness.oracle.outcome import EXIT_CODES, OUTCOME_EXIT_CODES, Outcome, VerdictKind

#: What each outcome means, in one line; its verdict(s) in parentheses when it has several.
MEANING = {
    Outcome.BIT_EXACT: ("pass", "every fault fired and was resumed from; everything compared is bit-exact"),
    Outcome.RNG_ACCEPTED: ("pass", "training bit-exact; only the RNG streams given to --accept-rng differ"),
    Outcome.ELASTIC_PASS: ("pass", "--resume-nproc: the exact claims of the elastic oracle hold, the loss is within its tolerance"),
    Outcome.DIVERGENCE: ("fail", "the training state (loss, batch, parameters, optimizer, final state, an exported file) differs"),
    Outcome.RNG_ONLY: ("fail", "training stayed bit-exact, but an RNG stream differs after the resume"),
    Outcome.LOST_PROGRESS: ("fail", "resumed from an older checkpoint than the newest committed before the kill"),
    Outcome.RANKS_RESUMED_APART: ("fail", "the ranks of one attempt restored checkpoints of different steps"),
    Outcome.NOT_RESUMED: ("fail/error", "restarted from step 1: a checkpoint was complete (fail), or none was, so no resume was tested (error)"),
    Outcome.UNKNOWN_RESUME_STATE: ("fail", "auto mode: the resumed state matches no step of the baseline"),
    Outcome.NONDETERMINISTIC_BASELINE: ("fail", "two uninterrupted runs differ: not reproducible, resume or not"),
    Outcome.CRASH_ON_RESUME: ("fail", "a rank crashed after the resume"),
    Outcome.TIMEOUT: ("fail/error", "an attempt ran past --timeout (fail after a resume)"),
    Outcome.NOT_ELASTIC: ("fail/error", "--resume-nproc: the data order cannot be resumed on another world size"),
    Outcome.STALL: ("error", "no rank recorded anything for the stall limit: a hang or an overloaded machine, never counted as a resume bug"),
    Outcome.CRASH: ("error", "a rank crashed before any fault fired"),
    Outcome.FAULT_NOT_FIRED: ("error", "the run ended before a fault of the plan was reached"),
    Outcome.FAULT_SURVIVED: ("error", "a fault fired but the process kept running"),
    Outcome.FAULT_NOT_ARMED: ("error", "the trial ended before every fault of the plan was armed"),
    Outcome.NO_EVIDENCE: ("error", "no step row was compared: a PASS would rest on nothing"),
    Outcome.EXIT_UNKNOWN: ("error", "a rank's exit status in the last attempt is unknown"),
    Outcome.BASELINE_FAILED: ("error", "the uninterrupted baseline run failed"),
    Outcome.ERROR: ("error", "anything else that stopped the harness"),
}


def exit_codes(outcome: Outcome) -> str:
    verdicts = MEANING[outcome][0].split("/")
    own = OUTCOME_EXIT_CODES.get(outcome)
    return str(own) if own is not None else "/".join(str(EXIT_CODES[VerdictKind(v)]) for v in verdicts)


def outcome_rows() -> list[tuple[str, str, str, str]]:
    """(outcome, verdict, exit code, meaning) for every outcome."""
    return [(o.value, MEANING[o][0], exit_codes(o), MEANING[o][1]) for o in Outcome]


def outcome_table() -> str:
    """Plain text, one outcome a line (for --help)."""
    rows = outcome_rows()
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{o:<{w}}  {v:<10} exit {c:<4} {m}" for o, v, c, m in rows)


def outcome_markdown() -> str:
    """A Markdown table (for the docs)."""
    lines = ["| outcome | verdict | exit code | meaning |", "|---|---|---|---|"]
    lines += [f"| `{o}` | {v} | {c} | {m} |" for o, v, c, m in outcome_rows()]
    return "\n".join(lines)
