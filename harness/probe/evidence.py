"""Evidence that every script leaves, recorded beside each step row for the diagnosis (never compared).

Installed in each rank before the script runs (``harness.launch.rank.run_target``), in probe mode and
in auto mode alike, so the oracle's diagnosis rules read the same facts whatever the script records:

- ``backward``: how many ``torch.autograd.backward`` calls (``loss.backward()``) the step made, since
  the previous step row. Gradient accumulation shows here: a resumed step that runs 3 backward calls
  where the baseline ran 4 lost the accumulation position.
- ``fetched``: the digests of the batches that the step's backward calls consumed, in order (for each backward,
  the last batch a ``torch.utils.data.DataLoader`` iterator yielded before it, if a fresh one), as
  the loader gave them (before any augmentation the script applies). A resumed
  step that fetched another step's batches replayed the data order; one that fetched the same batches
  while its recorded ``batch`` differs drew its augmentation from another RNG state.
- ``samples``: for the same batches, a digest of the sampler's indices (``_BaseDataLoaderIter._next_index``,
  in yield order): the data order itself, whatever augmentation the dataset or the loader applies. A
  resumed step with another step's indices replayed the order; with the same indices but another
  ``batch``, the augmentation drew from another RNG state.
- ``hyper``: the hyperparameters of each param group (``lr``, ``betas``, ...) of the optimizers
  stepped since the previous row, as exact JSON leaves: a schedule not restored shows here even when
  the script passes no optimizer to ``probe.step``.

The hooks count only in the rank's main thread and process (not in DataLoader workers, nor on a
checkpoint thread); they cost one counter per backward call and one digest per fetched batch.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref


class Evidence:
    def __init__(self):
        self.thread = threading.get_ident()
        self.pid = os.getpid()
        self.backward = 0
        self.fetched: list[str] = []
        self.samples: list[str] = []
        self.last_indices = None
        self.last_batch = None
        self.batch_fresh = False
        self.stepped: list = []  # weakrefs of the optimizers stepped since the last row, in order
        self.quiet = 0  # > 0 inside the harness's own work (digests, state_dict calls)

    def _main(self) -> bool:
        return not self.quiet and threading.get_ident() == self.thread and os.getpid() == self.pid

    def on_backward(self) -> None:
        if not self._main():
            return
        self.backward += 1
        if self.batch_fresh:  # the batch this backward consumed; batches skipped without one are not part of a step
            from harness.probe import digest as _digest

            data, indices, self.batch_fresh = self.last_batch, self.last_indices, False
            self.last_batch = self.last_indices = None
            try:
                self.fetched.append(_digest.digest(data))
            except Exception as e:  # evidence only: an undigestable batch is named, never an error
                self.fetched.append(f"undigestable {type(data).__qualname__}: {e}")
            if indices is not None:
                try:
                    self.samples.append(_digest.digest(indices))
                except Exception as e:
                    self.samples.append(f"undigestable indices: {type(e).__name__}")

    def on_batch(self, data, indices=None) -> None:
        if self._main():
            self.last_indices = indices
            # A loader inside a wrapper (the checkpointer's resumable iterable loader) may yield an envelope
            # around the user's batch; its class names the batch with a __harness_batch__ property.
            inner = isinstance(getattr(type(data), "__harness_batch__", None), property)
            self.last_batch, self.batch_fresh = (data.__harness_batch__ if inner else data), True

    def take(self) -> dict:
        """The evidence since the previous row (``backward``, ``fetched``, ``hyper``), then reset."""
        out = {"backward": self.backward, "fetched": None, "samples": None, "hyper": None}
        if self.fetched:
            out["fetched"] = list(self.fetched)  # per micro-batch: a cut accumulation window shows as a shifted list
        if self.samples and len(self.samples) == len(self.fetched):
            out["samples"] = list(self.samples)
        opts = [o for o in (r() for r in self.stepped) if o is not None]
        if opts:
            out["hyper"] = [hyperparameters(o) for o in opts]
        self.backward, self.fetched, self.samples, self.stepped = 0, [], [], []
        return out


def hyperparameters(opt) -> list[dict]:
    """Per param group, its hyperparameters (everything but ``params``) as exact JSON leaves."""
    from harness.probe import digest as _digest
    from harness.probe import state_digest as _state

    out = []
    for group in getattr(opt, "param_groups", None) or []:
        rest = {k: v for k, v in group.items() if k != "params"}
        try:
            out.append({path: _state.json_hyper(leaf) for path, leaf in _digest.leaves(rest)})
        except Exception:
            out.append({})
    return out


_installed: Evidence | None = None


def installed() -> Evidence | None:
    ev = _installed
    return ev if ev is not None and ev.pid == os.getpid() else None


def take() -> dict:
    """The evidence since the previous step row; empty fields when not installed."""
    ev = installed()
    return ev.take() if ev is not None else {"backward": None, "fetched": None, "samples": None, "hyper": None}


def install() -> Evidence:
    """Wrap ``torch.autograd.backward`` and ``DataLoader`` iteration, hook every optimizer step (idempotent)."""
    global _installed
    if _installed is not None:
        return _installed
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.utils.data import dataloader

    from harness import private_apis

    private_apis.require("torch.dataloader")  # before any hook: _BaseDataLoaderIter.__next__ is wrapped below
    ev = _installed = Evidence()
    wrapper_base = torch.optim.Optimizer

    def on_step(opt, args, kwargs):
        # A wrapper that is itself an Optimizer around another (Accelerate's) is not a second step.
        if isinstance(getattr(opt, "optimizer", None), wrapper_base):
            return
        if ev._main() and all(r() is not opt for r in ev.stepped):
            ev.stepped.append(weakref.ref(opt))

    register_optimizer_step_post_hook(on_step)

    orig_backward = torch.autograd.backward

    @functools.wraps(orig_backward)
    def backward(*args, **kwargs):
        ev.on_backward()
        return orig_backward(*args, **kwargs)

    torch.autograd.backward = backward

    iter_cls = dataloader._BaseDataLoaderIter  # private: every DataLoader iterator's __next__
    orig_next = iter_cls.__next__
    orig_next_index = iter_cls._next_index
    import collections

    @functools.wraps(orig_next_index)
    def _next_index(self):
        # Indices are drawn ahead with workers (prefetch); batches are yielded in the same order.
        out = orig_next_index(self)
        queue = self.__dict__.get("_harness_indices")
        if queue is None:
            queue = self.__dict__["_harness_indices"] = collections.deque(maxlen=4096)
        queue.append(out)
        return out

    @functools.wraps(orig_next)
    def __next__(self):
        data = orig_next(self)
        queue = self.__dict__.get("_harness_indices")
        ev.on_batch(data, queue.popleft() if queue else None)
        return data

    iter_cls._next_index = _next_index
    iter_cls.__next__ = __next__
    return ev
