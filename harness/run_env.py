"""The ``HARNESS_*`` environment: how the harness tells a rank what it runs, and the one home of the names.

The engine writes it (`RankEnv.to_env`) into each launch's environment; the ranks read it
(`RankEnv.read`): the probe, auto mode, the rank entry point and the built-in scenarios. A process the
harness did not start has none of it set, and every reader then behaves as outside the harness.

    HARNESS_TRACE_DIR       where the ranks write their trace; unset: not under the harness
    HARNESS_RUN_DIR         the run folder (checkpoints, exported files); ``probe.run_dir()``
    HARNESS_ATTEMPT         0 for the first attempt (or a baseline run), a for the attempt after fault a
    HARNESS_FAULT           the fault armed in this attempt, as `Fault.to_json` (empty: none)
    HARNESS_BACKEND         the resolved process-group backend (gloo, nccl)
    HARNESS_ROLE            ``baseline`` or ``trial`` (auto mode records the baseline index only in a baseline)
    HARNESS_STRATEGY        how the built-in scenarios wrap the model (``harness run --strategy``)
    HARNESS_AUTO            ``1``: record with auto mode (harness.probe.auto)
    HARNESS_BASELINE_INDEX  the baseline's per-step digests, for auto mode's resume inference
    HARNESS_LAUNCH_ID       the launch every process of it carries, so that its leftovers can be found and reaped
    HARNESS_CACHE_DIR       the baseline cache (read by the harness itself, never by the ranks)
    HARNESS_POOL_STORE      the pool launcher's default store (``per-launch``: a benchmark's comparison)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

TRACE_DIR = "HARNESS_TRACE_DIR"
RUN_DIR = "HARNESS_RUN_DIR"
ATTEMPT = "HARNESS_ATTEMPT"
FAULT = "HARNESS_FAULT"
BACKEND = "HARNESS_BACKEND"
ROLE = "HARNESS_ROLE"
STRATEGY = "HARNESS_STRATEGY"
AUTO = "HARNESS_AUTO"
BASELINE_INDEX = "HARNESS_BASELINE_INDEX"
LAUNCH_ID = "HARNESS_LAUNCH_ID"
CACHE_DIR = "HARNESS_CACHE_DIR"
POOL_STORE = "HARNESS_POOL_STORE"

#: Every name above: the per-launch ones never enter a baseline's cache key.
NAMES = (TRACE_DIR, RUN_DIR, ATTEMPT, FAULT, BACKEND, ROLE, STRATEGY, AUTO, BASELINE_INDEX, LAUNCH_ID, CACHE_DIR,
         POOL_STORE)
PER_LAUNCH = frozenset({TRACE_DIR, RUN_DIR, CACHE_DIR, ATTEMPT, FAULT, ROLE, BACKEND, LAUNCH_ID})


@dataclass(frozen=True)
class RankEnv:
    """What a rank is told through its environment (see the module docstring for each name)."""

    trace_dir: str | None = None
    run_dir: str | None = None
    attempt: int = 0
    fault_json: str = ""
    backend: str | None = None
    role: str = ""
    strategy: str | None = None
    auto: bool = False
    baseline_index: str | None = None

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> RankEnv:
        env = os.environ if environ is None else environ
        try:
            attempt = int(env.get(ATTEMPT) or "0")
        except ValueError:
            raise ValueError(f"${ATTEMPT} must be an integer, got {env.get(ATTEMPT)!r}") from None
        return cls(trace_dir=env.get(TRACE_DIR) or None, run_dir=env.get(RUN_DIR) or None, attempt=attempt,
                   fault_json=env.get(FAULT) or "", backend=env.get(BACKEND) or None, role=env.get(ROLE) or "",
                   strategy=env.get(STRATEGY) or None, auto=env.get(AUTO) == "1",
                   baseline_index=env.get(BASELINE_INDEX) or None)

    @property
    def under_harness(self) -> bool:
        return bool(self.trace_dir)

    def to_env(self) -> dict[str, str]:
        """The variables to set for a launch (names left out are unset)."""
        env = {TRACE_DIR: self.trace_dir or "", RUN_DIR: self.run_dir or "", ATTEMPT: str(self.attempt),
               FAULT: self.fault_json, BACKEND: self.backend or "", ROLE: self.role}
        if self.strategy is not None:
            env[STRATEGY] = self.strategy
        if self.auto:
            env[AUTO] = "1"
            if self.baseline_index:
                env[BASELINE_INDEX] = self.baseline_index
        return env


__all__ = ["ATTEMPT", "AUTO", "BACKEND", "BASELINE_INDEX", "CACHE_DIR", "FAULT", "LAUNCH_ID", "NAMES", "PER_LAUNCH", "POOL_STORE",
           "ROLE", "RUN_DIR", "RankEnv", "STRATEGY", "TRACE_DIR"]
