"""Order-invariant gradient reduction for DDP: the same bits whatever the bucket layout.

**The problem.** DDP reduces gradients bucket by bucket. In a process's first iteration its buckets
are laid out in parameter order (one bucket, as torch 2.x lays them out when `find_unused_parameters`
is off); after that iteration it rebuilds them in the order the gradients became ready. A ring
all-reduce (gloo, NCCL) splits a bucket into chunks and starts each chunk's sum at a different rank,
so the order in which an element's contributions are added depends on its offset in its bucket.
A job resumed from a checkpoint runs its first step with the first-iteration layout, where the
uninterrupted job, at the same step, long since uses the rebuilt one: the sums are the same numbers
added in a different order, and with 3 or more ranks floating-point addition is not associative, so
the parameters differ in the last bits after the first resumed step. (With 2 ranks each element is
`a + b` or `b + a`: commutativity hides it.)

**The fix.** A comm hook that sums the ranks' contributions in rank order, element by element,
whatever chunk, bucket or offset the element is in:

    g = (g_0 * s + g_1 * s) + g_2 * s + ... + g_{W-1} * s,      s = 1 / W

where `g_r` is rank r's local gradient (already accumulated over `no_sync` micro-batches: the hook
only sees the bucket of the synchronizing backward) and `s` is `1.0 / W` rounded the way a tensor
multiply rounds a Python scalar (to float32 for float32/bfloat16/float16 buckets, to float64 for
float64 buckets). The multiply comes first, as in DDP's default: its reducer multiplies each
gradient by `1 / W` while copying it into the bucket, and only then all-reduces with SUM (checked
against DDP's own result at 3 ranks: every element equals some ordering of the pre-multiplied
contributions; dividing before, or after the sum, does not match). So with 2 ranks this hook gives
the same bits as DDP's default, and with any number of ranks the same value up to the order of the
additions, now fixed. Each addition rounds to the bucket's dtype, as a ring all-reduce in that dtype
does; every bucket holds one dtype, so a model with mixed dtypes is reduced per dtype.

Two ways to get every rank's contributions:

- `rank_ordered_allreduce_hook`: an all-to-all sends chunk j of the bucket to rank j, which sums
  its chunk in rank order; an all-gather of the summed chunks follows. It moves as many bytes as a
  ring all-reduce (2 (W-1)/W x the bucket), but needs two collectives, the second issued from the
  hook itself after the first completes (issuing it from a future callback could interleave the
  collectives of two buckets differently on different ranks). The cheaper of the two on gloo.
- `rank_ordered_allgather_hook`: an all-gather of the whole bucket (W x its size arrives on every
  rank), then a local sum in rank order, in the future's callback. One collective, asynchronous
  like DDP's own, but gloo's all-gather is much slower than its ring all-reduce.

**The parameter-order pin.** A third fix keeps DDP's own all-reduce and
removes the cause instead: `pin_bucket_layout` makes DDP's one bucket rebuild, at the first forward,
lay the buckets out in parameter order (`reducer._push_all_rebuilt_params()`, the call DDP's own
`Join` hook makes for ranks that ran out of data) instead of in the order gradients became ready in
the first backward. Every process, fresh or resumed, then uses one layout from its very first
iteration on, so the ring sums every element in the same order at every step. It was chosen because
it is the cheapest that is bit-exact after a resume at 3 and 4 ranks: it adds no work per step (the
rank-ordered hooks cost a multiple of the all-reduce on gloo, whose all-gather and all-to-all are
much slower than its ring all-reduce; see the README's benchmark, `bench/reduction_order.py`). What
it gives up: the readiness order lets DDP start reducing the last layers' gradients while the
backward pass still computes the first layers'; in parameter order the first bucket is ready last,
so the reduction waits for the end of the backward pass (as DDP's own first iteration always does).
What it assumes: that the backend sums a bucket of a given size in the same order every time, which
holds for gloo and for NCCL with the same configuration and topology. A job resumed on a different
topology (other nodes, another NCCL algorithm) can need the hooks, which depend on neither:
`Checkpointer(..., deterministic_reduction="rank_ordered")` installs `rank_ordered_allreduce_hook`.

**What the checkpointer installs by default: the recorded ready-order layout.** Pinning parameter
order costs the overlap of the all-reduce with the backward pass. `track_bucket_layout` (what
`Checkpointer.prepare` does: `deterministic_reduction=True` or `"ready_order"`) keeps it: a fresh
process is left alone, so DDP rebuilds its buckets once, in the order the gradients became ready in
its first synchronizing backward, as it always does; each checkpoint records that layout
(`bucket_layout_state`: a small JSON list of DDP parameter indices per bucket, the same list DDP
logs as `rebuilt_per_bucket_param_indices`); and `load_state` restores it (`restore_bucket_layout`)
before the resumed process's first forward (the same buckets; for a model of several dtypes their
order may differ, see `_same_buckets`). So every process, fresh or resumed, sums with the
uninterrupted process's rebuilt buckets from the first step after the resume on, and the buckets
that hold the last layers' gradients start reducing while the backward pass still runs.

How a layout is imposed: DDP's rebuild lays the buckets out in the order the parameters were listed
for it (`compute_bucket_assignment_by_size` over that list, with the rebuild's size limits), and the
one list that can be pushed from Python is the reducer's own parameter list, in its order
(`reducer._push_all_rebuilt_params()`). So the restore builds DDP's reducer again over the parameters
permuted into the recorded order (`DistributedDataParallel._ddp_init_helper`, what DDP's own
`__setstate__` runs; the old reducer's autograd hooks removed first, the model's comm hooks registered
again), pushes that list and runs the rebuild at once (`reducer._rebuild_buckets()`, the call DDP's
forward makes; collective: it broadcasts rank 0's layout), then reads the buckets back and compares
them with the recorded ones. Reading the layout: `reducer._get_zeros_like_grad_buckets()` (each
bucket's parameters, in bucket order; a zero copy of the gradients, made once per reducer: cached).
A checkpoint saved after the first synchronizing backward but before the rebuild (DDP runs it at the
next forward) runs that rebuild at the save, with the same list, so the layout is on record; one
saved before any synchronizing backward records none (`"buckets": null`), and its resume is left to
rebuild as a fresh process does.

When the recorded layout cannot be restored exactly (no layout in the checkpoint, e.g. one written
before this existed, which pinned parameter order; the parameters changed; DDP rebuilt something
else, e.g. another `bucket_cap_mb`; a configuration the restore does not handle: `static_graph`,
DDP's `mixed_precision`, a built-in C++ comm hook, the Python reducer), one `BucketLayoutWarning`
line says why and the process pins parameter order instead (the previous behaviour: resume-exact
against any process that pinned it too, and the layout its own checkpoints then record). The layout
depends on the parameters and the bucket size limits, not on the world size: a resume on another
world size restores it too (bit-exactness across world sizes is not claimed anyway). A
`load_state` after the model's first forward cannot change the layout any more: unless the current
layout already is the recorded one, it warns (`BucketLayoutWarning`), records a `ddp.pin_failed`
probe event and sets `model._harness_bucket_layout_pin_failed`, and the model trains on as it is.
`deterministic_reduction="fixed_layout"` keeps the parameter-order pin of every process.

Rejected alternatives, tried at 3 ranks on the default scenario: `static_graph=True` still rebuilds
the buckets after the first iteration (diverges at the first resumed step), and fails outright with
`no_sync` gradient accumulation; `bucket_cap_mb` and `bucket_cap_mb_list` set the sizes, not the
order (diverge).

`Checkpointer.prepare(ddp_model)` records and restores the ready-order layout by default
(`deterministic_reduction="fixed_layout"`: the parameter-order pin; `False` turns both off). Without
the checkpointer, call `pin_bucket_layout(ddp_model)` before the first forward (or save
`bucket_layout_state(ddp_model)` with your checkpoint and call `restore_bucket_layout` on resume,
after `track_bucket_layout`), or register a hook:

    from harness.checkpoint import rank_ordered_allreduce_hook
    ddp_model.register_comm_hook(None, rank_ordered_allreduce_hook)   # state: a process group or None

DDP accepts one comm hook per model: `install` refuses to replace a hook registered before it. The
pinned layout does not need one, and makes a user's own deterministic hook (e.g. fp16 compression)
resume-exact too.

**Only before the first forward.** The push lists the parameters for the rebuild that DDP runs at
the start of a forward; DDP's first backward lists them itself, in readiness order. Pushed after the
first forward the call does nothing (the backward already listed them: the C++ push returns early)
or lists each parameter twice (a forward but no backward yet: DDP's next rebuild then fails an
internal assertion). So `pin_bucket_layout` refuses once the model has run a forward (DDP's
`_lazy_init_ran`, set by any forward, also one under `no_grad`, which cannot be told apart) or
rebuilt its buckets: it raises `BucketLayoutError`, or with `best_effort=True` warns and returns
False; either way it sets `model._harness_bucket_layout_pin_failed` (the reason) and, under the
harness, records a `ddp.pin_failed` probe event, so the report can say why a resume may differ.
"""

import warnings

import torch
import torch.distributed as dist

from harness import private_apis
from harness import probe

__all__ = ["rank_ordered_allgather_hook", "rank_ordered_allreduce_hook", "pin_bucket_layout", "install",
           "track_bucket_layout", "bucket_layout", "bucket_layout_state", "restore_bucket_layout",
           "MODES", "CommHookConflictWarning", "BucketLayoutError", "BucketLayoutWarning"]

# DDP's private reducer calls and attributes used below: a torch without them fails here, naming them.
private_apis.require("torch.ddp")

#: what `install` (and `Checkpointer(deterministic_reduction=...)`) accepts; True means "ready_order"
MODES = ("ready_order", "fixed_layout", "rank_ordered")

# The values of `model._harness_bucket_layout_pinned` (truthy: the layout is managed) and of the
# checkpoint entry's "order".
_READY, _PARAMETER = "ready_order", "parameter_order"


class CommHookConflictWarning(UserWarning):
    """The order-invariant reduction could not be installed (a comm hook was already registered, or it is too late)."""


class BucketLayoutError(RuntimeError):
    """The DDP model's bucket layout cannot be pinned: its first forward already ran (see the module docstring)."""


class BucketLayoutWarning(UserWarning):
    """A recorded DDP bucket layout is not restored exactly (the message says why, and what is used instead)."""


# torch 2.13 renamed all_gather_into_tensor (still there, deprecated); older versions have only the old name.
_all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _group(process_group):
    return process_group if process_group is not None else dist.group.WORLD


def _done(tensor: torch.Tensor) -> torch.futures.Future[torch.Tensor]:
    fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    fut.set_result(tensor)
    return fut


def _sum_in_rank_order(parts: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = ((parts[0] + parts[1]) + parts[2]) + ...: one rounding per addition, in rank order."""
    torch.add(parts[0], parts[1], out=out)
    for j in range(2, parts.shape[0]):
        out.add_(parts[j])
    return out


def rank_ordered_allgather_hook(process_group, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The same result as `rank_ordered_allreduce_hook`, by one all-gather of the whole bucket."""
    group = _group(process_group)
    world = dist.get_world_size(group)
    buf = bucket.buffer()
    if world == 1:
        return _done(buf)
    buf.mul_(1.0 / world)  # DDP's default pre-multiplies each gradient by 1/W, with the same rounding
    n = buf.numel()
    gathered = torch.empty(world * n, dtype=buf.dtype, device=buf.device)  # flat: gloo refuses a (W, n) output
    fut = _all_gather_flat(gathered, buf, group=group, async_op=True).get_future()

    def reduce(fut) -> torch.Tensor:
        fut.wait()  # raises if the all-gather failed (a peer died): never sum an unfilled buffer
        return _sum_in_rank_order(gathered.view(world, n), buf)

    return fut.then(reduce)


def rank_ordered_allreduce_hook(process_group, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: the mean of the ranks' gradients, summed in rank order (see the module docstring).

    All-to-all, a rank-ordered sum of this rank's chunk, all-gather: ring all-reduce's bytes.
    `process_group`: the group DDP reduces over (the hook's state; None for the default group).
    """
    group = _group(process_group)
    world = dist.get_world_size(group)
    buf = bucket.buffer()
    if world == 1:
        return _done(buf)
    buf.mul_(1.0 / world)
    n = buf.numel()
    chunk = -(-n // world)
    if chunk * world == n:
        send = buf
    else:
        send = torch.zeros(chunk * world, dtype=buf.dtype, device=buf.device)
        send[:n].copy_(buf)
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)  # rank r gets chunk r of every rank, in rank order
    mine = _sum_in_rank_order(received.view(world, chunk), torch.empty(chunk, dtype=buf.dtype, device=buf.device))
    out = send if send is not buf else torch.empty_like(send)
    fut = _all_gather_flat(out, mine, group=group, async_op=True).get_future()

    def unpad(fut) -> torch.Tensor:
        fut.wait()  # raises if the all-gather failed
        if out is buf:
            return buf
        buf.copy_(out[:n])
        return buf

    return fut.then(unpad)


def _too_late(model) -> str | None:
    """Why the layout can no longer be pinned, or None (both attributes are checked at import: private_apis)."""
    if model._has_rebuilt_buckets:
        return "DDP has already rebuilt its buckets (in readiness order)"
    if model._lazy_init_ran:
        return "the model has already run a forward pass"
    return None


def _managed_ddp(model) -> bool:
    """A DDP model whose layout can matter: more than one rank, and DDP rebuilds its buckets (it never
    does with `find_unused_parameters=True`: its layout is fixed already)."""
    return (isinstance(model, torch.nn.parallel.DistributedDataParallel)
            and dist.get_world_size(model.process_group) > 1 and not model.find_unused_parameters)


def _refuse(model, reason: str, best_effort: bool) -> bool:
    model._harness_bucket_layout_pin_failed = reason
    probe.point("ddp.pin_failed", reason=reason)  # a no-op outside the harness
    message = (f"cannot pin this DDP model's bucket layout: {reason}, and the layout can only be pinned before "
               "the first forward (any forward, also an evaluation under no_grad). Call Checkpointer.prepare(model) "
               "or pin_bucket_layout(model) right after wrapping the model in DDP; or use "
               "Checkpointer(deterministic_reduction='rank_ordered'), a comm hook that can be installed at any "
               "time; or deterministic_reduction=False to accept that a resume on 3 or more ranks may differ in "
               "the last bits.")
    if not best_effort:
        raise BucketLayoutError(message)
    warnings.warn(message, CommHookConflictWarning, stacklevel=4)
    return False


def pin_bucket_layout(model, *, best_effort: bool = False) -> bool:
    """Make a DDP model use one bucket layout (parameter order) from its first iteration on.

    Call it before the model's first forward pass. Returns whether the layout is pinned; False, with
    nothing to do: not DDP, one rank, or `find_unused_parameters=True` (DDP then never rebuilds: its
    layout is fixed already). After the first forward it raises `BucketLayoutError`, or with
    `best_effort=True` warns (`CommHookConflictWarning`) and returns False; it never claims a pin it
    could not make (module docstring, "Only before the first forward").
    """
    if not _managed_ddp(model):
        return False
    if getattr(model, "_harness_bucket_layout_pinned", False) == _PARAMETER:
        return True  # pushing the parameters twice would list each twice in the rebuild
    reason = _too_late(model)
    if reason is not None:
        return _refuse(model, reason, best_effort)
    model.reducer._push_all_rebuilt_params()
    model._harness_bucket_layout_pinned = _PARAMETER
    return True


def _unsupported(model) -> str | None:
    """Why the restore of a recorded layout cannot handle this DDP model, or None (module docstring)."""
    if model.static_graph:
        return "static_graph=True"
    if model.mixed_precision is not None:
        return "DDP's mixed_precision"
    if model._use_python_reducer:
        return "DDP's Python reducer"
    if model._get_ddp_logging_data().get("comm_hook") and not model._comm_hooks:
        return "a built-in (C++) comm hook, which cannot be registered again on a new reducer"
    return None


def track_bucket_layout(model, *, best_effort: bool = False) -> bool:
    """The checkpointer's default: let DDP rebuild its buckets in readiness order, as it does, so that
    `bucket_layout_state` records that layout and `restore_bucket_layout` restores it on a resume.

    Call it before the model's first forward (the same rules as `pin_bucket_layout`; False, nothing
    to do, where that returns False). A DDP configuration the restore does not handle pins parameter
    order instead, saying so in one `BucketLayoutWarning` line.
    """
    if not _managed_ddp(model):
        return False
    if getattr(model, "_harness_bucket_layout_pinned", False):
        return True
    reason = _too_late(model)
    if reason is not None:
        return _refuse(model, reason, best_effort)
    unsupported = _unsupported(model)
    if unsupported is not None:
        warnings.warn(f"the DDP bucket layout in readiness order cannot be restored on a resume with {unsupported}; "
                      "pinning parameter order instead (resume-exact, without overlapping the all-reduce with the "
                      "backward pass)", BucketLayoutWarning, stacklevel=3)
        return pin_bucket_layout(model, best_effort=best_effort)
    model._harness_bucket_layout_pinned = _READY
    return True


def bucket_layout(model) -> list[list[int]]:
    """The DDP model's buckets now, in bucket order: each the indices, in DDP's parameter list
    (`_build_params_for_reducer`, parameter order), of its parameters in bucket order. The format of
    DDP's own `_get_ddp_logging_data()["rebuilt_per_bucket_param_indices"]`. Allocates a zero copy of
    the buckets: `bucket_layout_state` caches it per reducer."""
    index = {id(p): i for i, p in enumerate(model._build_params_for_reducer()[0])}
    return [[index[id(t)] for t in b.parameters()] for b in model.reducer._get_zeros_like_grad_buckets()]


def _signature(model) -> list[list]:
    return [[str(p.dtype).removeprefix("torch."), p.numel()] for p in model._build_params_for_reducer()[0]]


def _current_layout(model) -> list[list[int]]:
    cached = getattr(model, "_harness_bucket_layout", None)
    if cached is None or cached[0] is not model.reducer:
        cached = (model.reducer, bucket_layout(model))
        model._harness_bucket_layout = cached
    return cached[1]


def bucket_layout_state(model) -> dict | None:
    """What a checkpoint records of a DDP model's layout (JSON), or None: a layout the checkpointer does
    not manage. Collective when DDP's one rebuild is pending (a synchronizing backward ran, the next
    forward would rebuild): it runs that rebuild now, with the same list, to have the layout on record."""
    mode = getattr(model, "_harness_bucket_layout_pinned", False)
    if mode not in (_READY, _PARAMETER) or not _managed_ddp(model):
        return None
    if not model._has_rebuilt_buckets:
        if not model.reducer._rebuild_buckets():  # nothing listed yet: no synchronizing backward has run
            return {"order": mode, "buckets": None}
        model._has_rebuilt_buckets = True
    return {"order": mode, "buckets": _current_layout(model), "params": _signature(model)}


def _reinit_reducer(model, order: list[int]) -> None:
    """Build DDP's reducer again over its parameters listed in `order`, push that list for the one rebuild
    and run it (module docstring, "How a layout is imposed")."""
    params, sparse = model._build_params_for_reducer()
    params, sparse = [params[i] for i in order], [sparse[i] for i in order]
    model._harness_bucket_layout = None  # the cache holds the old reducer: let it go
    model.reducer._remove_autograd_hooks()
    model._ddp_init_helper(params, sparse, model._build_debug_param_to_name_mapping(params), model.static_graph)
    for hook, state in model._comm_hooks:
        dist._register_comm_hook(model.reducer, state, hook)
    model.reducer._push_all_rebuilt_params()
    if not model.reducer._rebuild_buckets():
        raise RuntimeError("DDP did not rebuild its buckets from the pushed parameters")
    model._has_rebuilt_buckets = True


def _fall_back(model, why: str) -> str:
    warnings.warn(f"the recorded DDP bucket layout is not restored: {why}; pinning parameter order instead (a "
                  "resume on 3 or more ranks can differ in the last bits from a run that used the recorded "
                  "layout)", BucketLayoutWarning, stacklevel=4)
    if model._has_rebuilt_buckets:  # after a restore attempt: a fresh reducer, pushed in parameter order
        _reinit_reducer(model, list(range(len(model._build_params_for_reducer()[0]))))
    else:
        model.reducer._push_all_rebuilt_params()
    model._harness_bucket_layout_pinned = _PARAMETER
    return _PARAMETER


def restore_bucket_layout(model, state: dict | None) -> str | None:
    """Give a resumed process the layout `state` (`bucket_layout_state` of the saving process) records.

    Collective. Returns what the model uses now: "ready_order" (the recorded layout, restored),
    "parameter_order" (recorded, or the fallback: a `BucketLayoutWarning` line says why), "fresh" (none
    recorded yet: DDP rebuilds as in a fresh process), or None (nothing done: not a model
    `track_bucket_layout` manages, or too late: warned). See the module docstring.
    """
    if getattr(model, "_harness_bucket_layout_pinned", False) != _READY or not _managed_ddp(model):
        return None
    if isinstance(state, dict) and state.get("order") == _READY and state.get("buckets") is None:
        return "fresh"
    recorded = state.get("buckets") if isinstance(state, dict) else None
    if model._has_rebuilt_buckets or model._lazy_init_ran:
        if recorded is not None and model._has_rebuilt_buckets and _same_buckets(_current_layout(model), recorded):
            return _READY  # already the recorded layout (e.g. a second load_state)
        reason = _too_late(model)
        model._harness_bucket_layout_pin_failed = reason
        probe.point("ddp.pin_failed", reason=reason)
        warnings.warn(f"cannot restore the recorded DDP bucket layout: {reason}, and the layout can only be changed "
                      "before the first forward; call load_state before any forward (a resume on 3 or more ranks "
                      "can differ in the last bits)", BucketLayoutWarning, stacklevel=3)
        return None
    if not isinstance(state, dict) or state.get("order") not in (_READY, _PARAMETER):
        return _fall_back(model, "the checkpoint records none (saved without it, or by a version that pinned "
                                 "parameter order)")
    if state["order"] == _PARAMETER:
        model.reducer._push_all_rebuilt_params()  # the saving process pinned parameter order: so does this one
        model._harness_bucket_layout_pinned = _PARAMETER
        return _PARAMETER
    unsupported = _unsupported(model)
    if unsupported is not None:
        return _fall_back(model, f"this model uses {unsupported}")
    n = len(model._build_params_for_reducer()[0])
    order = [i for bucket in recorded for i in bucket] if isinstance(recorded, list) else None
    if (order is None or not all(isinstance(i, int) for i in order) or sorted(order) != list(range(n))
            or state.get("params") != _signature(model)):
        return _fall_back(model, f"the model's parameters ({n}) differ from the recorded ones")
    _reinit_reducer(model, order)
    got = _current_layout(model)
    if not _same_buckets(got, recorded):
        return _fall_back(model, f"DDP rebuilt {len(got)} bucket(s) {_few(got)} from the recorded order, not the "
                                 f"recorded {len(recorded)} {_few(recorded)} (another bucket_cap_mb?)")
    return _READY


def _same_buckets(got: list, recorded: list) -> bool:
    """The same buckets, each with the same parameters in the same order (what fixes every element's sum).
    Their order may differ for a model of several dtypes: the rebuild appends the buckets it has not
    filled in the order of a hash map, which the pushed list (the recorded buckets, flattened) can change."""
    return sorted(got) == sorted(recorded)


def _few(buckets: list) -> str:
    text = str(buckets)
    return text if len(text) <= 80 else text[:77] + "..."


def install(model, mode: "bool | str" = True, *, best_effort: bool = False) -> bool:
    """Make `model`'s gradient reduction resume-exact: `mode` True or "ready_order" tracks the bucket layout
    DDP rebuilds (`track_bucket_layout`: recorded in checkpoints, restored on a resume), "fixed_layout" pins
    parameter order, "rank_ordered" registers `rank_ordered_allreduce_hook`, False does nothing. Returns
    whether it did.

    Pinning after the model's first forward raises `BucketLayoutError` (`best_effort=True`: warns and
    returns False), see `pin_bucket_layout`.

    The hook is not registered (False) when `model` is not DDP (nothing to do), runs on one rank (DDP's
    reduction is then the identity), or already has a comm hook: DDP allows only one, so the existing
    hook is kept and a `CommHookConflictWarning` says that the resumed run may not be bit-exact at 3 or
    more ranks unless that hook is order-invariant too.
    """
    if mode is False:
        return False
    if mode is True or mode == "ready_order":
        return track_bucket_layout(model, best_effort=best_effort)
    if mode == "fixed_layout":
        return pin_bucket_layout(model, best_effort=best_effort)
    if mode != "rank_ordered":
        raise ValueError(f"deterministic_reduction: expected True, False or one of {MODES}, got {mode!r}")
    hook = rank_ordered_allreduce_hook
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return False
    if dist.get_world_size(model.process_group) == 1:
        return False
    existing = model._comm_hooks  # checked at import (private_apis)
    if existing:
        names = ", ".join(getattr(h, "__qualname__", repr(h)) for h, _ in existing)
        warnings.warn(
            f"this DDP model already has a comm hook ({names}); DDP allows one, so the checkpointer keeps it and does "
            "not install rank_ordered_allreduce_hook. Unless your hook sums the ranks in a fixed order, a resumed run "
            "on 3 or more ranks can differ from an uninterrupted one in the last bits (DDP's first iteration after a "
            "start uses a different bucket layout). Use Checkpointer(..., deterministic_reduction=True), which pins the "
            "layout and keeps your hook, or False to silence this.", CommHookConflictWarning, stacklevel=3)
        return False
    try:
        model.register_comm_hook(model.process_group, hook)
    except RuntimeError as e:  # e.g. a built-in hook registered with _register_builtin_comm_hook
        warnings.warn(f"could not install {getattr(hook, '__qualname__', hook)} on the DDP model ({e}); its existing "
                      "reduction is kept, and a resume on 3 or more ranks may not be bit-exact",
                      CommHookConflictWarning, stacklevel=3)
        return False
    return True
