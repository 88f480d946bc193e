"""harness.checkpoint.reduction at 3 gloo ranks: the rank-ordered hooks give the same bits whatever the
bucket layout, the pinned layout makes a fresh process reduce like one that has run for a while, the
ready-order layout the checkpointer records and restores (its default) makes a resumed process reduce
like the uninterrupted one, and the checkpointer installs them as its knob says; the pinning rules
(before the first forward only) at 2 ranks too, the ready-order resume at 2 and 4 ranks.

One job of 3 ranks (this file run as a script by the shared warm launcher, `pool`) runs every check
once, one job of 2 ranks the pinning checks, one of 4 ranks the ready-order resume; each test asserts
its own check's outcome. A check fails on a rank by raising; the error names it.
"""

import itertools
import json
import os
import sys
import time
import traceback
import warnings

import pytest
import torch
import torch.distributed as dist

from harness.checkpoint import Checkpointer, ProjectConfiguration
from harness.launch import LaunchSpec
from harness.checkpoint.reduction import (BucketLayoutError, BucketLayoutWarning, CommHookConflictWarning,
                                          bucket_layout, bucket_layout_state, install, pin_bucket_layout,
                                          rank_ordered_allgather_hook, rank_ordered_allreduce_hook,
                                          restore_bucket_layout, track_bucket_layout)

WORLD = 3


def raw(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


class Mixed(torch.nn.Module):
    """Parameters of three dtypes (DDP buckets hold one dtype each), sizes not divisible by 3."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(10, 17)
        self.b = torch.nn.Linear(17, 13).double()
        self.c = torch.nn.Linear(13, 5).bfloat16()
        self.d = torch.nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x)).double()
        h = torch.tanh(self.b(h)).bfloat16()
        return self.d(self.c(h).float())


class MLP(torch.nn.Sequential):
    def __init__(self):
        super().__init__(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 64), torch.nn.GELU(),
                         torch.nn.Linear(64, 4))


def batches(rank: int, step: int, n: int = 3, dim: int = 10):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return [torch.randn(8, dim, generator=g) for _ in range(n)]


def local_grads(module_cls, xs) -> list[torch.Tensor]:
    """This rank's own gradients (summed over the micro-batches), without any reduction."""
    torch.manual_seed(0)
    m = module_cls()
    for x in xs:
        m(x).float().square().mean().backward()
    return [p.grad.clone() for p in m.parameters()]


def rank_ordered_reference(module_cls, xs) -> list[bytes]:
    """The documented arithmetic: ((g_0 * s + g_1 * s) + g_2 * s), s = 1 / W, in each parameter's dtype."""
    mine = local_grads(module_cls, xs)
    out = []
    for g in mine:
        wide = g.float() if g.dtype == torch.bfloat16 else g  # gathered as exact fp32
        parts = [torch.empty_like(wide) for _ in range(WORLD)]
        dist.all_gather(parts, wide)
        parts = [p.to(g.dtype).mul(1.0 / WORLD) for p in parts]
        acc = parts[0] + parts[1]
        for p in parts[2:]:
            acc = acc + p
        out.append(raw(acc))
    return out


def ddp_grads(module_cls, hook, xs, schedule, **ddp_kw) -> list[list[bytes]]:
    """Gradients of one DDP model after each of its iterations (the first with DDP's first-iteration
    layout, the later ones with the rebuilt one): "acc" runs the micro-batches under no_sync but the
    last, "one" a single backward of the first micro-batch."""
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(module_cls(), **ddp_kw)
    if hook is not None:
        model.register_comm_hook(None, hook)
    out = []
    for kind in schedule:
        for p in model.parameters():
            p.grad = None
        if kind == "acc":
            with model.no_sync():
                for x in xs[:-1]:
                    model(x).float().square().mean().backward()
            model(xs[-1]).float().square().mean().backward()
        else:
            model(xs[0]).float().square().mean().backward()
        out.append([raw(p.grad) for p in model.parameters()])
    return out


LAYOUTS = [dict(), dict(bucket_cap_mb=0.0005, gradient_as_bucket_view=True)]  # one bucket per dtype; one per parameter


# -- the checks (run on every rank; raise on failure) ----------------------------------------------

def check_hooks_layout_invariant(rank):
    """Both hooks, two bucket layouts, first iteration and after the rebuild, with no_sync accumulation
    and without: every result equals the rank-ordered reference, byte for byte."""
    xs = batches(rank, 1)
    ref_acc = rank_ordered_reference(Mixed, xs)
    ref_one = rank_ordered_reference(Mixed, xs[:1])
    schedule = ["acc", "one", "acc"]  # first iteration (initial layout), then rebuilt buckets
    expected = [ref_acc if kind == "acc" else ref_one for kind in schedule]
    for hook, layout in itertools.product((rank_ordered_allgather_hook, rank_ordered_allreduce_hook), LAYOUTS):
        got = ddp_grads(Mixed, hook, xs, schedule, **layout)
        for i, (g, e) in enumerate(zip(got, expected)):
            assert g == e, (hook.__name__, layout, f"iteration {i + 1} ({schedule[i]})")


def check_default_allreduce_premultiplies(rank):
    """DDP's own reduction at 3 ranks: every element is some ordering of the sum of g_r * (1/W) (the
    hook's arithmetic up to order), and not of g_r / W: the documented semantics are DDP's."""
    xs = batches(rank, 2, n=1, dim=16)
    got = ddp_grads(MLP, None, xs, ["one"])[0]
    mine = local_grads(MLP, xs)
    for g, got_raw in zip(mine, got):
        parts = [torch.empty_like(g) for _ in range(WORLD)]
        dist.all_gather(parts, g)
        result = torch.frombuffer(bytearray(got_raw), dtype=torch.int32)
        for scale, expect_all in ((lambda t: t * (1.0 / WORLD), True), (lambda t: t / WORLD, False)):
            scaled = [scale(p) for p in parts]
            hit = torch.zeros(g.numel(), dtype=torch.bool)
            for order in itertools.permutations(range(WORLD)):
                acc = scaled[order[0]] + scaled[order[1]]
                for j in order[2:]:
                    acc = acc + scaled[j]
                hit |= acc.reshape(-1).view(torch.int32) == result
            assert bool(hit.all()) == expect_all or (not expect_all and g.numel() < 64), (tuple(g.shape), expect_all)


def resumed_vs_continued(rank, pin: bool) -> tuple[list[bytes], list[bytes]]:
    """DDP's own all-reduce: step 2 of a process that ran step 1, and the same step 2 run as the first
    iteration of a fresh process (a resume) from the same weights."""
    xs1, xs2 = batches(rank, 1, n=1, dim=16), batches(rank, 2, n=1, dim=16)
    torch.manual_seed(0)
    a = torch.nn.parallel.DistributedDataParallel(MLP())
    if pin:
        assert pin_bucket_layout(a)
    a(xs1[0]).square().mean().backward()
    with torch.no_grad():
        for p in a.parameters():
            p -= 0.1 * p.grad
            p.grad = None
    b = torch.nn.parallel.DistributedDataParallel(MLP())
    b.module.load_state_dict(a.module.state_dict())
    if pin:
        assert pin_bucket_layout(b)
    a(xs2[0]).square().mean().backward()
    b(xs2[0]).square().mean().backward()
    return [raw(p.grad) for p in a.parameters()], [raw(p.grad) for p in b.parameters()]


def check_unpinned_first_iteration_differs(rank):
    """The finding, at unit level: without the pinned layout a fresh process's first reduction differs."""
    continued, resumed = resumed_vs_continued(rank, pin=False)
    assert continued != resumed


def check_pinned_first_iteration_matches(rank):
    continued, resumed = resumed_vs_continued(rank, pin=True)
    assert continued == resumed


def check_checkpointer_knob(rank, project_dir):
    def ddp():
        torch.manual_seed(0)
        return torch.nn.parallel.DistributedDataParallel(MLP())

    m = Checkpointer(ProjectConfiguration(project_dir)).prepare(ddp())
    assert m._harness_bucket_layout_pinned == "ready_order" and not m._comm_hooks
    m = Checkpointer(ProjectConfiguration(project_dir), deterministic_reduction="fixed_layout").prepare(ddp())
    assert m._harness_bucket_layout_pinned == "parameter_order" and not m._comm_hooks
    m = Checkpointer(ProjectConfiguration(project_dir), deterministic_reduction=False).prepare(ddp())
    assert not getattr(m, "_harness_bucket_layout_pinned", False) and not m._comm_hooks
    m = Checkpointer(ProjectConfiguration(project_dir), deterministic_reduction="rank_ordered").prepare(ddp())
    assert [h for h, _ in m._comm_hooks] == [rank_ordered_allreduce_hook]
    # a user's own hook: the pinned layout keeps it; rank_ordered warns and keeps it too
    user = ddp()
    user.register_comm_hook(None, rank_ordered_allgather_hook)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Checkpointer(ProjectConfiguration(project_dir)).prepare(user)
    assert user._harness_bucket_layout_pinned
    user = ddp()
    user.register_comm_hook(None, rank_ordered_allgather_hook)
    with pytest.warns(CommHookConflictWarning, match="already has a comm hook"):
        Checkpointer(ProjectConfiguration(project_dir), deterministic_reduction="rank_ordered").prepare(user)
    assert [h for h, _ in user._comm_hooks] == [rank_ordered_allgather_hook]
    # too late: the model already ran (and rebuilt its buckets): an error, or with best_effort a warning
    late = ddp()
    late(torch.randn(2, 16)).sum().backward()
    late(torch.randn(2, 16)).sum().backward()
    with pytest.raises(BucketLayoutError, match="already rebuilt its buckets"):
        Checkpointer(ProjectConfiguration(project_dir)).prepare(late)
    with pytest.warns(CommHookConflictWarning, match="cannot pin"):
        assert not pin_bucket_layout(late, best_effort=True)
    assert not getattr(late, "_harness_bucket_layout_pinned", False)


def _recorded_events(trace_dir, fn):
    """Run fn() with the probe recording into trace_dir (as under the harness); the event rows it wrote."""
    from harness.probe import recorder

    before, env = recorder._recorder, os.environ.get("HARNESS_TRACE_DIR")
    os.environ["HARNESS_TRACE_DIR"], recorder._recorder = trace_dir, None
    try:
        fn()
        rec = recorder.get()
        with open(os.path.join(trace_dir, f"rank{rec.rank}.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        os.close(rec.fd)
    finally:
        recorder._recorder = before
        if env is None:
            del os.environ["HARNESS_TRACE_DIR"]
        else:
            os.environ["HARNESS_TRACE_DIR"] = env
    return [row for row in rows if row["kind"] == "event"]


def check_pin_only_before_the_first_forward(rank, project_dir):
    """Issue 17 item 9. Before the first forward the pin takes (DDP's one rebuild runs at that forward, where
    unpinned it runs at the second). After one forward+backward, and after a forward alone, it raises (with
    best_effort: warns, returns False), never marks the model pinned, marks why, records a ddp.pin_failed
    probe event; and pushes nothing: the model goes on training as DDP left it."""
    x = batches(rank, 3, n=1, dim=16)[0]

    def ddp():
        torch.manual_seed(0)
        return torch.nn.parallel.DistributedDataParallel(MLP())

    early = ddp()
    assert pin_bucket_layout(early) is True and early._harness_bucket_layout_pinned
    early(x).square().mean().backward()
    assert early._has_rebuilt_buckets  # the pinned rebuild ran at the first forward
    late = ddp()
    late(x).square().mean().backward()
    assert not late._has_rebuilt_buckets  # unpinned: not yet (the push would return early in C++)

    def refuse():
        with pytest.raises(BucketLayoutError, match="can only be pinned before the first forward"):
            pin_bucket_layout(late)

    events = _recorded_events(os.path.join(project_dir, "trace"), refuse)
    assert [e["name"] for e in events] == ["ddp.pin_failed"] and "forward" in events[0]["info"]["reason"], events
    assert not getattr(late, "_harness_bucket_layout_pinned", False)
    assert late._harness_bucket_layout_pin_failed == "the model has already run a forward pass"
    with pytest.warns(CommHookConflictWarning, match="can only be pinned before the first forward"):
        assert pin_bucket_layout(late, best_effort=True) is False
    with pytest.raises(BucketLayoutError):
        Checkpointer(ProjectConfiguration(project_dir)).prepare(late)
    assert not getattr(late, "_harness_bucket_layout_pinned", False)
    late(x).square().mean().backward()  # nothing was pushed: DDP rebuilds in readiness order, no assertion
    assert late._has_rebuilt_buckets
    forward_only = ddp()
    forward_only(x)  # no backward yet: a push now would list every parameter twice
    with pytest.raises(BucketLayoutError, match="already run a forward pass"):
        pin_bucket_layout(forward_only)


class Reversed(torch.nn.Module):
    """Registered first, used last, sizes far apart: DDP's readiness order (head, mid, stem) is not parameter
    order, and with 4 KiB buckets (mid's weight alone fills one) the layout has two buckets."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(48, 3)
        self.mid = torch.nn.Linear(24, 48)
        self.stem = torch.nn.Linear(16, 24)

    def forward(self, x):
        return self.head(torch.tanh(self.mid(torch.tanh(self.stem(x)))))


SMALL_BUCKETS = dict(bucket_cap_mb=0.004)


def _ddp_reversed(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return torch.nn.parallel.DistributedDataParallel(Reversed(), **{**SMALL_BUCKETS, **kw})


def _train(model, opt, rank: int, steps) -> list[bytes]:
    """One SGD step per entry of `steps` (the step number picks the batch); the parameters' bytes after the last."""
    for step in steps:
        x = batches(rank, 10 + step, n=1, dim=16)[0]
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()
    return [raw(p) for p in model.parameters()]


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _logged_layout(model) -> list[list[int]]:
    """DDP's own record of its rebuilt buckets (logged at the first sampled forward after the rebuild)."""
    text = model._get_ddp_logging_data()["rebuilt_per_bucket_param_indices"]
    return [[int(i) for i in bucket.split()] for bucket in text.split(", ")]


def _resume(project_dir, path, *, drop_restore: bool = False, **ddp_kw):
    """A resumed process: a fresh DDP model (other initial weights) and optimizer, prepared and loaded."""
    from harness.checkpoint import manager

    model = _ddp_reversed(seed=1, **ddp_kw)
    opt = _sgd(model)
    ckpt = Checkpointer(ProjectConfiguration(project_dir))
    ckpt.prepare(model, opt)
    restore = manager.reduction.restore_bucket_layout
    if drop_restore:  # the mutant: the layout is recorded but never restored
        manager.reduction.restore_bucket_layout = lambda m, state: None
    try:
        ckpt.load_state(path)
    finally:
        manager.reduction.restore_bucket_layout = restore
    return model, opt


def check_ready_order_layout_resumes_exactly(rank, project_dir):
    """Issue 19 part 4. The checkpointer's default leaves DDP to rebuild its buckets in readiness order
    and records that layout; a resumed process restores it before its first forward: (a) its steps are
    bit-exact with the uninterrupted process's, (b) its layout is the one DDP itself rebuilt in an
    uninterrupted process without the checkpointer (DDP's own log of it), not parameter order, and
    (c) a mutant that drops the restore diverges (at 3 or more ranks). The save after step 1 finds
    DDP's rebuild pending (it runs at the next forward) and runs it itself: the uninterrupted process's
    steps stay those of the plain DDP twin. With DDP's gradients as bucket views too."""
    for i, ddp_kw in enumerate(({}, {"gradient_as_bucket_view": True})):
        _ready_order_case(rank, os.path.join(project_dir, str(i)), ddp_kw)


def _ready_order_case(rank, project_dir, ddp_kw):
    world = dist.get_world_size()
    twin = _ddp_reversed(**ddp_kw)  # plain DDP, no checkpointer
    twin_opt = _sgd(twin)
    twin_after = [_train(twin, twin_opt, rank, [s]) for s in (1, 2, 3)]
    ddp_layout = _logged_layout(twin)
    assert ddp_layout == [[1, 0, 3, 2], [5, 4]], ddp_layout  # readiness order: head, mid, stem (two buckets)

    model = _ddp_reversed(**ddp_kw)
    opt = _sgd(model)
    ckpt = Checkpointer(ProjectConfiguration(project_dir))
    ckpt.prepare(model, opt)
    assert model._harness_bucket_layout_pinned == "ready_order"
    assert _train(model, opt, rank, [1]) == twin_after[0]
    assert not model._has_rebuilt_buckets  # DDP rebuilds at the next forward...
    path = ckpt.save_state(os.path.join(project_dir, "step1"))
    assert model._has_rebuilt_buckets  # ...or at the save, with the same list
    with open(os.path.join(path, "shared", "state.json")) as f:
        recorded = json.load(f)["ddp_bucket_layouts"]
    assert [e["buckets"] for e in recorded if e] == [ddp_layout], recorded
    uninterrupted = [_train(model, opt, rank, [s]) for s in (2, 3)]
    assert uninterrupted == twin_after[1:]
    assert bucket_layout(model) == ddp_layout

    resumed, resumed_opt = _resume(project_dir, path, **ddp_kw)
    assert resumed._has_rebuilt_buckets and resumed._harness_bucket_layout_pinned == "ready_order"
    assert bucket_layout(resumed) == ddp_layout  # (b), before its first forward
    assert [_train(resumed, resumed_opt, rank, [s]) for s in (2, 3)] == uninterrupted  # (a)
    assert bucket_layout(resumed) == ddp_layout and _logged_layout(resumed) == [[0, 1, 2, 3], [4, 5]]
    # (DDP logs indices into its reducer's list, here the recorded order: the same parameters, relabelled)

    mutant, mutant_opt = _resume(project_dir, path, drop_restore=True, **ddp_kw)
    diverged = _train(mutant, mutant_opt, rank, [2]) != uninterrupted[0]
    assert diverged == (world >= 3), (world, diverged)  # (c); at 2 ranks a + b == b + a hides it


def check_layout_fallbacks(rank, project_dir):
    """A recorded layout that cannot be restored exactly: one BucketLayoutWarning line naming why, and
    parameter order pinned instead; a checkpoint saved before any synchronizing backward records none and
    its resume rebuilds as a fresh process; a load after the first forward warns and changes nothing."""
    x = batches(rank, 4, n=1, dim=16)[0]
    params_layout = _ddp_reversed()
    pin_bucket_layout(params_layout)
    params_layout(x).square().mean().backward()
    parameter_order = bucket_layout(params_layout)
    assert parameter_order == [[0, 1, 2], [3, 4, 5]], parameter_order

    good = {"order": "ready_order", "buckets": [[1, 0, 3, 2], [5, 4]],
            "params": [["float32", n] for n in (144, 3, 1152, 48, 384, 24)]}
    cases = {
        "no layout": (None, "records none"),
        "other parameters": ({**good, "params": good["params"][:-1] + [["float32", 25]]}, "parameters"),
        "not a permutation": ({**good, "buckets": [[1, 0, 3, 2], [5, 5]]}, "parameters"),
        "other bucket size": (good, "rebuilt"),
    }
    for name, (state, why) in cases.items():
        m = _ddp_reversed(**(dict(bucket_cap_mb=1) if name == "other bucket size" else {}))
        assert track_bucket_layout(m)
        with pytest.warns(BucketLayoutWarning, match=why) as caught:
            assert restore_bucket_layout(m, state) == "parameter_order", name
        assert len(caught) == 1 and "\n" not in str(caught[0].message), name
        m(x).square().mean().backward()
        expect = [[0, 1, 2, 3, 4, 5]] if name == "other bucket size" else parameter_order
        assert bucket_layout(m) == expect and m._harness_bucket_layout_pinned == "parameter_order", name
        assert bucket_layout_state(m)["order"] == "parameter_order"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = _ddp_reversed()
        assert track_bucket_layout(m)
        assert restore_bucket_layout(m, good) == "ready_order" and bucket_layout(m) == good["buckets"]
        assert restore_bucket_layout(m, good) == "ready_order"  # a second load: already that layout
        fresh = _ddp_reversed()
        assert track_bucket_layout(fresh)
        assert bucket_layout_state(fresh) == {"order": "ready_order", "buckets": None}  # nothing listed yet
        assert restore_bucket_layout(fresh, {"order": "ready_order", "buckets": None}) == "fresh"
        fresh(x).square().mean().backward()
        fresh(x).square().mean().backward()
        assert bucket_layout(fresh) == good["buckets"]  # DDP's own rebuild
        pinned = _ddp_reversed()
        assert track_bucket_layout(pinned)
        assert restore_bucket_layout(pinned, {**good, "order": "parameter_order"}) == "parameter_order"
        pinned(x).square().mean().backward()
        assert bucket_layout(pinned) == parameter_order
    # a comm hook registered before the restore is registered again on the rebuilt reducer
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    calls = []

    def counting_hook(state, bucket):
        calls.append(bucket.index())
        return allreduce_hook(state, bucket)

    hooked = _ddp_reversed()
    hooked.register_comm_hook(None, counting_hook)
    assert track_bucket_layout(hooked)
    assert restore_bucket_layout(hooked, good) == "ready_order"
    hooked(x).square().mean().backward()
    assert sorted(calls) == [0, 1], calls
    late = _ddp_reversed()
    assert track_bucket_layout(late)
    late(x).square().mean().backward()
    with pytest.warns(BucketLayoutWarning, match="before the first forward"):
        assert restore_bucket_layout(late, good) is None
    assert late._harness_bucket_layout_pin_failed == "the model has already run a forward pass"


def check_mixed_dtypes_restore(rank):
    """A model of three dtypes (a bucket per dtype): the layout recorded from a process that ran a step
    and rebuilt, restored into a new process with the same weights, gives its first step the same
    gradients, bit for bit, as the recording process's second step; without the restore they differ."""
    xs1, xs2 = batches(rank, 5, n=1), batches(rank, 6, n=1)

    def ddp():
        torch.manual_seed(0)
        return torch.nn.parallel.DistributedDataParallel(Mixed())

    first = ddp()
    assert track_bucket_layout(first)
    first(xs1[0]).float().square().mean().backward()
    state = bucket_layout_state(first)  # runs the pending rebuild
    with torch.no_grad():
        for p in first.parameters():
            p -= 0.1 * p.grad
            p.grad = None
    got = {}
    for restore in (True, False):
        second = ddp()
        second.module.load_state_dict(first.module.state_dict())
        assert track_bucket_layout(second)
        if restore:
            assert restore_bucket_layout(second, state) == "ready_order"
            assert sorted(bucket_layout(second)) == sorted(state["buckets"])
        second(xs2[0]).float().square().mean().backward()
        got[restore] = [raw(p.grad) for p in second.parameters()]
    first(xs2[0]).float().square().mean().backward()
    continued = [raw(p.grad) for p in first.parameters()]
    assert got[True] == continued
    assert got[False] != continued


CHECKS_ALL = {
    "hooks_layout_invariant": check_hooks_layout_invariant,
    "default_allreduce_premultiplies": check_default_allreduce_premultiplies,
    "unpinned_first_iteration_differs": check_unpinned_first_iteration_differs,
    "pinned_first_iteration_matches": check_pinned_first_iteration_matches,
    "checkpointer_knob": check_checkpointer_knob,
    "pin_only_before_the_first_forward": check_pin_only_before_the_first_forward,
    "world_size_one": lambda rank, project_dir: check_world_size_one(rank, project_dir),
    "ready_order_layout_resumes_exactly": check_ready_order_layout_resumes_exactly,
    "layout_fallbacks": check_layout_fallbacks,
    "mixed_dtypes_restore": check_mixed_dtypes_restore,
}
# also run at 2 ranks
PIN_CHECKS = ("pinned_first_iteration_matches", "pin_only_before_the_first_forward", "ready_order_layout_resumes_exactly")
FOUR_RANK_CHECKS = ("ready_order_layout_resumes_exactly",)


class FakeBucket:
    def __init__(self, t):
        self.t = t

    def buffer(self):
        return self.t


def check_world_size_one(rank, project_dir):
    """A group of one rank (each rank its own): the hooks return the bucket untouched; nothing is installed."""
    alone = [dist.new_group([r]) for r in range(WORLD)][rank]  # new_group is collective: every rank makes each
    t = torch.randn(7)
    before = raw(t)
    for hook in (rank_ordered_allgather_hook, rank_ordered_allreduce_hook):
        assert raw(hook(alone, FakeBucket(t)).wait()) == before
    torch.manual_seed(0)
    m = torch.nn.parallel.DistributedDataParallel(MLP(), process_group=alone)
    assert not install(m, True) and not install(m, "rank_ordered") and not m._comm_hooks
    assert Checkpointer(ProjectConfiguration(project_dir)).prepare(m) is m


def main(out_dir: str, only: str = "") -> None:
    """One rank of the job (run as a script by the warm launcher, torchrun's environment); `only`: the
    checks to run, comma-separated (default: all)."""
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {}
    for name, fn in CHECKS_ALL.items():
        if only and name not in only.split(","):
            continue
        t0 = time.perf_counter()
        try:
            if "project_dir" in fn.__code__.co_varnames[:fn.__code__.co_argcount]:
                fn(rank, os.path.join(out_dir, f"proj-{name}"))
            else:
                fn(rank)
            results[name] = None
        except BaseException:
            results[name] = traceback.format_exc()
        dist.barrier()
        print(f"rank {rank}: {name} {time.perf_counter() - t0:.2f} s", flush=True)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


def _launch(pool, out, nproc: int, checks) -> dict:
    res = pool.launch(LaunchSpec(nproc=nproc, log_dir=str(out / "logs"), script=os.path.abspath(__file__),
                                 args=(str(out), ",".join(checks)), timeout_s=240))
    logs = "\n".join(f"--- rank {e.rank}: {e.describe()}\n" + open(e.log_path).read()[-3000:] for e in res.exits)
    assert res.ok, logs
    results: dict = {name: [] for name in checks}
    for r in range(nproc):
        with open(os.path.join(out, f"rank{r}.json")) as f:
            ran = json.load(f)
        assert sorted(ran) == sorted(checks), (r, sorted(ran))  # every check ran on every rank
        for name, err in ran.items():
            if err:
                results[name].append(f"rank {r}: {err}")
    return results


@pytest.fixture(scope="module")
def outcomes(pool, tmp_path_factory) -> dict:
    return _launch(pool, tmp_path_factory.mktemp("reduction"), WORLD, list(CHECKS_ALL))


@pytest.fixture(scope="module")
def outcomes_two_ranks(pool, tmp_path_factory) -> dict:
    return _launch(pool, tmp_path_factory.mktemp("reduction2"), 2, PIN_CHECKS)


@pytest.mark.parametrize("check", sorted(CHECKS_ALL))
def test_reduction(outcomes, check):
    assert not outcomes[check], "\n".join(outcomes[check])


@pytest.mark.parametrize("check", PIN_CHECKS)
def test_pinning_at_two_ranks(outcomes_two_ranks, check):
    assert not outcomes_two_ranks[check], "\n".join(outcomes_two_ranks[check])


@pytest.fixture(scope="module")
def outcomes_four_ranks(pool, tmp_path_factory) -> dict:
    return _launch(pool, tmp_path_factory.mktemp("reduction4"), 4, FOUR_RANK_CHECKS)


@pytest.mark.parametrize("check", FOUR_RANK_CHECKS)
def test_ready_order_at_four_ranks(outcomes_four_ranks, check):
    assert not outcomes_four_ranks[check], "\n".join(outcomes_four_ranks[check])


def test_knob_refuses_unknown_values():
    with pytest.raises(ValueError, match="deterministic_reduction"):
        Checkpointer(deterministic_reduction="sorted")
    with pytest.raises(ValueError, match="deterministic_reduction"):
        install(torch.nn.Linear(2, 2), "sorted")


if __name__ == "__main__":
    main(*sys.argv[1:3])
