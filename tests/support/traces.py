"""Synthetic traces for the oracle and report tests: rows and final files written by hand (design.md §2)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from harness.trace_schema import parse_row, rank_trace_file, row_to_json


def digest(*parts) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def loss_of(rank: int, step: int) -> np.float32:
    return np.float32(2.0 / step + 0.25 * rank)


def step_row(rank: int, step: int, attempt: int = 0) -> dict:
    loss = loss_of(rank, step)
    return {
        "kind": "step", "attempt": attempt, "rank": rank, "step": step,
        "loss": {"dtype": "float32", "hex": loss.tobytes().hex()}, "loss_value": float(loss),
        "batch": digest("batch", rank, step),
        "rng": {s: digest("rng", s, rank, step) for s in ("python", "numpy", "torch")} | {"cuda": None},
        "params": digest("params", rank, step),
        "params_tensors": {n: digest(n, rank, step) for n in ("fc.weight", "fc.bias")},
        "optimizer": digest("optimizer", rank, step),
        "extra": {"ema": digest("ema", rank, step), "lr": 0.01 / step},
    }


def final_tensors(rank: int) -> dict:
    import torch

    return {
        "model/fc.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.1 * (rank + 1),
        "model/fc.bias": torch.tensor([0.5, -1.25, 3.0], dtype=torch.bfloat16),
        "optimizer/state/0/exp_avg": torch.linspace(-1, 1, 6, dtype=torch.float32).reshape(2, 3),
        "optimizer/state/0/step": torch.tensor(10, dtype=torch.int64),
        "extra/ema/fc.weight": torch.arange(6, dtype=torch.float64).reshape(2, 3) / 3,
        "extra/mask": torch.tensor([True, False, True]),
    }


def final_leaves(rank: int) -> dict:
    return {"optimizer/param_groups/0/lr": 0.001, "extra/epoch": 1, "extra/name": f"rank{rank}"}


class TraceBuilder:
    """Rows per rank, appended in execution order, then written as rank{r}.jsonl + final/."""

    def __init__(self, path: Path, nproc: int = 2):
        self.path = Path(path)
        self.nproc = nproc
        self.rows: dict[int, list[dict]] = {r: [] for r in range(nproc)}
        self.finals: dict[int, tuple[dict, dict]] = {}

    def _ranks(self, ranks):
        return range(self.nproc) if ranks is None else ranks

    def start(self, attempt: int, ranks=None):
        for r in self._ranks(ranks):
            self.rows[r].append({"kind": "start", "attempt": attempt, "rank": r, "pid": 1000 + r,
                                 "world_size": self.nproc, "time": 0.0})
        return self

    def steps(self, attempt: int, first: int, last: int, ranks=None):
        for s in range(first, last + 1):
            for r in self._ranks(ranks):
                self.rows[r].append(step_row(r, s, attempt))
        return self

    def event(self, attempt: int, name: str, step: int, ranks=None, **info):
        for r in self._ranks(ranks):
            self.rows[r].append({"kind": "event", "attempt": attempt, "rank": r, "name": name, "step": step,
                                 "info": {"step": step, **info}})
        return self

    def fault(self, attempt: int, step: int, rank: int = 0, signal: str = "SIGKILL"):
        self.rows[rank].append({"kind": "fault", "attempt": attempt, "rank": rank, "step": step, "point": None,
                                "fault": {"at": {"step": step}, "rank": rank, "signal": signal}})
        return self

    def finish(self, attempt: int, ranks=None):
        for r in self._ranks(ranks):
            self.rows[r].append({"kind": "finish", "attempt": attempt, "rank": r,
                                 "file": f"final/rank{r}.safetensors"})
            self.finals[r] = (final_tensors(r), final_leaves(r))
        return self

    def row(self, rank: int, step: int, attempt: int) -> dict:
        """The step row to mutate in a test."""
        return next(x for x in self.rows[rank]
                    if x["kind"] == "step" and x["step"] == step and x["attempt"] == attempt)

    def write(self) -> Path:
        from safetensors.torch import save_file

        self.path.mkdir(parents=True, exist_ok=True)
        for r, rows in self.rows.items():
            # Through the schema, as the probe writes them: a row the schema refuses fails here.
            (self.path / rank_trace_file(r)).write_text(
                "".join(json.dumps(row_to_json(parse_row(x))) + "\n" for x in rows))
        if self.finals:
            (self.path / "final").mkdir(exist_ok=True)
        for r, (tensors, leaves) in self.finals.items():
            save_file(tensors, str(self.path / "final" / f"rank{r}.safetensors"))
            (self.path / "final" / f"rank{r}.json").write_text(json.dumps(leaves))
        return self.path


def baseline(path: Path, nproc: int = 2, steps: int = 10) -> TraceBuilder:
    b = TraceBuilder(path, nproc).start(0)
    for s in range(1, steps + 1):
        b.steps(0, s, s)
        if s % 5 == 0:
            b.event(0, "checkpoint.committed", s, path=f"checkpoints/checkpoint_{s}")
    return b.finish(0)


def resumed(path: Path, nproc: int = 2, steps: int = 10, kill: int = 7, ckpt: int = 5) -> TraceBuilder:
    """Attempt 0 runs 1..kill (checkpoint at ckpt), SIGKILL on rank 0; attempt 1 loads ckpt and runs to the end."""
    b = TraceBuilder(path, nproc).start(0)
    for s in range(1, kill + 1):
        b.steps(0, s, s)
        if s == ckpt:
            b.event(0, "checkpoint.committed", s, path=f"checkpoints/checkpoint_{s}")
    b.fault(0, kill)
    b.start(1).event(1, "checkpoint.loaded", ckpt, path=f"checkpoints/checkpoint_{ckpt}")
    for s in range(ckpt + 1, steps + 1):
        b.steps(1, s, s)
        if s % 5 == 0 and s > ckpt:
            b.event(1, "checkpoint.committed", s, path=f"checkpoints/checkpoint_{s}")
    return b.finish(1)
