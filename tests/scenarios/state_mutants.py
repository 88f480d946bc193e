"""Test-only: run a built-in scenario with one mutant of the reference checkpointer, in every rank.

    RESUME_HARNESS_MUTANT=scaler/save harness run state_mutants.py --kill 12 -- --scenario fp16 [scenario args]

Each mutant forgets one kind of state: on save (the checkpoint lacks it; where the load then silently
keeps the fresh object, as most do) or on load (saved, but not put back). They are applied by
monkeypatching `harness.checkpoint` inside the rank process before the scenario starts: the shipped
checkpointer has no switch for them. Only attempts of a trial are mutated (``HARNESS_ROLE=trial``):
the baseline is the scenario's own, and since neither the mutant nor this variable's value is part of
the baseline's cache key (it is not a ``HARNESS_`` variable), every mutant of one scenario shares one
baseline. tests/scenarios/test_state_coverage.py runs them; docs/state-coverage.md has the results.

The file is a script for the harness (it imports harness.checkpoint, so the harness records through the
probe, not auto mode) and a module for the tests (``MUTANTS``, plain data).
"""

from __future__ import annotations

import os
import runpy
import sys

ENV = "RESUME_HARNESS_MUTANT"

#: mutant -> (kind of state, what it does). "<kind>/save": dropped from the checkpoint; "<kind>/load": not restored.
MUTANTS: dict[str, tuple[str, str]] = {
    "model/save": ("model", "no model weights written (the load then has nothing to check or load)"),
    "model/load": ("model", "model weights not loaded"),
    "optimizer/save": ("optimizer", "no optimizer state written"),
    "optimizer/load": ("optimizer", "optimizer state not loaded"),
    "scheduler/save": ("scheduler", "no scheduler state written"),
    "scheduler/load": ("scheduler", "scheduler state not loaded"),
    "scaler/save": ("GradScaler", "no GradScaler state written (GitHub issue #17's surviving mutant)"),
    "scaler/load": ("GradScaler", "GradScaler state not loaded"),
    "rng.python/load": ("RNG: python", "python's `random` state not restored"),
    "rng.numpy/load": ("RNG: numpy", "numpy's global RandomState not restored"),
    "rng.torch/load": ("RNG: torch", "torch's CPU RNG not restored"),
    "rng.cuda/load": ("RNG: cuda", "the CUDA RNGs not restored (a CUDA host only)"),
    "data/save": ("data position", "each data loader saved at the start of its epoch (position 0)"),
    "data/load": ("data position", "the loader's position in its epoch not restored (epoch restored)"),
    "epoch/save": ("sampler epoch", "each data loader saved as in epoch 0 (position kept)"),
    "epoch/load": ("sampler epoch", "the loader's epoch not restored (position restored)"),
    "custom/save": ("custom objects", "no register_for_checkpointing objects written"),
    "custom/load": ("custom objects", "register_for_checkpointing objects not loaded"),
    "step/save": ("step", "step saved as 0"),
    "step/load": ("step", "`ckpt.step` not restored"),
}

#: Mutants that keep every kind of state but lose progress: the job resumes bit-exactly from an older step
#: (the final state matches), so only the resume point tells (outcome lost_progress, GitHub issue #17).
PROGRESS_MUTANTS: dict[str, str] = {
    "resume/oldest": "load_state() picks the oldest checkpoint kept instead of the newest",
    "rotation/newest": "total_limit rotation deletes the newest checkpoints (the one just committed among them) "
                       "instead of the oldest",
}


def apply(name: str) -> None:
    """Monkeypatch harness.checkpoint in this process with mutant `name`."""
    import random

    import numpy as np
    import torch

    from harness.checkpoint import data, manager, rng, state, strategy

    Registry, Replicated, Loader = state.Registry, strategy.ReplicatedStrategy, data.ResumableDataLoader

    def wrap(cls, attr, make):
        setattr(cls, attr, make(getattr(cls, attr)))

    if name == "model/save":
        wrap(Replicated, "model_weights", lambda f: lambda self, models: [])
    elif name == "model/load":
        wrap(Replicated, "load", lambda f: lambda self, path, saved, models, index, weights, *rest:
             f(self, path, saved, models, index, [], *rest))
    elif name == "optimizer/save":
        wrap(Replicated, "optimizer_states", lambda f: lambda self, optimizers, models, rank: [])
    elif name == "optimizer/load":
        wrap(Replicated, "load", lambda f: lambda self, path, saved, models, index, weights, optimizers, states, group:
             f(self, path, saved, models, index, weights, optimizers, [], group))
    elif name in ("scheduler/save", "custom/save", "step/save"):
        key = {"scheduler/save": "schedulers", "custom/save": "custom", "step/save": "step"}[name]
        empty = {"schedulers": [], "custom": {}, "step": 0}[key]
        wrap(Registry, "shared_state", lambda f: lambda self, *a, **k: {**f(self, *a, **k), key: empty})
    elif name == "scaler/save":
        wrap(Registry, "rank_state", lambda f: lambda self, *a, **k: {**f(self, *a, **k), "scalers": []})
    elif name in ("scheduler/load", "scaler/load", "custom/load"):
        attr = {"scheduler/load": "schedulers", "scaler/load": "scalers", "custom/load": "custom"}[name]

        def make(f):
            def apply_without(self, *a, **k):  # the loop over `attr` sees nothing registered
                kept = getattr(self, attr)
                setattr(self, attr, [])
                try:
                    return f(self, *a, **k)
                finally:
                    setattr(self, attr, kept)
            return apply_without
        wrap(Registry, "apply", make)
    elif name.startswith("rng."):
        get, put = {
            "rng.python/load": (random.getstate, random.setstate),
            "rng.numpy/load": (np.random.get_state, np.random.set_state),
            "rng.torch/load": (torch.get_rng_state, torch.set_rng_state),
            "rng.cuda/load": (torch.cuda.get_rng_state_all, torch.cuda.set_rng_state_all),
        }[name]

        def make(f):
            def restore_but_one(saved, generators):  # the stream keeps this fresh process's state
                before = get()
                f(saved, generators)
                put(before)
            return restore_but_one
        rng.restore = make(rng.restore)
    elif name in ("data/save", "epoch/save"):
        field, value = ("position", 0) if name == "data/save" else ("epoch", 0)

        def make(f):
            def state_dict(self):
                sd = f(self)
                if field == "position":
                    sd.pop("rng", None)  # the mid-epoch replay state belongs to the position
                return {**sd, field: value}
            return state_dict
        wrap(Loader, "state_dict", make)
    elif name in ("data/load", "epoch/load"):
        def make(f):
            def load_state_dict(self, sd):
                if name == "data/load":
                    sd = {k: v for k, v in sd.items() if k != "rng"} | {"position": self.position}
                else:
                    sd = {**sd, "epoch": self.epoch}
                return f(self, sd)
            return load_state_dict
        wrap(Loader, "load_state_dict", make)
    elif name == "resume/oldest":
        import builtins

        # load_state sorts the checkpoint numbers newest first (sorted(..., reverse=True)): flip that one order.
        manager.sorted = lambda it, *, key=None, reverse=False: builtins.sorted(it, key=key, reverse=not reverse) \
            if reverse else builtins.sorted(it, key=key)
    elif name == "rotation/newest":
        from harness.checkpoint import storage

        def rotate(checkpoints_dir, total_limit, keep):
            found = storage.auto_checkpoints(checkpoints_dir)  # newest first: the mutant deletes from that end
            doomed = [p for _, p in found][:max(0, len(found) - total_limit)]
            for path in doomed:
                storage.remove(path)
            return doomed
        storage.rotate = rotate
    elif name == "step/load":
        def make(f):
            def _apply(self, path, loaded):
                before = self.step
                f(self, path, loaded)
                self.step = before
            return _apply
        wrap(manager.Checkpointer, "_apply", make)
    else:
        raise SystemExit(f"{ENV}={name!r}: no such mutant; one of {', '.join([*MUTANTS, *PROGRESS_MUTANTS])}")


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--scenario":
        raise SystemExit("usage: state_mutants.py --scenario NAME [scenario arguments]")
    scenario, rest = args[1], args[2:]
    mutant = os.environ.get(ENV, "")
    if mutant and os.environ.get("HARNESS_ROLE") != "baseline":
        apply(mutant)
    sys.argv = [f"harness.scenarios.{scenario}", *rest]
    runpy.run_module(f"harness.scenarios.{scenario.replace('/', '.')}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
