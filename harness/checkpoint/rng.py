"""Per-rank RNG state: python `random`, numpy's global RandomState, torch CPU, every CUDA device,
and registered generators (`torch.Generator`, `numpy.random.Generator`, `random.Random`).

A stream that cannot be restored is an error naming the rank and the stream, never an info-level
log line: a silently unrestored RNG is exactly the bug this project exists to catch. Pass
`strict=False` to downgrade a device mismatch (a CUDA checkpoint resumed on CPU) to a warning.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch

from . import tree
from .errors import IncompatibleCheckpointError

GENERATOR_TYPES = (torch.Generator, np.random.Generator, random.Random)


def capture(generators: list, tensors: dict[str, torch.Tensor], prefix: str = "rng") -> dict:
    """Return the JSON tree of every RNG stream of this process; tensors go into `tensors`."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=True),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generators": [_generator_state(g) for g in generators],
    }
    return tree.encode(state, prefix, tensors)


def _generator_state(g) -> dict:
    if isinstance(g, torch.Generator):
        return {"kind": "torch", "device": str(g.device), "state": g.get_state()}
    if isinstance(g, np.random.Generator):
        return {"kind": "numpy", "state": g.bit_generator.state}
    return {"kind": "python", "state": g.getstate()}


def _cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check(state: dict, generators: list, rank: int, strict: bool = True) -> None:
    """Raise IncompatibleCheckpointError if a decoded `capture` tree cannot be restored in this process.

    Called while the checkpoint is validated, before anything is changed and before the ranks agree.
    """
    saved_gens = state["generators"]
    if len(saved_gens) != len(generators):
        raise IncompatibleCheckpointError(
            f"rank {rank}: the checkpoint has {len(saved_gens)} registered generator(s), "
            f"{len(generators)} are registered now; register the same generators in the same order")
    for i, (g, saved) in enumerate(zip(generators, saved_gens)):
        kind = _generator_state(g)["kind"]
        if saved["kind"] != kind:
            raise IncompatibleCheckpointError(
                f"rank {rank}: registered generator {i} is a {kind} generator, the checkpoint has a {saved['kind']} one")
    cuda, devices = state["cuda"], _cuda_devices()
    if (cuda is not None and len(cuda) != devices) or (cuda is None and devices):
        saved = "no CUDA RNG state" if cuda is None else f"CUDA RNG state for {len(cuda)} device(s)"
        msg = (f"rank {rank}: the checkpoint has {saved} but this process sees {devices} CUDA device(s); "
               "the resumed run cannot be bit-exact")
        if strict:
            raise IncompatibleCheckpointError(msg + " (pass strict_rng=False to load anyway)")
        warnings.warn(msg, stacklevel=5)  # check < Registry.validate < Checkpointer._read < load_state < caller


def restore(state: dict, generators: list) -> None:
    """Set every RNG stream from a decoded `capture` tree that `check` accepted."""
    cuda = state["cuda"]
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].clone())
    if cuda is not None and len(cuda) == _cuda_devices():
        torch.cuda.set_rng_state_all([t.clone() for t in cuda])
    for g, saved in zip(generators, state["generators"]):
        if isinstance(g, torch.Generator):
            g.set_state(saved["state"].clone())
        elif isinstance(g, np.random.Generator):
            g.bit_generator.state = saved["state"]
        else:
            g.setstate(saved["state"])
