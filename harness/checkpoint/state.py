"""What each kind of registered object contributes to a checkpoint, and how it is put back.

The checkpointer keeps one `Registry` of models, optimizers, schedulers, data loaders, scalers,
custom objects and generators. `snapshot()` turns them into JSON trees and flat tensor dicts
(one for the files rank 0 writes, one per rank); `validate()` checks a loaded checkpoint against
what is registered before anything is changed; `apply()` loads it.

Replicated state (DDP: the same on every rank) is written once, by rank 0: model weights,
optimizer state, schedulers, custom objects. Per-rank state is written by each rank: RNG, data
position, GradScaler, custom objects registered with `per_rank=True`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from harness.tensors import unwrap_model

from . import rng, tree
from .data import ResumableDataLoader, check_loader_state, wrap_loader
from .errors import IncompatibleCheckpointError, RegistrationError


def _is_scheduler(obj) -> bool:
    return isinstance(obj, torch.optim.lr_scheduler.LRScheduler) or (
        hasattr(obj, "optimizer") and hasattr(obj, "step") and hasattr(obj, "state_dict") and hasattr(obj, "get_last_lr"))


def _is_scaler(obj) -> bool:
    return isinstance(obj, torch.amp.GradScaler) or type(obj).__name__ in ("GradScaler", "ShardedGradScaler")


@dataclass
class Registry:
    models: list = field(default_factory=list)
    optimizers: list = field(default_factory=list)
    schedulers: list = field(default_factory=list)
    dataloaders: list = field(default_factory=list)
    scalers: list = field(default_factory=list)
    custom: list = field(default_factory=list)  # (obj, per_rank)
    generators: list = field(default_factory=list)

    def add(self, obj, *, prepare: bool, per_rank: bool = False):
        """Register `obj` by kind; returns it, wrapped when it is a DataLoader being prepared."""
        return self.add_all([obj], prepare=prepare, per_rank=per_rank)[0]

    def add_all(self, objs, *, prepare: bool, per_rank: bool = False) -> list:
        """Register every object, or none: each is checked first, and a ValueError names every bad one by index.

        `prepare=True` (Checkpointer.prepare) registers what it manages and passes anything else through
        unregistered, as Accelerate's prepare does; `prepare=False` (register_for_checkpointing) refuses it.
        """
        plan, bad = [], []
        for index, obj in enumerate(objs):
            try:
                plan.append(self._classify(obj, prepare=prepare))
            except (TypeError, ValueError) as e:
                bad.append(f"\n\t- Item at index {index}, `{_pretty_name(obj)}`: {e}")
        if bad:
            what = "prepare" if prepare else "register_for_checkpointing"
            raise RegistrationError(f"{what}: nothing was registered; the following inputs are invalid "
                             "(each must be a model, optimizer, scheduler, DataLoader, GradScaler, generator, or have "
                             "`state_dict` and `load_state_dict`):" + "".join(bad))
        for kind, obj in plan:
            if kind == "custom":
                self.custom.append((obj, per_rank))
            elif kind is not None:
                getattr(self, kind).append(obj)
        return [obj for _, obj in plan]

    def _classify(self, obj, *, prepare: bool) -> tuple[str | None, object]:
        """(the list `obj` goes to, or None to pass it through; the object to register). Registers nothing."""
        if isinstance(obj, torch.nn.Module):
            return "models", obj
        if isinstance(obj, torch.optim.Optimizer):
            return "optimizers", obj
        if _is_scheduler(obj):
            return "schedulers", obj
        if _is_scaler(obj):
            return "scalers", obj
        if isinstance(obj, ResumableDataLoader):
            return "dataloaders", obj
        if isinstance(obj, torch.utils.data.DataLoader):
            if not prepare and not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError("register a DataLoader with prepare(), which wraps it to track its position")
            return "dataloaders", wrap_loader(obj)
        if prepare:  # Accelerate's prepare returns what it does not manage unchanged, and does not track it
            return None, obj
        if isinstance(obj, rng.GENERATOR_TYPES):
            return "generators", obj
        if hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
            return "custom", obj
        if isinstance(obj, torch.utils.data.Sampler):
            raise TypeError(f"cannot checkpoint a bare {type(obj).__name__}: pass the DataLoader that uses it to prepare()")
        raise TypeError(
            f"cannot checkpoint a {type(obj).__module__}.{type(obj).__qualname__}: it has no state_dict()/load_state_dict()")

    def counts(self) -> dict:
        return {"models": len(self.models), "optimizers": len(self.optimizers), "schedulers": len(self.schedulers),
                "dataloaders": len(self.dataloaders), "scalers": len(self.scalers),
                "custom": len(self.custom), "per_rank_custom": [i for i, (_, pr) in enumerate(self.custom) if pr],
                "generators": len(self.generators)}

    # -- save ---------------------------------------------------------------------------------

    def model_weights(self) -> list[dict]:
        return [unwrap_model(m).state_dict() for m in self.models]

    def shared_state(self, step: int, iteration: int | None, tensors: dict) -> dict:
        """Replicated state other than model weights: schedulers and replicated custom objects."""
        return {
            "step": step,
            "iteration": iteration,
            "counts": self.counts(),
            "schedulers": [tree.encode(s.state_dict(), f"schedulers/{i}", tensors) for i, s in enumerate(self.schedulers)],
            "custom": {str(i): tree.encode(o.state_dict(), f"custom/{i}", tensors)
                       for i, (o, per_rank) in enumerate(self.custom) if not per_rank},
        }

    def rank_state(self, step: int, tensors: dict) -> dict:
        return {
            "step": step,
            "rng": rng.capture(self.generators, tensors),
            "dataloaders": [tree.encode(d.state_dict(), f"dataloaders/{i}", tensors) for i, d in enumerate(self.dataloaders)],
            "scalers": [tree.encode(s.state_dict(), f"scalers/{i}", tensors) for i, s in enumerate(self.scalers)],
            "custom": {str(i): tree.encode(o.state_dict(), f"custom/{i}", tensors)
                       for i, (o, per_rank) in enumerate(self.custom) if per_rank},
        }

    # -- load ---------------------------------------------------------------------------------

    def validate(self, shared: dict, per_rank: dict, tensors: dict, weights: list[dict], optimizers: list[dict],
                 rng_state: dict, rank: int, strict_rng: bool) -> None:
        """Raise IncompatibleCheckpointError if the checkpoint does not fit what is registered."""
        saved, now = shared["counts"], self.counts()
        for kind in ("models", "optimizers", "schedulers", "dataloaders", "scalers", "custom", "per_rank_custom", "generators"):
            if kind == "dataloaders" and saved.get(kind) is None:  # unknown: converted from Accelerate
                continue
            if saved.get(kind) != now[kind]:
                raise IncompatibleCheckpointError(
                    f"rank {rank}: the checkpoint holds {kind}={saved.get(kind)} but {now[kind]} are registered now; "
                    "register the same objects, in the same order, as when it was saved")
        if len(weights) == len(self.models):  # else save hooks took some weights; load hooks handle them
            for i, (model, saved_sd) in enumerate(zip(self.models, weights)):
                _check_model(i, unwrap_model(model).state_dict(), saved_sd, rank)
        for i, (opt, saved_sd) in enumerate(zip(self.optimizers, optimizers)):
            groups = saved_sd.get("param_groups", [])
            now_sizes = [len(g["params"]) for g in opt.param_groups]
            saved_sizes = [len(g["params"]) for g in groups]
            if now_sizes != saved_sizes:
                raise IncompatibleCheckpointError(
                    f"rank {rank}: optimizer {i} has param groups of sizes {now_sizes}, the checkpoint {saved_sizes}")
        for i, (d, doc) in enumerate(zip(self.dataloaders, per_rank["dataloaders"] or [])):
            try:
                check_loader_state(d, tree.decode(doc, tensors))
            except ValueError as e:
                raise IncompatibleCheckpointError(f"rank {rank}: data loader {i}: {e}") from None
        rng.check(rng_state, self.generators, rank, strict=strict_rng)

    def apply(self, models: list, weights: list[dict], optimizers: list[dict], shared: dict, per_rank: dict,
              tensors: dict, rng_state: dict, rank: int) -> None:
        """Load everything. `models` is the (possibly hook-filtered) list of models to load weights into."""
        for model, sd in zip(models, weights):
            unwrap_model(model).load_state_dict(sd, strict=True)
        for opt, sd in zip(self.optimizers, optimizers):
            _load_optimizer(opt, sd)
        for s, doc in zip(self.schedulers, shared["schedulers"]):
            s.load_state_dict(tree.decode(doc, tensors))
        for s, doc in zip(self.scalers, per_rank["scalers"]):
            s.load_state_dict(tree.decode(doc, tensors))
        if per_rank["dataloaders"] is None and self.dataloaders:
            warnings.warn(f"rank {rank}: the checkpoint has no data position (converted from a format that does not "
                          "save it); the data loaders keep their current position", stacklevel=4)
        for d, doc in zip(self.dataloaders, per_rank["dataloaders"] or []):
            d.load_state_dict(tree.decode(doc, tensors))
        for i, (obj, pr) in enumerate(self.custom):
            obj.load_state_dict(tree.decode((per_rank if pr else shared)["custom"][str(i)], tensors))
        rng.restore(rng_state, self.generators)  # last: nothing above may draw from the restored streams


def _pretty_name(obj) -> str:
    """Accelerate's `get_pretty_name`: a class or function's qualified name, else the name of its type."""
    if not hasattr(obj, "__qualname__") and not hasattr(obj, "__name__"):
        obj = getattr(obj, "__class__", obj)
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or str(obj)


def _check_model(i: int, now: dict, saved: dict, rank: int) -> None:
    missing = [k for k in now if k not in saved]
    unexpected = [k for k in saved if k not in now]
    mismatched = [f"{k}: checkpoint {tuple(saved[k].shape)} {saved[k].dtype}, model {tuple(v.shape)} {v.dtype}"
                  for k, v in now.items() if k in saved and isinstance(v, torch.Tensor)
                  and (tuple(v.shape) != tuple(saved[k].shape) or v.dtype != saved[k].dtype)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if mismatched:
            parts.append(f"shape/dtype mismatches {_few(mismatched)}")
        raise IncompatibleCheckpointError(
            f"rank {rank}: model {i} does not match the checkpoint (different architecture?): " + "; ".join(parts))


def _few(items: list, n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)})"


def _load_optimizer(opt: torch.optim.Optimizer, sd: dict) -> None:
    """`load_state_dict`, then undo its cast of saved state to the parameter dtype (bit-exactness)."""
    opt.load_state_dict(sd)
    params = {pid: p for sg, g in zip(sd["param_groups"], opt.param_groups) for pid, p in zip(sg["params"], g["params"])}
    for pid, saved in sd["state"].items():
        loaded = opt.state[params[pid]]
        for k, v in saved.items():
            if isinstance(v, torch.Tensor) and loaded[k].dtype != v.dtype:
                loaded[k] = v.to(loaded[k].device, copy=True)
