"""The in-process probe: what a training script calls to be tested by the harness.

Public API (a no-op outside the harness, so instrumented scripts still run under plain torchrun)::

    probe.run_dir() -> str                   folder for this run's checkpoints
    probe.step(step, loss=None, batch=None, model=None, optimizer=None, **extra)
                                             after each optimizer step (global step, 1-based)
    probe.point(name, **info)                a named fault point (the checkpointer calls these)
    probe.finish(model=None, optimizer=None, **state)
                                             at the end: the final state, every tensor, every byte
    probe.enabled() -> bool                  True inside the harness
    probe.InjectedFault                      raised by a fault whose signal is "exception"

The probe reads its environment (docs/design.md, section 1) lazily at the first call. It writes one
JSON row per call to ``$HARNESS_TRACE_DIR/rank{r}.jsonl`` with a single unbuffered ``os.write``,
*before* delivering an armed fault (``$HARNESS_FAULT``), so the row survives the SIGKILL that
follows it: the probe is the nemesis, faults fire at exact points inside the rank.

Calls from a process forked by a rank (e.g. a DataLoader worker) are no-ops.
"""

from __future__ import annotations

import json
import os
import signal as _signal
import struct
import sys
import threading
import time

from harness.probe import digest as _digest

__all__ = ["run_dir", "step", "point", "finish", "enabled", "InjectedFault"]


class InjectedFault(RuntimeError):
    """The in-process fault delivered by a fault plan whose signal is ``exception``."""


class _Recorder:
    """Per-process trace writer and fault trigger, created at the first probe call."""

    def __init__(self, trace_dir: str):
        from harness.faults import Fault

        env = os.environ
        self.trace_dir = trace_dir
        self.rank = int(env.get("RANK", "0"))
        self.world_size = int(env.get("WORLD_SIZE", "1"))
        self.attempt = int(env.get("HARNESS_ATTEMPT", "0"))
        fault_json = env.get("HARNESS_FAULT")
        fault = Fault.from_json(fault_json) if fault_json else None
        self.fault = fault if fault is not None and fault.applies_to(self.rank) else None
        self.pid = os.getpid()
        self.lock = threading.RLock()  # a checkpointer may call probe.point from a background thread
        self.last_step = 0
        self.point_counts: dict[str, int] = {}
        local_ranks = int(env.get("LOCAL_WORLD_SIZE", "1"))
        self.spare_core = hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > local_ranks
        self._hasher = None
        os.makedirs(trace_dir, exist_ok=True)
        path = os.path.join(trace_dir, f"rank{self.rank}.jsonl")
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.write({"kind": "start", "pid": self.pid, "world_size": self.world_size, "time": time.time()})

    def hasher(self):
        if self._hasher is None:
            from concurrent.futures import ThreadPoolExecutor

            self._hasher = ThreadPoolExecutor(1, thread_name_prefix="probe-digest")
        return self._hasher

    def write(self, row: dict) -> None:
        row = {"kind": row.pop("kind"), "attempt": self.attempt, "rank": self.rank, **row}
        data = (json.dumps(row, separators=(",", ":"), default=str) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    # -- faults ------------------------------------------------------------------------------
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
        self.write({"kind": "fault", "fault": fault.to_json(), "step": self.last_step, "point": point})
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


_recorder: _Recorder | None | bool = None  # None: env not read yet; False: disabled


def _get() -> _Recorder | None:
    global _recorder
    rec = _recorder
    if rec is None:
        trace_dir = os.environ.get("HARNESS_TRACE_DIR")
        rec = _recorder = _Recorder(trace_dir) if trace_dir else False
    if rec is False or rec.pid != os.getpid():
        return None
    return rec


def enabled() -> bool:
    """True when running under the harness (``HARNESS_TRACE_DIR`` is set)."""
    return _get() is not None


def run_dir() -> str:
    """The folder for this run's checkpoints: the same across restarts of one run.

    Under the harness it differs between the baseline and each trial. Outside the harness it is
    ``$HARNESS_RUN_DIR`` if set, else ``./resume-harness-run``. The folder is created.
    """
    path = os.environ.get("HARNESS_RUN_DIR") or os.path.abspath("resume-harness-run")
    os.makedirs(path, exist_ok=True)
    return path


def _loss_record(loss):
    if loss is None:
        return None, None
    if isinstance(loss, (float, int)) and not isinstance(loss, bool):
        value = float(loss)
        return {"dtype": "float64", "hex": struct.pack("<d", value).hex()}, value
    if _digest._is_tensor(loss):
        raw = bytes(_digest.tensor_bytes(loss))
        value = float(loss.detach().reshape(-1)[0]) if loss.numel() == 1 else None
        return {"dtype": str(loss.dtype).replace("torch.", ""), "hex": raw.hex()}, value
    np = sys.modules.get("numpy")
    if np is not None and isinstance(loss, (np.ndarray, np.generic)):
        arr = np.ascontiguousarray(loss)
        value = float(arr.reshape(-1)[0]) if arr.size == 1 else None
        return {"dtype": arr.dtype.name, "hex": arr.tobytes().hex()}, value
    raise TypeError(f"probe.step(loss=...) takes a float or a tensor, got {type(loss).__qualname__}")


def _extra_value(key: str, value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    try:
        return _digest.digest(value)
    except _digest.DigestError as e:
        raise TypeError(f"probe.step({key}=...): {e}") from None


def step(step: int, loss=None, batch=None, model=None, optimizer=None, **extra) -> None:
    """Record this rank's trace row for global optimizer step ``step`` (1-based).

    The row holds the loss as exact bits, a digest of ``batch``, digests of the python/numpy/
    torch/CUDA RNG states, and with ``model``/``optimizer`` digests of the parameters and the
    optimizer state; ``extra`` values are recorded as JSON scalars or digests. An armed fault
    for this step fires after the row is written.
    """
    rec = _get()
    if rec is None:
        return
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise ValueError(f"probe.step: step must be the global optimizer step, an int >= 1, got {step!r}")
    loss_bits, loss_value = _loss_record(loss)
    try:
        batch_digest = None if batch is None else _digest.digest(batch)
    except _digest.DigestError as e:
        raise TypeError(f"probe.step(batch=...): {e}") from None
    # The optimizer state (2x the parameters for Adam) is hashed on a second thread when this process
    # has a core to spare: the hash releases the GIL, and it is memory-bound (~22 GB/s per core here).
    pending = rec.hasher().submit(_digest.optimizer_digest, optimizer) if optimizer is not None and \
        model is not None and rec.spare_core else None
    params, params_tensors = _digest.params_digests(model) if model is not None else (None, None)
    optimizer_digest = pending.result() if pending is not None else (
        _digest.optimizer_digest(optimizer) if optimizer is not None else None)
    row = {
        "kind": "step",
        "step": step,
        "loss": loss_bits,
        "loss_value": loss_value,
        "batch": batch_digest,
        "rng": _digest.rng_digests(),
        "params": params,
        "params_tensors": params_tensors,
        "optimizer": optimizer_digest,
        "extra": {key: _extra_value(key, value) for key, value in extra.items()},
    }
    with rec.lock:
        rec.last_step = step
        rec.write(row)
        rec.maybe_fire(step=step)


def point(name: str, **info) -> None:
    """A named fault point: records an ``event`` row, then fires an armed fault for this point."""
    rec = _get()
    if rec is None:
        return
    with rec.lock:
        rec.point_counts[name] = rec.point_counts.get(name, 0) + 1
        rec.write({"kind": "event", "name": name, "step": rec.last_step, "info": info})
        rec.maybe_fire(point=name)


def finish(model=None, optimizer=None, **state) -> None:
    """Record the final state for the exact comparison: every tensor, every byte.

    Collective under torch.distributed with gloo (a barrier, see _guard_gloo_teardown): every rank calls it.
    Writes ``final/rank{r}.safetensors`` (tensors, keys ``model/...``, ``optimizer/...``,
    ``extra/<name>/...``) and ``final/rank{r}.json`` (the other leaves), then a ``finish`` row.
    """
    rec = _get()
    if rec is None:
        return
    from safetensors.torch import save_file

    import torch

    tree: dict = {}
    if model is not None:
        tree["model"] = _digest.unwrap_model(model).state_dict()
    if optimizer is not None:
        tree["optimizer"] = optimizer.state_dict()
    if state:
        tree["extra"] = state
    tensors: dict = {}
    values: dict = {}
    try:
        for key, leaf in _digest.leaves(tree):
            if isinstance(leaf, torch.Tensor):
                tensors[key] = _final_tensor(leaf)
            elif _digest._is_ndarray(leaf):
                tensors[key] = torch.from_numpy(leaf.copy())
            elif isinstance(leaf, bytes):
                values[key] = {"bytes": leaf.hex()}
            else:
                values[key] = leaf
    except _digest.DigestError as e:
        raise TypeError(f"probe.finish: {e}") from None
    final_dir = os.path.join(rec.trace_dir, "final")
    os.makedirs(final_dir, exist_ok=True)
    base = os.path.join(final_dir, f"rank{rec.rank}")
    save_file(tensors, base + ".safetensors.tmp")
    os.replace(base + ".safetensors.tmp", base + ".safetensors")
    with open(base + ".json.tmp", "w") as f:
        json.dump(values, f, sort_keys=True)
    os.replace(base + ".json.tmp", base + ".json")
    rec.write({"kind": "finish", "file": f"final/rank{rec.rank}.safetensors"})
    _guard_gloo_teardown()


_WORKS_KEPT: list = []


def _guard_gloo_teardown() -> None:
    """Work around a torch (2.13) deadlock at the end of DDP + gloo jobs (~1 run in 50-100 under load).

    Backward stashes a Python object (a contextvars copy) in thread-local state, which DDP's allreduce
    works capture. If a gloo worker thread drops the last reference to such a work it needs the GIL,
    while the main thread, freeing the process group (destroy_process_group, or the DDP model at
    exit), joins that thread holding the GIL. A barrier completes every work still in flight, and
    keeping its handle until the process ends means the works are freed by the main thread.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        work = dist.barrier(async_op=True)
        work.wait()
        _WORKS_KEPT.append(work)


def _final_tensor(t):
    return _digest.plain_tensor(t).to("cpu", copy=True).contiguous()
