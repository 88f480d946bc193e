"""Auto mode: record the trace of a training script that never calls the probe.

Installed inside each rank before the script runs (``harness.launch.rank.run_target`` calls
``install()`` when ``HARNESS_AUTO=1``; every launcher runs ranks through it), with public PyTorch
hooks and a few wrapped functions. The trace rows are those of ``probe.step`` / ``probe.finish``, so
the oracle judges auto and instrumented runs by the same rules.

What is recorded, and from where
--------------------------------
- **Training steps**: torch's global optimizer step hooks (``register_optimizer_step_pre_hook`` /
  ``register_optimizer_step_post_hook``), which fire for every ``torch.optim.Optimizer`` and so
  under DDP, FSDP2 (plain optimizers over DTensors), Accelerate's ``AcceleratedOptimizer`` (only the
  optimizer it wraps steps; it skips the step while accumulating) and DeepSpeed's engine (its ZeRO
  optimizer steps a torch optimizer over flat partitions). A wrapper that is itself an Optimizer
  holding another in ``.optimizer`` is ignored, so a step is never counted twice.
  **One training step** = the optimizer steps that follow each other with no *boundary* between
  them, where a boundary is a ``backward`` call, a DataLoader batch fetch, a save call the harness
  sees, a ``probe.point`` (the reference checkpointer's), ``destroy_process_group``, the end of the
  script, or an optimizer stepping a second time. So ``opt_a.step(); opt_b.step()`` is one step;
  a GAN's ``d_loss.backward(); opt_d.step(); g_loss.backward(); opt_g.step()`` is two. The order of
  the optimizers within a step must not vary (``A`` always before ``B``): a varying order is refused.
  The step's row is written at the next boundary (the parameters cannot change before it), and a
  ``--kill N`` fault fires there, after row N is written: before the save of step N when the script
  saves through a call the harness sees, as with ``probe.step``.
- **Parameters**: the parameters of the optimizers stepped in the step, named through the modules
  that own them (root modules found by a global forward pre-hook, unwrapped from DDP /
  ``torch.compile``; ``root{k}/`` prefixes when several roots own parameters), else
  ``opt{k}.param{i}``; plus those roots' buffers, named ``"<name> (buffer)"``. Under DeepSpeed ZeRO
  1/2 the torch optimizer steps the rank's flat fp32 partitions, which no module owns: they are
  ``opt0.param{i}`` (per step, in the resume inference and in the final state), the state that
  ``engine.load_checkpoint`` restores.
- **Optimizer state**: ``optimizer_record`` of each stepped optimizer (merged when several).
- **Loss**: the tensor(s) given to ``torch.autograd.backward`` (``loss.backward()`` calls it), in
  call order: with several backward calls per step (gradient accumulation) their raw bytes are
  concatenated (``dtype`` of the first, or the dtypes joined by ``+`` when they differ).
  ``torch.autograd.grad`` is not seen.
- **Batch**: for each backward call, the last batch a ``torch.utils.data.DataLoader`` iterator
  yielded before it, if one was fetched since the previous backward: the ``fetched`` evidence of
  ``harness.probe.evidence`` (installed first), whose digests the row's ``batch`` is made of; batches
  skipped without a backward (a resumed loop fast-forwarding) are not part of any step. Batches from
  other iterables are not seen.
- **RNG**: the same four streams as ``probe.step``, when the row is written.
- **Final state**: after the script returns normally (exit code 0), the model state of the roots
  and the state dict of every optimizer that stepped, in the format of ``probe.finish``; plus the
  state dict of every ``torch.optim.swa_utils.AveragedModel`` made in the process (``averaged/{k}``,
  ``n_averaged`` included). Modules with parameters that no optimizer steps and that none of these
  holds (a hand-made EMA: ``copy.deepcopy(model)`` updated under ``no_grad``) are not recorded; an
  ``auto.unseen`` event names them (``info.modules``), found by scanning the live modules at the first
  step, at ``destroy_process_group`` and at the end.
- **Fault points**: ``torch.save``, ``safetensors.save_file``, ``dcp.save`` and
  ``deepspeed.save_checkpoint`` (each before the call; ``--kill torch.save:2``), and
  ``checkpoint.committed`` after each of them returned (``info.via`` names the call). The reference
  checkpointer's own points stay.

Step numbers across a resume
----------------------------
A resumed process does not say where it resumed. At the pre-hook of each optimizer in the first
training step of a process, the digests of its parameters and its state are taken: the state the
script restored (or initialised). The engine gives the trial's ranks the baseline's per-step
digests (``HARNESS_BASELINE_INDEX``: per rank, the initial state as step 0 and each step's parameter
and optimizer-state digests). The step whose parameters are all equal is the resume step ``s``, and
the first step of the process is ``s + 1``; ``s >= 1`` records a ``checkpoint.loaded`` event
(``info.via = "auto"``), so the report shows the resume as for the reference checkpointer.

- No step matches: the job resumed into a state the uninterrupted run never had. The rank records
  ``auto.unknown_state`` (closest step by the number of equal tensors) and stops; the verdict is
  ``unknown_resume_state`` (fail).
- Several steps match (a learning rate of 0, a frozen model, a step skipped by GradScaler): the
  optimizer state breaks the tie (Adam's step count differs at each step); if still tied, the harness
  takes the latest candidate not beyond the last step the earlier attempts reached (a resume loads
  the newest checkpoint) and records ``auto.ambiguous_resume`` (a warning in the report).
- A resume step beyond the last step this trial has reached (attempt 0 restoring anything but the
  initial state), or a baseline run that restores optimizer state: the script loaded a checkpoint
  written by another run. Refused (``auto.error``). Optimizer state means per-parameter state (Adam's
  moments, SGD's momentum): loading a state dict without any (Accelerate's ``prepare`` reloads a fresh
  optimizer's own state; plain SGD has none) is not taken as a restore by this check.

Bad input is reported with an ``auto.error`` event (its message becomes the verdict's) and an
``AutoModeError`` raised into the script.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import threading
import time

from harness import run_env
from harness.probe import digest as _digest
from harness.probe import state_digest as _state
from harness.probe import evidence as _evidence
from harness.probe.recorder import get as _get
from harness.tensors import tensor_bytes, unwrap_model
from harness.trace_schema import EventRow, Point, StepRow

BUFFER_SUFFIX = " (buffer)"
INDEX_ENV = run_env.BASELINE_INDEX
SIDE_DIR = "auto"  # trace/auto/rank{r}.json: the initial state of a baseline rank (step 0 of the index)

#: What auto mode does not record that the probe would (listed in ``compared["not_recorded"]``).
NOT_RECORDED = (  # the same list as harness.engine.auto_mode.AUTO_NOT_RECORDED (a test checks)
    "extra values (probe.step(**extra): an EMA, counters, a scheduler's own state)",
    "parameters no optimizer steps (frozen ones), per step; they are in the final state",
    "final state outside the model, the optimizers and torch.optim.swa_utils.AveragedModel instances "
    "(schedulers, custom objects; a module no optimizer steps, such as a hand-made EMA, is named by the event "
    "auto.unseen)",
)


class AutoModeError(RuntimeError):
    """Auto mode cannot record this script (see the message); also recorded as an ``auto.error`` event."""


class AutoRecorder:
    def __init__(self, rec):
        import torch

        self.torch = torch
        self.rec = rec
        self.thread = threading.get_ident()
        self.role = os.environ.get(run_env.ROLE, "")
        self.pending: list = []  # optimizers stepped since the last boundary, in order
        self.losses: list = []  # tensors given to backward in the current step
        self.opt_index: dict[int, int] = {}  # id(optimizer) -> index in first-step order
        self.opts: list = []
        self.order: set[tuple[int, int]] = set()
        self.roots: list = []  # modules called at the top level, in first-call order
        self._depth = 0
        self._fwd_handles: list = []
        self._names: dict[int, list] = {}  # optimizer index -> [(name, param)]
        self._buffers: dict[int, list] = {}
        self.step: int | None = None  # the last step written; None before the first of this process
        self.first_pre: dict[int, dict] = {}  # optimizer index -> {"params", "state"} before its first step
        self.restored: list[str] = []  # load_state_dict calls before the first step
        self.restored_optimizer = False
        self.restored_objects: list = []  # modules and optimizers restored before the first step
        self.last_load: str | None = None
        self._busy = False
        self._state_dict_api = 0  # depth inside torch.distributed.checkpoint.state_dict's functions

    # -- hooks -------------------------------------------------------------------------------------
    def _main(self) -> bool:
        """The rank's main thread (not a DataLoader worker forked from it, nor a checkpoint thread), outside our own work."""
        return threading.get_ident() == self.thread and not self._busy and os.getpid() == self.rec.pid

    def _is_wrapper(self, opt) -> bool:
        return isinstance(getattr(opt, "optimizer", None), self.torch.optim.Optimizer)

    def opt_pre(self, opt, args, kwargs):
        if not self._main() or self._is_wrapper(opt) or self._state_dict_api:
            return
        if any(o is opt for o in self.pending):
            self.boundary()
        k = self._index(opt)
        if self.step is None and k not in self.first_pre:
            self._busy = True
            try:
                params = self._params_digests(k)
                state = _state.optimizer_record(opt, _state.NamedParams(self._names[k]))["state"]
            finally:
                self._busy = False
            self.first_pre[k] = {"params": params, "state": state}

    def opt_post(self, opt, args, kwargs):
        if (self._main() and not self._is_wrapper(opt) and not self._state_dict_api
                and not any(o is opt for o in self.pending)):
            self.pending.append(opt)

    def backward(self, orig, tensors, *args, **kwargs):
        if self._main():
            self.boundary()
            self.losses.extend(tensors if isinstance(tensors, (list, tuple)) else [tensors])
        return orig(tensors, *args, **kwargs)

    def next_batch(self, orig, it):
        if self._main():
            self.boundary()  # the batch itself is recorded by the evidence hook that orig runs
        return orig(it)

    def fwd_pre(self, module, args):
        if self._depth == 0 and not any(m is module for m in self.roots):
            self.roots.append(module)
        self._depth += 1

    def fwd_post(self, module, args, output):
        self._depth = max(0, self._depth - 1)

    def save_call(self, name, orig, *args, **kwargs):
        from harness.probe import api

        path = args[1] if len(args) > 1 and isinstance(args[1], (str, os.PathLike)) else kwargs.get(
            "f", kwargs.get("filename", kwargs.get("checkpoint_id", kwargs.get("save_dir"))))
        path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if self._busy:
            return orig(*args, **kwargs)
        api.point(name, path=path)
        out = orig(*args, **kwargs)
        api.point(Point.COMMITTED, step=self.rec.last_step, via=name, path=path)
        return out

    def loaded(self, obj, optimizer: bool = False):
        if self.step is None and not self._busy:
            what = f"{type(obj).__name__}.load_state_dict"
            self.restored.append(what + (f" (from {self.last_load})" if self.last_load else ""))
            self.restored_optimizer |= optimizer
            if all(o is not obj for o in self.restored_objects):
                self.restored_objects.append(obj)

    # -- steps -------------------------------------------------------------------------------------
    def _index(self, opt) -> int:
        k = self.opt_index.get(id(opt))
        if k is None:
            k = self.opt_index[id(opt)] = len(self.opts)
            self.opts.append(opt)
            self._resolve_names(k)
        return k

    def _resolve_names(self, k: int) -> None:
        opt = self.opts[k]
        # + the weights DeepSpeed ZeRO-3 swaps into the param_groups for its step only (its fp32 partitions)
        params = [p for g in opt.param_groups for p in g["params"]] + _state.loose_state_tensors(opt)
        owners = []
        restored = [m for m in self.restored_objects if isinstance(m, self.torch.nn.Module)]
        for root in [*self.roots, *restored]:  # restored modules name the parameters of a process with no forward
            inner = unwrap_model(root)
            if any(m is inner for m, _ in owners):
                continue
            named = {id(p): n for n, p in inner.named_parameters()}
            if any(id(p) in named for p in params):
                owners.append((inner, named))
        prefix = len(owners) > 1
        names, buffers = {}, []
        for i, (inner, named) in enumerate(owners):
            pre = f"root{i}/" if prefix else ""
            for p in params:
                if id(p) in named and id(p) not in names:
                    names[id(p)] = pre + named[id(p)]
            buffers += [(pre + n + BUFFER_SUFFIX, b) for n, b in inner.named_buffers()]
        self._names[k] = [(names.get(id(p), f"opt{k}.param{i}"), p) for i, p in enumerate(params)]
        self._buffers[k] = buffers

    def _params_digests(self, k: int) -> dict:
        return {n: _digest.tensor_digest(p) for n, p in self._names[k]}

    def boundary(self) -> None:
        """The current training step, if any, is over: write its row (and fire a fault armed for it)."""
        if self.pending and self._main():
            self._busy = True
            try:
                self._flush()
            finally:
                self._busy = False

    def _flush(self) -> None:
        rec = self.rec
        opts, self.pending = self.pending, []
        ks = [self._index(o) for o in opts]
        for i, a in enumerate(ks):
            for b in ks[i + 1:]:
                if (b, a) in self.order:
                    self.fail(f"optimizers {a} and {b} step in an order that varies (optimizer {a} before {b} "
                              f"in this step, after it in an earlier one): auto mode cannot tell the training "
                              f"steps apart; step them in a fixed order, or call harness.probe.step yourself")
                self.order.add((a, b))
        if self.step is None:
            self.step = self._resume_step(ks) + 1
            for h in self._fwd_handles:
                h.remove()
            self._fwd_handles = []
        else:
            self.step += 1
        step = self.step
        records = [None] * len(ks)
        pending = None
        if rec.spare_core:
            pending = rec.hasher().submit(lambda: [_state.optimizer_record(self.opts[k], _state.NamedParams(self._names[k]))
                                                   for k in ks])
        tensors: dict = {}
        for k in ks:
            tensors.update(self._params_digests(k))
        for k in ks:
            tensors.update((n, _digest.tensor_digest(b)) for n, b in self._buffers[k])
        records = pending.result() if pending is not None else [
            _state.optimizer_record(self.opts[k], _state.NamedParams(self._names[k])) for k in ks]
        opt = _merge_records(records)
        loss, loss_value = self._loss()
        ev = _evidence.take()
        batches = ev["fetched"] or []
        batch = None if not batches else (batches[0] if len(batches) == 1 else _digest.digest(list(batches)))
        self.losses = []
        row = StepRow(attempt=rec.attempt, rank=rec.rank, step=step, time=time.time(), loss=loss,
                      loss_value=loss_value, batch=batch, rng=_state.rng_digests(), params=_digest.combine(tensors),
                      params_tensors=tensors, optimizer=opt["digest"], optimizer_groups=opt["groups"],
                      optimizer_state=opt["state"], extra={}, **ev)
        with rec.lock:
            rec.last_step = step
            rec.write(row)
            rec.maybe_fire(step=step)

    def _loss(self):
        if not self.losses:
            return None, None
        raw, dtypes = b"", []
        for t in self.losses:
            t = t.detach()
            raw += bytes(tensor_bytes(t))
            dtypes.append(str(t.dtype).replace("torch.", ""))
        first = self.losses[0]
        value = float(first.detach()) if first.numel() == 1 else None
        if value is not None and (value != value or value in (float("inf"), float("-inf"))):
            value = None
        dtype = dtypes[0] if len(set(dtypes)) == 1 else "+".join(dtypes)
        return {"dtype": dtype, "hex": raw.hex()}, value

    # -- resume inference --------------------------------------------------------------------------
    def _resume_step(self, ks: list[int]) -> int:
        """The step this process resumed from (0: a fresh start), from the state before its first step."""
        params, state = {}, {}
        for k in ks:
            params.update(self.first_pre[k]["params"])
            state.update(self.first_pre[k]["state"])
        path = os.environ.get(INDEX_ENV)
        if not path:  # a baseline run, or a trial without an index: a fresh start
            if self.role == "baseline" and self.restored_optimizer:
                self.fail("the uninterrupted baseline run restored optimizer state before its first step "
                          f"({'; '.join(self.restored)}): the script resumed from a checkpoint written by another "
                          "run. Write checkpoints under the working directory (a relative path) or "
                          "harness.probe.run_dir(), which are fresh for every run")
            self._write_side({"params": params, "state": state})
            return 0
        with open(path) as f:
            index = json.load(f).get(str(self.rec.rank), {})
        steps = {int(s): v for s, v in index.items()}
        exact, best = [], (None, -1)
        for s, entry in sorted(steps.items()):
            bp = entry.get("params") or {}
            equal = sum(1 for n, d in params.items() if bp.get(n) == d)
            if equal == len(params) == len(bp):
                exact.append(s)
            elif equal > best[1]:
                best = (s, equal)
        prior = self._prior_max()
        if not exact:
            near = (steps.get(best[0]) or {}).get("params") or {}
            differing = sorted(n for n in params.keys() | near.keys() if params.get(n) != near.get(n))
            self.event("auto.unknown_state", closest=best[0], equal=max(best[1], 0), total=len(params),
                       restored=self.restored, differing=differing[:20], loaded_from=self.last_load)
            raise AutoModeError(
                f"rank {self.rec.rank} resumed into a state the uninterrupted run never had: the parameters before "
                f"its first step match no step of the baseline (closest: step {best[0]}, {max(best[1], 0)} of "
                f"{len(params)} tensors equal)")
        if len(exact) > 1:
            by_state = [s for s in exact if steps[s].get("state") == state]
            exact = by_state or exact
        chosen = exact[0]
        if len(exact) > 1:
            fitting = [s for s in exact if s <= prior]
            chosen = max(fitting) if fitting else min(exact)
            self.event("auto.ambiguous_resume", candidates=exact, chosen=chosen, before=prior)
        if chosen > prior:
            self.fail(f"attempt {self.rec.attempt} restored the state of step {chosen} before its first step, but "
                      f"this trial had only reached step {prior}: the script loaded a checkpoint written by another "
                      f"run ({'; '.join(self.restored) or 'restored without load_state_dict'}). Write checkpoints "
                      "under the working directory (a relative path) or harness.probe.run_dir(), which are fresh "
                      "for every run")
        if chosen >= 1:
            self.event(Point.LOADED, step=chosen, via="auto", path=self.last_load)
        return chosen

    def _prior_max(self) -> int:
        """The highest step any rank recorded in the earlier attempts of this trial."""
        from harness.trace_schema import RANK_TRACE_RE

        top = 0
        for name in os.listdir(self.rec.trace_dir):
            if not RANK_TRACE_RE.match(name):
                continue
            with open(os.path.join(self.rec.trace_dir, name), "rb") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    if row.get("kind") == "step" and row.get("attempt", 0) < self.rec.attempt:
                        top = max(top, row.get("step") or 0)
        return top

    def _write_side(self, initial: dict) -> None:
        folder = os.path.join(self.rec.trace_dir, SIDE_DIR)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"rank{self.rec.rank}.json")
        if not os.path.exists(path):
            with open(path + ".tmp", "w") as f:
                json.dump({"initial": initial}, f)
            os.replace(path + ".tmp", path)

    def event(self, name: str, **info) -> None:
        rec = self.rec
        with rec.lock:
            rec.write(EventRow(attempt=rec.attempt, rank=rec.rank, name=name, step=rec.last_step,
                               info=json.loads(json.dumps(info, default=str)), time=time.time()))

    def fail(self, message: str):
        self.event("auto.error", message=message)
        raise AutoModeError(message)

    # -- the end -----------------------------------------------------------------------------------
    def finish(self) -> None:
        """The script returned normally: the last step's row, then the final state (probe.finish's format)."""
        from harness.probe import api

        self.boundary()
        if self.step is None:  # no step in this process: judge what it restored, if anything (a resume at the end)
            restored = [o for o in self.restored_objects if isinstance(o, self.torch.optim.Optimizer)]
            if not restored:
                return  # no step and nothing restored: the baseline reports it
            ks = [self._index(o) for o in restored]
            for k in ks:
                self.first_pre[k] = {"params": self._params_digests(k),
                                     "state": _state.optimizer_record(self.opts[k], _state.NamedParams(self._names[k]))["state"]}
            self.step = self._resume_step(ks)
        stepped = {id(p) for k in range(len(self.opts)) for _, p in self._names[k]}
        owners = []
        restored = [m for m in self.restored_objects if isinstance(m, self.torch.nn.Module)]
        for root in [*self.roots, *restored]:  # restored modules name the parameters of a process with no forward
            inner = unwrap_model(root)
            if all(m is not inner for m in owners) and any(id(p) in stepped for p in inner.parameters()):
                owners.append(inner)
        tree: dict = {}
        if len(owners) == 1:
            tree["model"] = _state.model_state_dict(owners[0])
        elif owners:
            tree["model"] = {f"root{i}": _state.model_state_dict(m) for i, m in enumerate(owners)}
        owned = {id(p) for m in owners for p in m.parameters()}
        loose = {n: p for k in range(len(self.opts)) for n, p in self._names[k] if id(p) not in owned}
        if loose:
            tree["params" if owners else "model"] = loose
        sds = [_state.optimizer_state_dict(o) for o in self.opts]
        tree["optimizer"] = sds[0] if len(sds) == 1 else sds
        averaged = averaged_models_state()
        if averaged:
            tree["averaged"] = averaged
        unseen = unseen_modules(self, owners, stepped)
        if unseen:  # state the final-state comparison does not cover: the verdict says so
            self.event("auto.unseen", modules=unseen)
        self._busy = True  # the harness's own safetensors write is not a save of the script's
        try:
            api.write_final(self.rec, tree)
        finally:
            self._busy = False


def _merge_records(records: list[dict]) -> dict:
    if len(records) == 1:
        return records[0]
    state: dict = {}
    for i, r in enumerate(records):
        for entry, d in r["state"].items():
            state[entry if entry not in state else f"opt{i}:{entry}"] = d
    return {"digest": _digest.combine({str(i): r["digest"] for i, r in enumerate(records)}),
            "groups": [g for r in records for g in r["groups"]], "state": state}


_installed: AutoRecorder | None = None


def installed() -> AutoRecorder | None:
    return _installed


def install() -> AutoRecorder | None:
    """Install the hooks in this process (a rank about to run the script). Idempotent; None outside the harness."""
    global _installed
    if _installed is not None:
        return _installed
    rec = _get()
    if rec is None:
        return None
    _evidence.install()  # first (as harness.launch.rank does): it digests the batches the rows hold
    import torch
    import torch.distributed as dist
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    from torch.utils.data import dataloader

    from harness import private_apis

    private_apis.require("torch.dataloader")  # before any hook: _BaseDataLoaderIter.__next__ is wrapped below
    auto = _installed = rec.auto = AutoRecorder(rec)
    register_optimizer_step_pre_hook(auto.opt_pre)
    register_optimizer_step_post_hook(auto.opt_post)
    auto._fwd_handles = [torch.nn.modules.module.register_module_forward_pre_hook(auto.fwd_pre),
                         torch.nn.modules.module.register_module_forward_hook(auto.fwd_post, always_call=True)]

    orig_backward = torch.autograd.backward

    @functools.wraps(orig_backward)
    def backward(tensors, *args, **kwargs):
        return auto.backward(orig_backward, tensors, *args, **kwargs)

    torch.autograd.backward = backward

    orig_next = dataloader._BaseDataLoaderIter.__next__

    @functools.wraps(orig_next)
    def __next__(self):
        return auto.next_batch(orig_next, self)

    dataloader._BaseDataLoaderIter.__next__ = __next__

    orig_mod_load = torch.nn.Module.load_state_dict

    @functools.wraps(orig_mod_load)
    def module_load_state_dict(self, *args, **kwargs):
        out = orig_mod_load(self, *args, **kwargs)
        auto.loaded(self)
        return out

    torch.nn.Module.load_state_dict = module_load_state_dict

    orig_opt_load = torch.optim.Optimizer.load_state_dict

    @functools.wraps(orig_opt_load)
    def optimizer_load_state_dict(self, *args, **kwargs):
        sd = args[0] if args else kwargs.get("state_dict")
        # Only state that a step creates says "restored from a checkpoint": Accelerate's prepare() reloads
        # a fresh optimizer's own (empty) state to move it to the device (AcceleratedOptimizer.__init__).
        carries_state = not isinstance(sd, dict) or bool(sd.get("state"))
        out = orig_opt_load(self, *args, **kwargs)
        auto.loaded(self, optimizer=carries_state)
        return out

    torch.optim.Optimizer.load_state_dict = optimizer_load_state_dict

    orig_load = torch.load

    @functools.wraps(orig_load)
    def load(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            auto.last_load = os.fspath(f)
        return orig_load(f, *args, **kwargs)

    torch.load = load
    _wrap_save(auto, torch, "save", "torch.save")

    if dist.is_available():
        orig_destroy = dist.destroy_process_group

        @functools.wraps(orig_destroy)
        def destroy_process_group(*args, **kwargs):
            from harness.probe import api

            auto.boundary()
            api._guard_gloo_teardown()
            return orig_destroy(*args, **kwargs)

        dist.destroy_process_group = destroy_process_group
    _when_imported("safetensors.torch", lambda m: _wrap_save(auto, m, "save_file", "safetensors.save_file"))
    _when_imported("torch.distributed.checkpoint", lambda m: _wrap_save(auto, m, "save", "dcp.save"))
    _when_imported("torch.distributed.checkpoint.state_dict", lambda m: _quiet_state_dict_api(auto, m))
    _when_imported("deepspeed.runtime.engine", lambda m: _wrap_save(auto, m.DeepSpeedEngine, "save_checkpoint",
                                                                    "deepspeed.save_checkpoint"))
    _when_imported("torch.optim.swa_utils", _track_averaged_models)
    _scan_for_modules_at(auto, dist)
    return auto


def _wrap_save(auto: AutoRecorder, owner, attr: str, name: str) -> None:
    orig = getattr(owner, attr, None)
    if orig is None or getattr(orig, "_harness_auto", False):
        return

    @functools.wraps(orig)
    def save(*args, **kwargs):
        return auto.save_call(name, orig, *args, **kwargs)

    save._harness_auto = True
    setattr(owner, attr, save)


def _quiet_state_dict_api(auto: AutoRecorder, module) -> None:
    """Steps inside ``get_state_dict`` & co. are not training steps: on an optimizer without state they step
    it once with lr 0 to create it (``_init_optim_state``), which a resume does before ``dcp.load``."""
    for attr in getattr(module, "__all__", ()):
        orig = getattr(module, attr, None)
        if not inspect.isfunction(orig) or getattr(orig, "_harness_auto", False):  # not the type aliases
            continue

        def quiet(*args, _orig=orig, **kwargs):
            auto._state_dict_api += 1
            try:
                return _orig(*args, **kwargs)
            finally:
                auto._state_dict_api -= 1

        quiet = functools.wraps(orig)(quiet)
        quiet._harness_auto = True
        setattr(module, attr, quiet)


def _when_imported(module: str, patch) -> None:
    """Call ``patch(module)`` now if it is imported, else right after the script imports it."""
    if module in sys.modules:
        patch(sys.modules[module])
        return
    import importlib.abc
    import importlib.util

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != module:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            exec_module = loader.exec_module

            def exec_and_patch(mod):
                exec_module(mod)
                try:
                    sys.meta_path.remove(self)
                except ValueError:
                    pass
                patch(mod)

            loader.exec_module = exec_and_patch
            return spec

    sys.meta_path.insert(0, _Finder())


def finish() -> None:
    """End of a script that returned normally: write the last row and the final state (no-op if not installed)."""
    if _installed is not None:
        _installed.finish()


# -- state outside the stepped modules -----------------------------------------------------------------
# An AveragedModel (torch.optim.swa_utils: SWA, EMA) is recorded in the final state under averaged/{k}.
# A module that no optimizer steps and that no recorded module holds (a hand-made EMA, copy.deepcopy(model)
# updated under no_grad) is not: the event auto.unseen names it, so that a PASS is not read as covering it.
# Both are held by strong references: by the time finish() runs, the script's locals are gone.

_AVERAGED: list = []  # every AveragedModel made in this process, in creation order
_SCANNED: list = []  # modules with parameters, outermost, found by _scan_modules
_scans = {"first_step": False}
_ENGINE_TYPES = ("DeepSpeedEngine", "PipelineEngine")  # they step flat partitions of the module they hold


def _track_averaged_models(swa_utils) -> None:
    cls = getattr(swa_utils, "AveragedModel", None)
    orig = getattr(cls, "__init__", None)
    if orig is None or getattr(orig, "_harness_auto", False):
        return

    @functools.wraps(orig)
    def __init__(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        if all(m is not self for m in _AVERAGED):
            _AVERAGED.append(self)

    __init__._harness_auto = True
    cls.__init__ = __init__


def averaged_models_state() -> dict:
    """``{"0": state_dict, ...}`` of the AveragedModels of this process (``n_averaged`` included)."""
    return {str(k): _state.model_state_dict(m) for k, m in enumerate(_AVERAGED)}


def _outermost(modules: list) -> list:
    inner = {id(c) for m in modules for c in m.modules() if c is not m}
    out: list = []
    for m in modules:
        if id(m) not in inner and all(x is not m for x in out):
            out.append(m)
    return out


def _scan_modules() -> None:
    """Remember the outermost modules with parameters alive now (gc; by type, never touching attributes)."""
    import gc

    import torch

    module = torch.nn.Module
    found = [o for o in gc.get_objects() if issubclass(type(o), module)]
    with_params = [m for m in found if next(m.parameters(), None) is not None]
    _SCANNED[:] = _outermost([*_SCANNED, *with_params])


def _scan_for_modules_at(auto: AutoRecorder, dist) -> None:
    """Scan at the first training step (the script's modules exist, its locals are alive) and at
    destroy_process_group (the end of a typical main()); finish() scans once more."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def first_step(opt, args, kwargs):
        if not _scans["first_step"] and auto._main():
            _scans["first_step"] = True
            _scan_modules()

    register_optimizer_step_post_hook(first_step)
    if dist.is_available():
        destroy = dist.destroy_process_group

        @functools.wraps(destroy)
        def destroy_process_group(*args, **kwargs):
            if auto._main():
                _scan_modules()
            return destroy(*args, **kwargs)

        dist.destroy_process_group = destroy_process_group


def _describe(m) -> str:
    tensors = {id(t): t for t in [*m.parameters(), *m.buffers()]}
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    size = f"{nbytes} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024:
            break
        nbytes /= 1024
        size = f"{nbytes:.1f} {unit}"
    return f"{type(m).__name__} ({len(tensors)} tensors, {size})"


def unseen_modules(auto: AutoRecorder, owners: list, stepped: set) -> list[str]:
    """Descriptions ("Sequential (4 tensors, 1.2 KiB)") of the modules with parameters that no optimizer
    steps and that neither the recorded modules (``owners``), an AveragedModel, nor a DeepSpeed engine hold."""
    _scan_modules()
    engines = [r for r in auto.roots if any(c.__name__ in _ENGINE_TYPES for c in type(r).__mro__)]
    held = [*owners, *_AVERAGED, *engines]
    seen = {id(c) for m in held for c in m.modules()}
    covered = set(stepped) | {id(p) for m in held for p in m.parameters()}

    def unseen_in(m) -> list:  # the largest submodules of m whose parameters are all outside `covered`
        params = list(m.parameters())
        if id(m) in seen or not params:
            return []
        if not any(id(p) in covered for p in params):
            return [m]
        return [x for c in m.children() for x in unseen_in(c)]  # a container of both: look inside

    return sorted(_describe(m) for m in _outermost([x for m in _SCANNED for x in unseen_in(m)]))
