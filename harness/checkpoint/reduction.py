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

**What the checkpointer installs: the pinned layout.** A third fix keeps DDP's own all-reduce and
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

Rejected alternatives, tried at 3 ranks on the default scenario: `static_graph=True` still rebuilds
the buckets after the first iteration (diverges at the first resumed step), and fails outright with
`no_sync` gradient accumulation; `bucket_cap_mb` and `bucket_cap_mb_list` set the sizes, not the
order (diverge).

`Checkpointer.prepare(ddp_model)` pins the layout by default (`deterministic_reduction=False`
turns it off). Without the checkpointer, call `pin_bucket_layout(ddp_model)` before the first
forward, or register a hook:

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
           "MODES", "CommHookConflictWarning", "BucketLayoutError"]

# DDP's private reducer calls and attributes used below: a torch without them fails here, naming them.
private_apis.require("torch.ddp")

#: what `install` (and `Checkpointer(deterministic_reduction=...)`) accepts; True means "fixed_layout"
MODES = ("fixed_layout", "rank_ordered")


class CommHookConflictWarning(UserWarning):
    """The order-invariant reduction could not be installed (a comm hook was already registered, or it is too late)."""


class BucketLayoutError(RuntimeError):
    """The DDP model's bucket layout cannot be pinned: its first forward already ran (see the module docstring)."""


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


def pin_bucket_layout(model, *, best_effort: bool = False) -> bool:
    """Make a DDP model use one bucket layout (parameter order) from its first iteration on.

    Call it before the model's first forward pass. Returns whether the layout is pinned; False, with
    nothing to do: not DDP, one rank, or `find_unused_parameters=True` (DDP then never rebuilds: its
    layout is fixed already). After the first forward it raises `BucketLayoutError`, or with
    `best_effort=True` warns (`CommHookConflictWarning`) and returns False; it never claims a pin it
    could not make (module docstring, "Only before the first forward").
    """
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return False
    if dist.get_world_size(model.process_group) == 1 or model.find_unused_parameters:
        return False
    if getattr(model, "_harness_bucket_layout_pinned", False):
        return True  # pushing the parameters twice would list each twice in the rebuild
    reason = _too_late(model)
    if reason is not None:
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
        warnings.warn(message, CommHookConflictWarning, stacklevel=3)
        return False
    model.reducer._push_all_rebuilt_params()
    model._harness_bucket_layout_pinned = True
    return True


def install(model, mode: "bool | str" = True, *, best_effort: bool = False) -> bool:
    """Make `model`'s gradient reduction resume-exact: `mode` True or "fixed_layout" pins the bucket layout,
    "rank_ordered" registers `rank_ordered_allreduce_hook`, False does nothing. Returns whether it did.

    Pinning after the model's first forward raises `BucketLayoutError` (`best_effort=True`: warns and
    returns False), see `pin_bucket_layout`.

    The hook is not registered (False) when `model` is not DDP (nothing to do), runs on one rank (DDP's
    reduction is then the identity), or already has a comm hook: DDP allows only one, so the existing
    hook is kept and a `CommHookConflictWarning` says that the resumed run may not be bit-exact at 3 or
    more ranks unless that hook is order-invariant too.
    """
    if mode is False:
        return False
    if mode is True or mode == "fixed_layout":
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
