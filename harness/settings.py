"""The names and defaults of a trial's run settings, defined once for every part of the harness.

A leaf module (it imports nothing of the harness), so that the engine (``harness.engine.spec``), the
launchers, the repro files, certify and the built-in scenarios (which run inside the ranks and import
no engine) all read the same tuples.
"""

from __future__ import annotations

#: ``harness run --strategy``: how the built-in scenarios wrap the model (``$HARNESS_STRATEGY``).
STRATEGIES = ("ddp", "fsdp", "deepspeed-zero0", "deepspeed-zero1", "deepspeed-zero2", "deepspeed-zero3")
#: ``harness run --launcher``: pool (fork from a warm process), subprocess, torchrun.
LAUNCHERS = ("pool", "subprocess", "torchrun")
#: ``harness run --backend``: auto resolves to nccl with CUDA, else gloo.
BACKENDS = ("auto", "gloo", "nccl")
#: RNG streams that ``--accept-rng`` names (or all of them).
ACCEPTABLE_RNG = ("python", "numpy", "torch", "cuda", "all")
#: ``--timeout``: the limit of each launch, in seconds.
DEFAULT_TIMEOUT_S = 300.0

__all__ = ["STRATEGIES", "LAUNCHERS", "BACKENDS", "ACCEPTABLE_RNG", "DEFAULT_TIMEOUT_S"]
