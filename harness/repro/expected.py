"""What the reported run ended with: its verdict, outcome and first divergence (no tensors)."""

from __future__ import annotations

from dataclasses import dataclass

WHERE = ("trace", "final")


@dataclass(frozen=True)
class ExpectedDivergence:
    """The first divergence a report expects (what ``harness.oracle.Divergence`` says, without tensors)."""

    rank: int
    fields: tuple[str, ...]
    where: str = "trace"
    step: int | None = None
    attempt: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(self.fields))

    @classmethod
    def from_divergence(cls, d) -> ExpectedDivergence | None:
        if d is None:
            return None
        return cls(rank=d.rank, fields=tuple(d.fields), where=d.where, step=d.step, attempt=d.attempt)

    def same_as(self, other: ExpectedDivergence | None) -> bool:
        """Same step, rank, fields and place (the attempt may differ: a rerun may resume elsewhere)."""
        return other is not None and (self.step, self.rank, self.fields, self.where) == (
            other.step, other.rank, other.fields, other.where)

    def describe(self) -> str:
        at = "final state" if self.where == "final" else f"step {self.step}"
        attempt = f", attempt {self.attempt}" if self.attempt is not None else ""
        return f"{at}, rank {self.rank}{attempt}: {', '.join(self.fields)}"

    def to_json(self) -> dict:
        return {"step": self.step, "rank": self.rank, "attempt": self.attempt, "fields": list(self.fields),
                "where": self.where}


@dataclass(frozen=True)
class Expected:
    """What the reported run ended with."""

    verdict: str
    outcome: str
    message: str = ""
    hint: str | None = None
    first_divergence: ExpectedDivergence | None = None
    cause: str | None = None  # the diagnosis's likely cause, where the result had one

    @classmethod
    def from_result(cls, result) -> Expected:
        diagnosis = getattr(result, "diagnosis", None)
        return cls(verdict=result.verdict, outcome=str(result.outcome), message=result.message or "",
                   hint=getattr(result, "hint", None),
                   first_divergence=ExpectedDivergence.from_divergence(result.first_divergence),
                   cause=getattr(diagnosis, "cause", None))

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "outcome": self.outcome, "message": self.message, "hint": self.hint,
                "cause": self.cause,
                "first_divergence": self.first_divergence.to_json() if self.first_divergence else None}
