"""The per-process trace writer and fault trigger (the nemesis inside each rank).

Created at the first probe call from the environment (docs/design.md, section 1). Each row is one
unbuffered ``os.write`` of one JSON line, so a row that was written survives a SIGKILL that comes
right after it; an armed fault fires only after its row is written.
"""

from __future__ import annotations

import json
import os
import signal as _signal
import threading
import time
from dataclasses import fields

from harness import run_env
from harness.trace_schema import SCHEMA_VERSION, FaultRow, Row, StartRow, rank_trace_file


def _determinism() -> dict | None:
    """The GPU determinism settings in force now (set by harness.launch.determinism, or by the script)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            "cuda": torch.cuda.is_initialized()}


class InjectedFault(RuntimeError):
    """The in-process fault delivered by a fault plan whose signal is ``exception``."""


class Recorder:
    """Per-process trace writer and fault trigger."""

    def __init__(self, trace_dir: str):
        from harness.faults import Fault

        env = os.environ
        self.trace_dir = trace_dir
        self.rank = int(env.get("RANK", "0"))
        self.world_size = int(env.get("WORLD_SIZE", "1"))
        self.attempt = int(env.get(run_env.ATTEMPT, "0"))
        fault_json = env.get(run_env.FAULT)
        fault = Fault.from_json(fault_json) if fault_json else None
        self.fault = fault if fault is not None and fault.applies_to(self.rank) else None
        self.pid = os.getpid()
        self.lock = threading.RLock()  # a checkpointer may call probe.point from a background thread
        self.last_step = 0
        self.point_counts: dict[str, int] = {}
        local_ranks = int(env.get("LOCAL_WORLD_SIZE", "1"))
        self.spare_core = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > local_ranks
        self._hasher = None
        self.auto = None  # the AutoRecorder of auto mode (harness.probe.auto), when installed
        os.makedirs(trace_dir, exist_ok=True)
        path = os.path.join(trace_dir, rank_trace_file(self.rank))
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.write(StartRow(attempt=self.attempt, rank=self.rank, pid=self.pid, world_size=self.world_size,
                            time=time.time(), schema=SCHEMA_VERSION, determinism=_determinism()))

    def hasher(self):
        if self._hasher is None:
            from concurrent.futures import ThreadPoolExecutor

            self._hasher = ThreadPoolExecutor(1, thread_name_prefix="probe-digest")
        return self._hasher

    def write(self, row: Row) -> None:
        data = (json.dumps(_row_json(row), separators=(",", ":"), allow_nan=False) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def maybe_fire(self, step: int | None = None, point: str | None = None) -> None:
        fault = self.fault
        if fault is None:
            return
        if point is None:
            if fault.step != step:
                return
        elif fault.point != point or self.point_counts[point] != fault.occurrence:
            return
        self.fault = None  # fires once
        self.write(FaultRow(attempt=self.attempt, rank=self.rank, fault=fault.to_json(), step=self.last_step,
                            point=point, time=time.time()))
        where = f"point {point!r} (occurrence {fault.occurrence})" if point else f"step {step}"
        if fault.signal == "SIGKILL":
            os.kill(os.getpid(), _signal.SIGKILL)
            os._exit(128 + _signal.SIGKILL)  # not reached
        elif fault.signal == "SIGTERM":
            # Thread-directed to the main thread, so a Python handler runs right after this call
            # returns; with the default disposition the whole process terminates here.
            _signal.pthread_kill(threading.main_thread().ident, _signal.SIGTERM)
        else:
            raise InjectedFault(f"resume-harness: injected fault {fault.format()} on rank {self.rank} at {where}")


_FIELD_NAMES: dict = {}  # row class -> its field names but ``kind``


def _row_json(row: Row) -> dict:
    """``row_to_json(row)`` without its deep copy (``dataclasses.asdict``), which costs more than the
    JSON encoding of a step row: rows hold plain JSON values, and the object is encoded at once."""
    names = _FIELD_NAMES.get(type(row))
    if names is None:
        names = _FIELD_NAMES[type(row)] = tuple(f.name for f in fields(row) if f.name != "kind")
    out = {"kind": row.kind}
    for name in names:
        out[name] = getattr(row, name)
    return out


_recorder: Recorder | None | bool = None  # None: env not read yet; False: disabled


def get() -> Recorder | None:
    """This process's recorder, or None outside the harness (and in processes forked by a rank)."""
    global _recorder
    rec = _recorder
    if rec is None:
        trace_dir = os.environ.get(run_env.TRACE_DIR)
        rec = _recorder = Recorder(trace_dir) if trace_dir else False
    if rec is False or rec.pid != os.getpid():
        return None
    return rec
