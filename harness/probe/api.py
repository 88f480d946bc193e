"""The probe's public calls: what a training script calls to be tested by the harness.

Every call is a no-op outside the harness (``HARNESS_TRACE_DIR`` unset), so an instrumented script
still runs unchanged under plain torchrun. Calls from a process forked by a rank (a DataLoader
worker) are no-ops too.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time

from harness import run_env
from harness.probe import digest as _digest
from harness.probe import state_digest as _state
from harness.probe import json_leaf as _json_leaf
from harness.probe import evidence as _evidence
from harness.probe.recorder import get as _get
from harness.tensors import is_tensor, plain_tensor, tensor_bytes, unwrap_model
from harness.trace_schema import EventRow, FinishRow, RestoredRow, StepRow, final_leaves_file, final_tensors_file


def enabled() -> bool:
    """True when running under the harness (``HARNESS_TRACE_DIR`` is set)."""
    return _get() is not None


def run_dir() -> str:
    """The folder for this run's checkpoints: the same across restarts of one run.

    Under the harness it differs between the baseline and each trial. Outside the harness it is
    ``$HARNESS_RUN_DIR`` if set, else ``./resume-harness-run``. The folder is created.
    """
    path = os.environ.get(run_env.RUN_DIR) or os.path.abspath("resume-harness-run")
    os.makedirs(path, exist_ok=True)
    return path


def _loss_record(loss):
    if loss is None:
        return None, None
    if isinstance(loss, (float, int)) and not isinstance(loss, bool):
        value = float(loss)
        return {"dtype": "float64", "hex": struct.pack("<d", value).hex()}, _finite(value)
    if is_tensor(loss):
        raw = bytes(tensor_bytes(loss))
        value = float(loss.detach()) if loss.numel() == 1 else None  # a one-element tensor of any shape
        return {"dtype": str(loss.dtype).replace("torch.", ""), "hex": raw.hex()}, _finite(value)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(loss, (np.ndarray, np.generic)):
        arr = np.ascontiguousarray(loss)
        value = float(arr.reshape(-1)[0]) if arr.size == 1 else None
        return {"dtype": arr.dtype.name, "hex": arr.tobytes().hex()}, _finite(value)
    raise TypeError(f"probe.step(loss=...) takes a float or a tensor, got {type(loss).__qualname__}")


def _finite(value):
    """The loss as a plain number for plots; the exact bits are in the record, non-finite ones included."""
    return value if value is None or value == value and value not in (float("inf"), float("-inf")) else None


def _extra_value(key: str, value):
    if value is None or isinstance(value, (bool, int, str, float)):
        return _json_leaf.json_leaf(value)  # floats by their bits when not finite
    try:
        return _digest.digest(value)
    except _digest.DigestError as e:
        raise TypeError(f"probe.step({key}=...): {e}") from None


def step(step: int, loss=None, batch=None, model=None, optimizer=None, **extra) -> None:
    """Record this rank's trace row for global optimizer step ``step`` (1-based).

    The row holds the loss as exact bits, a digest of ``batch``, digests of the python/numpy/
    torch/CUDA RNG states, and with ``model``/``optimizer`` digests of the parameters and the
    optimizer state (per parameter and state key, with each param group's hyperparameters as exact
    values); ``extra`` values are recorded as exact JSON scalars or digests. An armed fault for this
    step fires after the row is written.
    """
    rec = _get()
    if rec is None or rec.auto is not None:  # auto mode records steps itself (harness.probe.auto)
        return
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise ValueError(f"probe.step: step must be the global optimizer step, an int >= 1, got {step!r}")
    loss_bits, loss_value = _loss_record(loss)
    try:
        batch_digest = None if batch is None else _digest.digest(batch)
    except _digest.DigestError as e:
        raise TypeError(f"probe.step(batch=...): {e}") from None
    # The optimizer state (2x the parameters for Adam) is hashed on a second thread when this process
    # has a core to spare: the hash releases the GIL, and it is memory-bound.
    named = _state.NamedParams(list(unwrap_model(model).named_parameters())) if model is not None else None
    pending = rec.hasher().submit(_state.optimizer_record, optimizer, named) if optimizer is not None and \
        model is not None and rec.spare_core else None
    params, params_tensors = _state.params_digests(model, named.named_parameters()) if model is not None else \
        (None, None)
    opt = pending.result() if pending is not None else (
        _state.optimizer_record(optimizer, named) if optimizer is not None else None)
    ev = _evidence.take()
    row = StepRow(
        attempt=rec.attempt, rank=rec.rank, step=step, time=time.time(), loss=loss_bits, loss_value=loss_value,
        batch=batch_digest, rng=_state.rng_digests(), params=params, params_tensors=params_tensors,
        optimizer=opt["digest"] if opt else None, optimizer_groups=opt["groups"] if opt else None,
        optimizer_state=opt["state"] if opt else None,
        extra={key: _extra_value(key, value) for key, value in extra.items()}, **ev)
    with rec.lock:
        rec.last_step = step
        rec.write(row)
        rec.maybe_fire(step=step)


def restored(step: int, model=None, optimizer=None, **extra) -> None:
    """Record the state this rank restored from the checkpoint of ``step``, right after loading it.

    The same digests as ``probe.step`` (no loss, batch or RNG): the elastic oracle compares them
    exactly with the baseline's row of ``step``, also when the world size changed (pass world-size
    independent views then: full tensors, not shards). No fault fires here.
    """
    rec = _get()
    if rec is None or rec.auto is not None:
        return
    params, params_tensors = _state.params_digests(model) if model is not None else (None, None)
    opt = _state.optimizer_record(optimizer, model) if optimizer is not None else None
    row = RestoredRow(
        attempt=rec.attempt, rank=rec.rank, step=int(step), world_size=rec.world_size, time=time.time(),
        params=params, params_tensors=params_tensors, optimizer=opt["digest"] if opt else None,
        optimizer_groups=opt["groups"] if opt else None, optimizer_state=opt["state"] if opt else None,
        extra={key: _extra_value(key, value) for key, value in extra.items()})
    with rec.lock:
        rec.write(row)


def point(name: str, **info) -> None:
    """A named fault point: records an ``event`` row, then fires an armed fault for this point."""
    rec = _get()
    if rec is None:
        return
    if rec.auto is not None:
        rec.auto.boundary()  # a save begins: the pending training step's row first (harness.probe.auto)
    with rec.lock:
        rec.point_counts[name] = rec.point_counts.get(name, 0) + 1
        rec.write(EventRow(attempt=rec.attempt, rank=rec.rank, name=name, step=rec.last_step,
                           info=json.loads(json.dumps(info, default=str)), time=time.time()))
        rec.maybe_fire(point=name)


def finish(model=None, optimizer=None, **state) -> None:
    """Record the final state for the exact comparison: every tensor, every byte.

    Collective under torch.distributed with gloo (a barrier, see _guard_gloo_teardown): every rank calls it.
    Writes ``final/rank{r}.safetensors`` (tensors) and ``final/rank{r}.json`` (every other leaf, as an
    exact JSON leaf), both under the typed key paths of ``harness.probe.digest`` (``model/...``,
    ``optimizer/...``, ``extra/<name>/...``), then a ``finish`` row.
    """
    rec = _get()
    if rec is None or rec.auto is not None:  # auto mode records the final state itself at exit
        return
    tree: dict = {}
    if model is not None:
        tree["model"] = _state.model_state_dict(model)
    if optimizer is not None:
        tree["optimizer"] = _state.optimizer_state_dict(optimizer)
    if state:
        tree["extra"] = state
    write_final(rec, tree)
    _guard_gloo_teardown()


def write_final(rec, tree: dict) -> None:
    """Write ``tree`` (``{"model": ..., "optimizer": ..., "extra": ...}``) as this rank's final state, then a
    ``finish`` row (the files of probe.finish; also used by auto mode)."""
    from safetensors.torch import save_file

    import torch

    tensors: dict = {}
    values: dict = {}
    try:
        for key, leaf in _digest.leaves(tree):
            if isinstance(leaf, torch.Tensor):
                tensors[key] = plain_tensor(leaf).to("cpu", copy=True).contiguous()
            elif _digest._is_ndarray(leaf):
                tensors[key] = torch.from_numpy(leaf.copy())
            else:
                values[key] = _json_leaf.json_leaf(leaf)
    except _digest.DigestError as e:
        raise TypeError(f"probe.finish: {e}") from None
    base = os.path.join(rec.trace_dir, final_tensors_file(rec.rank))
    os.makedirs(os.path.dirname(base), exist_ok=True)
    save_file(tensors, base + ".tmp")
    os.replace(base + ".tmp", base)
    leaves_path = os.path.join(rec.trace_dir, final_leaves_file(rec.rank))
    with open(leaves_path + ".tmp", "w") as f:
        json.dump(values, f, sort_keys=True, allow_nan=False)
    os.replace(leaves_path + ".tmp", leaves_path)
    rec.write(FinishRow(attempt=rec.attempt, rank=rec.rank, file=final_tensors_file(rec.rank), time=time.time()))


_WORKS_KEPT: list = []


def _guard_gloo_teardown() -> None:
    """Work around a torch (2.13) deadlock at the end of DDP + gloo jobs (seen about once in 50-100 runs).

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
