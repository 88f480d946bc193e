"""Fault plans as data: which process dies, where, and how.

A ``Fault`` says *where* (a step number, or the n-th call of a named fault point), *which rank*
(a number or ``all``) and *how* (SIGKILL, SIGTERM, or an exception raised inside the probe).
A ``FaultPlan`` is a list of faults. Attempt *i* of a trial arms fault *i* only, so a plan of *k*
faults restarts the job *k* times and every fault fires at most once per trial.

Short form (``harness run --kill ...``)
---------------------------------------
::

    (KILL_GRAMMAR below)

``random`` is a step drawn from ``--seed``, once the baseline exists: uniformly among the steps after
the baseline's first committed checkpoint and before its last step (1..last-1 if it committed none);
several random faults get their steps in ascending order (equal steps possible).
SIGKILL and SIGTERM are real signals that the rank sends itself from inside the probe; after
SIGTERM a script with a handler continues (it may save and exit), without one it terminates.

Examples::

    (KILL_EXAMPLES below)

JSON form (``HARNESS_FAULT``, result.json)::

    {"at": {"step": 12}, "rank": 0, "signal": "SIGKILL"}
    {"at": {"point": "checkpoint.write", "occurrence": 2}, "rank": "all", "signal": "SIGTERM"}
    {"at": {"random": true}, "rank": 0, "signal": "SIGKILL"}
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Union

#: The short-form grammar of ``--kill``: one text, used by this docstring, ``harness run --help`` and
#: the README (a test checks the README holds it verbatim).
KILL_GRAMMAR = """\
PLAN    := FAULT ("," FAULT)*          several faults: comma-separated or repeated --kill
FAULT   := AT ["@" RANK] [":" SIGNAL]
AT      := STEP | POINT [":" COUNT] | "random"
STEP    := integer >= 1                 inside probe.step(STEP), after its trace row is written
POINT   := name of a probe.point, letters, digits and "_" "." "-" "/", not starting with a digit
COUNT   := integer >= 1                 the COUNT-th call of that point in the attempt (default 1)
RANK    := integer >= 0 | "all"         (default 0)
SIGNAL  := SIGKILL | KILL | SIGTERM | TERM | exception | exc     (case-insensitive, default SIGKILL)
"""

#: Examples of the short form, with what each means (shown with the grammar).
KILL_EXAMPLES = """\
12                              SIGKILL rank 0 inside probe.step(12)
12@1                            the same on rank 1
12@all:SIGTERM                  SIGTERM every rank at step 12 (the script may save and exit)
checkpoint.write:2@all:SIGTERM  SIGTERM every rank at its 2nd checkpoint.write point
checkpoint.commit:exc           raise InjectedFault on rank 0 at the first checkpoint.commit
random@all                      SIGKILL all ranks at a step chosen from --seed
5,20@1                          two faults: the run is restarted twice
"""

# The docstring shows the same text, not a copy of it.
__doc__ = __doc__.replace("    (KILL_GRAMMAR below)\n", "".join("    " + ln + "\n" for ln in KILL_GRAMMAR.splitlines())) \
    .replace("    (KILL_EXAMPLES below)\n", "".join("    " + ln + "\n" for ln in KILL_EXAMPLES.splitlines()))

SIGNALS = ("SIGKILL", "SIGTERM", "exception")
_SIGNAL_ALIASES = {
    "sigkill": "SIGKILL", "kill": "SIGKILL",
    "sigterm": "SIGTERM", "term": "SIGTERM",
    "exception": "exception", "exc": "exception",
}
_POINT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*\Z")
_INT_RE = re.compile(r"[0-9]+\Z")

Rank = Union[int, str]  # an int >= 0 or "all"


@dataclass(frozen=True)
class Fault:
    """One fault. Exactly one of ``step``, ``point`` or ``random`` says where it fires."""

    step: int | None = None
    point: str | None = None
    occurrence: int = 1
    random: bool = False
    rank: Rank = 0
    signal: str = "SIGKILL"

    def __post_init__(self):
        where = sum([self.step is not None, self.point is not None, self.random])
        if where != 1:
            raise ValueError(f"a fault needs exactly one of step, point or random, got {self!r}")
        if self.step is not None and (not isinstance(self.step, int) or isinstance(self.step, bool) or self.step < 1):
            raise ValueError(f"fault step must be an integer >= 1, got {self.step!r}")
        if self.point is not None and not _POINT_RE.match(self.point):
            raise ValueError(f"bad fault point name {self.point!r}: use letters, digits, '_', '.', '-', '/'")
        if self.point is not None and self.point == "random":
            raise ValueError("'random' is not a point name")
        if not isinstance(self.occurrence, int) or isinstance(self.occurrence, bool) or self.occurrence < 1:
            raise ValueError(f"fault occurrence must be an integer >= 1, got {self.occurrence!r}")
        if self.occurrence != 1 and self.point is None:
            raise ValueError("an occurrence count is only allowed with a named point")
        if self.rank != "all" and (not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 0):
            raise ValueError(f"fault rank must be an integer >= 0 or 'all', got {self.rank!r}")
        if self.signal not in SIGNALS:
            raise ValueError(f"fault signal must be one of {', '.join(SIGNALS)}, got {self.signal!r}")

    def applies_to(self, rank: int) -> bool:
        return self.rank == "all" or self.rank == rank

    # -- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        if self.step is not None:
            at: dict = {"step": self.step}
        elif self.point is not None:
            at = {"point": self.point, "occurrence": self.occurrence}
        else:
            at = {"random": True}
        return {"at": at, "rank": self.rank, "signal": self.signal}

    @classmethod
    def from_json(cls, obj) -> "Fault":
        if isinstance(obj, str):
            obj = json.loads(obj)
        if not isinstance(obj, dict) or not isinstance(obj.get("at"), dict):
            raise ValueError(f'a fault is {{"at": {{...}}, "rank": ..., "signal": ...}}, got {obj!r}')
        unknown = set(obj) - {"at", "rank", "signal"}
        if unknown:
            raise ValueError(f"unknown fault key(s) {sorted(unknown)} in {obj!r}")
        at = obj["at"]
        unknown = set(at) - {"step", "point", "occurrence", "random"}
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} in fault 'at' {at!r}")
        return cls(step=at.get("step"), point=at.get("point"), occurrence=at.get("occurrence", 1),
                   random=bool(at.get("random", False)), rank=obj.get("rank", 0),
                   signal=obj.get("signal", "SIGKILL"))

    # -- short string ------------------------------------------------------------------------
    def format(self) -> str:
        if self.step is not None:
            text = str(self.step)
        elif self.point is not None:
            text = self.point if self.occurrence == 1 else f"{self.point}:{self.occurrence}"
        else:
            text = "random"
        if self.rank != 0:
            text += f"@{self.rank}"
        if self.signal != "SIGKILL":
            text += f":{self.signal}"
        return text

    @classmethod
    def parse(cls, text: str) -> "Fault":
        """Parse one FAULT of the short form (see the module docstring)."""
        token = text.strip()
        if not token:
            raise ValueError("empty fault: expected e.g. 12, 12@1, checkpoint.write:2@all:SIGTERM")
        if token.count("@") > 1:
            raise ValueError(f"bad fault {token!r}: more than one '@'")
        head, _, tail = token.partition("@")
        parts = head.split(":")
        at_text, rest = parts[0], parts[1:]
        signal_text = None
        rank: Rank = 0
        if "@" in token:
            rank_text, *sig = tail.split(":")
            if len(sig) > 1:
                raise ValueError(f"bad fault {token!r}: expected RANK[:SIGNAL] after '@', got {tail!r}")
            rank = _parse_rank(rank_text, token)
            signal_text = sig[0] if sig else None
            if len(rest) > 1 or (rest and not _INT_RE.match(rest[0])):
                raise ValueError(f"bad fault {token!r}: before '@' only AT[:COUNT] is allowed; "
                                 f"put the signal last, as in {at_text}@{rank_text}:SIGNAL")
            count_text = rest[0] if rest else None
        else:
            count_text = None
            if rest and _INT_RE.match(rest[0]):
                count_text, rest = rest[0], rest[1:]
            if len(rest) > 1:
                raise ValueError(f"bad fault {token!r}: too many ':' parts")
            signal_text = rest[0] if rest else None
        signal = _parse_signal(signal_text, token) if signal_text is not None else "SIGKILL"

        kwargs: dict = {"rank": rank, "signal": signal}
        if _INT_RE.match(at_text):
            if count_text is not None:
                raise ValueError(f"bad fault {token!r}: a COUNT ({count_text}) is only allowed after a point name, "
                                 f"not after step {at_text}")
            kwargs["step"] = int(at_text)
            if kwargs["step"] < 1:
                raise ValueError(f"bad fault {token!r}: steps are 1-based, got step {at_text}")
        elif at_text.lower() == "random":
            if count_text is not None:
                raise ValueError(f"bad fault {token!r}: 'random' takes no COUNT")
            kwargs["random"] = True
        elif _POINT_RE.match(at_text):
            kwargs["point"] = at_text
            if count_text is not None:
                kwargs["occurrence"] = int(count_text)
                if kwargs["occurrence"] < 1:
                    raise ValueError(f"bad fault {token!r}: COUNT must be >= 1, got {count_text}")
        else:
            raise ValueError(f"bad fault {token!r}: {at_text!r} is neither a step number, 'random', "
                             "nor a point name (letters, digits, '_', '.', '-', '/')")
        return cls(**kwargs)

    def __str__(self) -> str:
        return self.format()


def _parse_rank(text: str, token: str) -> Rank:
    if text.lower() == "all":
        return "all"
    if _INT_RE.match(text):
        return int(text)
    raise ValueError(f"bad fault {token!r}: rank {text!r} must be an integer >= 0 or 'all'")


def _parse_signal(text: str, token: str) -> str:
    signal = _SIGNAL_ALIASES.get(text.lower())
    if signal is None:
        raise ValueError(f"bad fault {token!r}: unknown signal {text!r}; use SIGKILL, SIGTERM or exception")
    return signal


@dataclass(frozen=True)
class FaultPlan:
    """An ordered list of faults; attempt i of a trial arms ``faults[i]``."""

    faults: tuple[Fault, ...] = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "faults", tuple(self.faults))

    def __len__(self) -> int:
        return len(self.faults)

    def __iter__(self):
        return iter(self.faults)

    def __getitem__(self, i: int) -> Fault:
        return self.faults[i]

    def __bool__(self) -> bool:
        return bool(self.faults)

    @property
    def has_random(self) -> bool:
        return any(f.random for f in self.faults)

    def resolve(self, seed: int, last_step: int, first_checkpoint: int = 0) -> "FaultPlan":
        """Replace ``random`` faults by concrete steps drawn from ``seed``.

        Steps are drawn in first_checkpoint+1..last_step-1, so that a checkpoint exists before the kill
        and the trial exercises a resume; 1..last_step-1 when the baseline committed none (or none early
        enough), e.g. a script with its own checkpointing that calls no probe points.
        """
        if not self.has_random:
            return self
        if last_step < 2:
            raise ValueError(f"a random fault needs a baseline of at least 2 steps, the baseline has {last_step}")
        rng = random.Random(seed)
        n = sum(f.random for f in self.faults)
        low = first_checkpoint + 1 if 0 < first_checkpoint < last_step - 1 else 1
        steps = iter(sorted(rng.randint(low, last_step - 1) for _ in range(n)))
        return FaultPlan(tuple(replace(f, random=False, step=next(steps)) if f.random else f for f in self.faults))

    def to_json(self) -> list:
        return [f.to_json() for f in self.faults]

    @classmethod
    def from_json(cls, obj) -> "FaultPlan":
        if isinstance(obj, str):
            obj = json.loads(obj)
        if not isinstance(obj, list):
            raise ValueError(f"a fault plan is a JSON list of faults, got {type(obj).__name__}")
        return cls(tuple(Fault.from_json(f) for f in obj))

    def format(self) -> str:
        return ",".join(f.format() for f in self.faults)

    def __str__(self) -> str:
        return self.format()

    @classmethod
    def parse(cls, texts: str | Iterable[str] | None) -> "FaultPlan":
        """Parse one or several PLAN strings (repeated --kill values) into one plan."""
        if texts is None:
            return cls(())
        if isinstance(texts, str):
            texts = [texts]
        faults = []
        for text in texts:
            if not text.strip():
                raise ValueError("empty --kill value: expected e.g. 12, 12@1, checkpoint.write:2@all:SIGTERM")
            faults.extend(Fault.parse(part) for part in text.split(","))
        return cls(tuple(faults))

    @classmethod
    def coerce(cls, plan) -> "FaultPlan":
        """Accept a FaultPlan, a Fault, a short string, a list of strings/Faults, or None."""
        if plan is None:
            return cls(())
        if isinstance(plan, FaultPlan):
            return plan
        if isinstance(plan, Fault):
            return cls((plan,))
        if isinstance(plan, str):
            return cls.parse(plan)
        items = list(plan)
        faults: list[Fault] = []
        for item in items:
            if isinstance(item, Fault):
                faults.append(item)
            elif isinstance(item, str):
                faults.extend(cls.parse(item).faults)
            elif isinstance(item, dict):
                faults.append(Fault.from_json(item))
            else:
                raise ValueError(f"cannot make a fault from {item!r}")
        return cls(tuple(faults))


__all__ = ["Fault", "FaultPlan", "SIGNALS", "KILL_GRAMMAR", "KILL_EXAMPLES"]
