"""The trace schema: the rows that the probe writes in each rank and the oracle reads afterwards.

One module, used by the writer (``harness.probe``), the reader (``harness.oracle.trace``) and the
tests that build traces by hand, so the three cannot drift apart. docs/design.md, section 2, is the
prose form of it.

A trace folder holds, per rank ``r``::

    rank{r}.jsonl                 one JSON object per line, appended across attempts (rows below)
    final/rank{r}.safetensors     the tensors given to probe.finish, under typed key paths
    final/rank{r}.json            the other leaves of probe.finish, under the same key paths

Every row has ``kind``, ``attempt`` and ``rank``. Unknown keys are ignored when reading, so a newer
writer's extra fields do not break an older reader; a missing required field is an error.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Union

#: Version of the row format; written in every ``start`` row.
SCHEMA_VERSION = 2



class Point:
    """The names of the points (``probe.point``) the harness itself knows: the checkpointer's save and load.

    A save calls, in order: ``BEGIN``; per file ``WRITE`` (and ``CHUNK`` every 16 MiB inside a large file),
    ``FSYNC``; ``MANIFEST``; ``COMMIT`` (just before the atomic rename); ``COMMITTED`` (after it, with the
    step); ``ROTATE`` (removing old checkpoints). A load calls ``LOADED`` with the step it resumed from,
    and an elastic load ``ELASTIC`` / ``NOT_ELASTIC`` / ``CANNOT_RESHARD``. Auto mode and the
    third-party adapters (``scenarios/sut``) name the save calls they see with the same ``BEGIN``,
    ``WRITE``, ``COMMITTED``.
    """

    BEGIN = "checkpoint.begin"
    WRITE = "checkpoint.write"
    CHUNK = "checkpoint.chunk"
    FSYNC = "checkpoint.fsync"
    MANIFEST = "checkpoint.manifest"
    COMMIT = "checkpoint.commit"
    COMMITTED = "checkpoint.committed"
    ROTATE = "checkpoint.rotate"
    LOADED = "checkpoint.loaded"
    ELASTIC = "checkpoint.elastic"
    NOT_ELASTIC = "checkpoint.not_elastic"
    CANNOT_RESHARD = "checkpoint.cannot_reshard"


#: The points inside a save where a kill lands mid-save, in save order (``COMMITTED`` is after it).
SAVE_POINTS = (Point.BEGIN, Point.WRITE, Point.CHUNK, Point.FSYNC, Point.MANIFEST, Point.COMMIT, Point.ROTATE)
#: The save calls auto mode sees in a plain script, each a point just before the call.
AUTO_SAVE_POINTS = ("torch.save", "safetensors.save_file", "dcp.save", "deepspeed.save_checkpoint")

RANK_TRACE_RE = re.compile(r"^rank(\d+)\.jsonl$")
FINAL_DIR = "final"


def rank_trace_file(rank: int) -> str:
    """File name of a rank's rows, inside the trace folder."""
    return f"rank{rank}.jsonl"


def final_tensors_file(rank: int) -> str:
    """Path of a rank's final tensors, relative to the trace folder."""
    return f"{FINAL_DIR}/rank{rank}.safetensors"


def final_leaves_file(rank: int) -> str:
    """Path of a rank's final non-tensor leaves, relative to the trace folder."""
    return f"{FINAL_DIR}/rank{rank}.json"


@dataclass(frozen=True)
class StartRow:
    """A rank process started (or restarted) and made its first probe call."""

    attempt: int
    rank: int
    pid: int
    world_size: int
    time: float
    schema: int = 1
    # The GPU determinism settings in force at the first probe call (harness.launch.determinism):
    # deterministic_algorithms, cudnn_deterministic, cudnn_benchmark, cublas_workspace_config, cuda (in use).
    determinism: dict | None = None
    kind: str = field(default="start", init=False)


@dataclass(frozen=True)
class StepRow:
    """One global optimizer step on one rank, recorded after the step.

    loss: ``{"dtype", "hex"}`` (raw bytes) or None. batch, params, optimizer: digests or None.
    rng: digest per stream (python, numpy, torch, cuda; None where absent). params_tensors: digest per
    parameter/buffer name. optimizer_groups: per param group, its hyperparameters as exact JSON leaves.
    optimizer_state: digest per "<param name> <state key>". extra: per key, a digest or an exact JSON leaf.
    time: wall-clock seconds (time.time()) when the row was written, for progress and stall limits.
    backward, fetched, hyper: evidence for the diagnosis, never compared (harness.probe.evidence): backward
    calls in the step, digests of the loader batches they consumed and of their sampler indices, the param
    groups' hyperparameters.
    """

    attempt: int
    rank: int
    step: int
    time: float | None = None
    loss: dict | None = None
    loss_value: float | None = None
    batch: str | None = None
    rng: dict = field(default_factory=dict)
    params: str | None = None
    params_tensors: dict | None = None
    optimizer: str | None = None
    optimizer_groups: list | None = None
    optimizer_state: dict | None = None
    extra: dict = field(default_factory=dict)
    backward: int | None = None
    fetched: list | None = None
    samples: list | None = None
    hyper: list | None = None
    kind: str = field(default="step", init=False)


@dataclass(frozen=True)
class EventRow:
    """A named point (``probe.point``): ``step`` is the last step seen (0 before any)."""

    attempt: int
    rank: int
    name: str
    step: int
    info: dict = field(default_factory=dict)
    time: float | None = None
    kind: str = field(default="event", init=False)

    @property
    def event_step(self):
        """The step the event is about: its info's ``step`` (e.g. a checkpoint's), else the last step seen."""
        return self.info["step"] if isinstance(self.info, dict) and "step" in self.info else self.step


@dataclass(frozen=True)
class FaultRow:
    """An armed fault is about to be delivered (written just before it)."""

    attempt: int
    rank: int
    fault: dict
    step: int
    point: str | None = None
    time: float | None = None
    kind: str = field(default="fault", init=False)


@dataclass(frozen=True)
class FinishRow:
    """probe.finish completed: the final state is in ``file`` (and its ``.json`` sibling)."""

    attempt: int
    rank: int
    file: str
    time: float | None = None
    kind: str = field(default="finish", init=False)


@dataclass(frozen=True)
class RestoredRow:
    """The state a resumed rank restored, recorded right after its load (``probe.restored``).

    ``step``: the step of the checkpoint loaded. The digest fields are those of a StepRow (the same
    functions compute them), so the elastic oracle compares them with the baseline's row of that step.
    """

    attempt: int
    rank: int
    step: int
    world_size: int | None = None
    time: float | None = None
    params: str | None = None
    params_tensors: dict | None = None
    optimizer: str | None = None
    optimizer_groups: list | None = None
    optimizer_state: dict | None = None
    extra: dict = field(default_factory=dict)
    kind: str = field(default="restored", init=False)


Row = Union[StartRow, StepRow, EventRow, FaultRow, FinishRow, RestoredRow]
ROW_TYPES: dict[str, type] = {"start": StartRow, "step": StepRow, "event": EventRow, "fault": FaultRow,
                              "finish": FinishRow, "restored": RestoredRow}


def resumed_from(row: Row) -> int | None:
    """The step a row shows its rank resumed from, in the row's attempt: a ``checkpoint.loaded`` event's
    step; a step row's step minus one (a rank that loaded nothing trained on from there); None for any
    other row. A rank's first such row in an attempt decides, while the attempt runs
    (harness.engine.resume_watch) and afterwards (harness.oracle.lifecycle.ranks_apart) alike."""
    if isinstance(row, StepRow):
        return row.step - 1
    if isinstance(row, EventRow) and row.name == Point.LOADED and isinstance(row.event_step, int):
        return row.event_step
    return None


class RowError(ValueError):
    """A JSON object that is not a valid trace row."""


def row_to_json(row: Row) -> dict:
    """The JSON object of a row, ``kind`` first."""
    data = asdict(row)
    return {"kind": data.pop("kind"), **data}


_INIT_NAMES: dict[type, frozenset] = {}


def parse_row(obj: Any) -> Row:
    """A typed row from a parsed JSON object. Raises RowError naming what is wrong."""
    if not isinstance(obj, dict):
        raise RowError(f"a trace row is a JSON object, got {type(obj).__name__}")
    cls = ROW_TYPES.get(obj.get("kind"))
    if cls is None:
        raise RowError(f"unknown row kind {obj.get('kind')!r}")
    names = _INIT_NAMES.get(cls)
    if names is None:  # once per row type: a trace has thousands of rows
        names = _INIT_NAMES[cls] = frozenset(f.name for f in fields(cls) if f.init)
    kwargs = {k: v for k, v in obj.items() if k in names}
    kwargs.setdefault("attempt", 0)
    try:
        row = cls(**kwargs)
    except TypeError as e:
        raise RowError(f"{obj.get('kind')} row: {e}") from None
    if not isinstance(row.rank, int) or not isinstance(row.attempt, int):
        raise RowError(f"{row.kind} row: rank and attempt must be integers")
    if isinstance(row, (StepRow, EventRow, FaultRow, RestoredRow)) and not isinstance(row.step, int):
        raise RowError(f"{row.kind} row: step must be an integer, got {row.step!r}")
    return row
