"""What a judgement is made of: the verdict and outcome enums, their exit codes, and the frozen `Verdict`.

`VerdictKind` and `Outcome` are string enums: a member compares equal to its value ("fail" ==
VerdictKind.FAIL) and JSON writes it as that string, so reports and scripts that read verdicts as
strings keep working. A check of the oracle returns a `Finding` (a verdict, an outcome, a message and
what the user should check); the oracle turns the first finding into a `Verdict` with the context it
holds (what was compared, the attempts, the divergences).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: this module stays light (no numpy), for the readers of verdicts
    from .compare import Divergence
    from .diagnosis import Diagnosis
    from .trace import AttemptSummary

try:
    from enum import StrEnum
except ImportError:  # Python 3.10: the same behaviour, spelled out
    class StrEnum(str, enum.Enum):
        def __str__(self) -> str:
            return self.value

        def __format__(self, spec: str) -> str:
            return format(self.value, spec)


class VerdictKind(StrEnum):
    """The verdict of a trial: the training resumed bit-exact (pass), did not (fail), or it could not be told
    (error: the harness, the plan or the baseline stood in the way)."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


class Outcome(StrEnum):
    """Why a trial got its verdict (compares equal to its string value)."""

    BIT_EXACT = "bit_exact"
    ELASTIC_PASS = "elastic_pass"  # a resume on another world size: what can be exact is (harness.oracle.elastic)
    RNG_ACCEPTED = "rng_accepted"  # training bit-exact; only RNG streams the user accepted (--accept-rng) differ
    NOT_ELASTIC = "not_elastic"
    DIVERGENCE = "divergence"
    RNG_ONLY = "rng_only"  # training bit-exact through the end, but an RNG stream differs (exit 3)
    LOST_PROGRESS = "lost_progress"  # resumed from an older checkpoint than the newest committed before the kill
    RANKS_RESUMED_APART = "ranks_resumed_apart"  # the ranks of one attempt restored different steps
    NO_EVIDENCE = "no_evidence"  # nothing was compared that a PASS could rest on
    EXIT_UNKNOWN = "exit_unknown"  # a rank's exit status of the last attempt is unknown
    STALL = "stall"  # no rank recorded anything for the stall limit (exit 4): not a resume bug
    NONDETERMINISTIC_BASELINE = "nondeterministic_baseline"
    NOT_RESUMED = "not_resumed"
    UNKNOWN_RESUME_STATE = "unknown_resume_state"
    CRASH_ON_RESUME = "crash_on_resume"
    CRASH = "crash"
    FAULT_NOT_FIRED = "fault_not_fired"
    FAULT_SURVIVED = "fault_survived"
    FAULT_NOT_ARMED = "fault_not_armed"
    TIMEOUT = "timeout"
    BASELINE_FAILED = "baseline_failed"
    ERROR = "error"


OUTCOMES = tuple(o.value for o in Outcome)
VERDICTS = tuple(v.value for v in VerdictKind)
EXIT_CODES = {VerdictKind.PASS: 0, VerdictKind.FAIL: 1, VerdictKind.ERROR: 2}
#: Outcomes with an exit code of their own (else the verdict's): an RNG-only difference and a stall are
#: told apart from a training divergence (1) and from a harness error (2) by scripts and CI.
OUTCOME_EXIT_CODES = {Outcome.RNG_ONLY: 3, Outcome.STALL: 4}
PASSING = (Outcome.BIT_EXACT, Outcome.ELASTIC_PASS, Outcome.RNG_ACCEPTED)


def exit_code_of(verdict: str, outcome) -> int:
    """The process exit code of a trial: its outcome's own (OUTCOME_EXIT_CODES), else its verdict's."""
    try:
        outcome = Outcome(outcome)
    except ValueError:
        return EXIT_CODES.get(verdict, 2)
    return OUTCOME_EXIT_CODES.get(outcome, EXIT_CODES.get(verdict, 2))


@dataclass(frozen=True)
class Finding:
    """What one check of the oracle found wrong (or, for the last check, right): the oracle makes the first
    finding its Verdict, adding what it compared."""

    verdict: VerdictKind
    outcome: Outcome
    message: str
    hint: str | None = None
    log_tail: str | None = None  # the log of the rank the finding is about (a crash)

    def __post_init__(self):
        object.__setattr__(self, "verdict", VerdictKind(self.verdict))
        object.__setattr__(self, "outcome", Outcome(self.outcome))

    def verdict_fields(self) -> dict:
        """The finding as Verdict keywords (hint and log tail only where it has them)."""
        out = {"verdict": self.verdict, "outcome": self.outcome, "message": self.message}
        if self.hint is not None:
            out["hint"] = self.hint
        if self.log_tail is not None:
            out["log_tail"] = self.log_tail
        return out


@dataclass(frozen=True)
class Verdict:
    """The judgement of one trial, made once by `assess` (or by the engine for a run that could not be
    judged) and never edited afterwards."""

    verdict: VerdictKind
    outcome: Outcome
    message: str
    first_divergence: Divergence | None = None
    compared: dict = field(default_factory=dict)
    attempts: tuple[AttemptSummary, ...] = ()
    log_tail: str | None = None
    warnings: tuple[str, ...] = ()
    hint: str | None = None  # what the user should check
    diagnosis: Diagnosis | None = None  # the likely cause of a failure, with its evidence
    # The first divergence of an RNG stream, and its cause, reported apart from the training divergence
    # (first_divergence), which it never hides; the RNG streams a PASS accepted (--accept-rng).
    rng_divergence: Divergence | None = None
    rng_diagnosis: Diagnosis | None = None
    accepted: tuple[str, ...] = ()

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        object.__setattr__(self, "verdict", VerdictKind(self.verdict))
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        object.__setattr__(self, "attempts", tuple(self.attempts))
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "accepted", tuple(self.accepted))
        if self.verdict is VerdictKind.PASS and self.outcome not in PASSING:
            raise ValueError(f"only {', '.join(o.value for o in PASSING)} pass, not {self.outcome}")
