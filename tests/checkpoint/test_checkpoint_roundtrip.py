"""Round trips of the reference checkpointer: the loaded state equals the saved state byte for byte."""

from __future__ import annotations

import json
import os
import random
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from support.checkpoint_jobs import full_state, make_job, next_draws, state_bytes, train
from harness.checkpoint import CheckpointSaveError, Checkpointer, ProjectConfiguration, tree
from harness.checkpoint.files import FileRecord, read_tensors, write_tensors

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.8, 0.95)),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
}
SCHEDULERS = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7),
    "onecycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=50, cycle_momentum=False),
    "warmup": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / 4)),
    "plateau-free-exp": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
}


def _build(widths, dtype, opt_name, sched_name, seed):
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    model = torch.nn.Sequential(*layers).to(dtype)
    model.register_buffer("seen", torch.zeros((), dtype=torch.int64))
    opt = OPTIMIZERS[opt_name](model.parameters())
    sched = SCHEDULERS[sched_name](opt)
    return model, opt, sched


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(widths=st.lists(st.integers(1, 9), min_size=2, max_size=4), dtype=st.sampled_from(DTYPES),
       opt_name=st.sampled_from(sorted(OPTIMIZERS)), sched_name=st.sampled_from(sorted(SCHEDULERS)),
       steps=st.integers(0, 4), seed=st.integers(0, 2**31 - 1))
def test_roundtrip_is_byte_exact(widths, dtype, opt_name, sched_name, steps, seed):
    model, opt, sched = _build(widths, dtype, opt_name, sched_name, seed)
    for _ in range(steps):
        model(torch.randn(3, widths[0], dtype=dtype)).float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    gens = [torch.Generator().manual_seed(seed), np.random.default_rng(seed), random.Random(seed)]
    for g in gens[:2]:
        (torch.rand(2, generator=g) if isinstance(g, torch.Generator) else g.random())
    random.seed(seed), np.random.seed(seed % 2**32), torch.manual_seed(seed + 1)
    with tempfile.TemporaryDirectory() as d:
        ckpt = Checkpointer(ProjectConfiguration(d, automatic_checkpoint_naming=True))
        ckpt.prepare(model, opt, sched)
        ckpt.register_for_checkpointing(*gens)
        ckpt.step = steps
        ckpt.save_state()
        saved = state_bytes({"m": model.state_dict(), "o": opt.state_dict(), "s": sched.state_dict()})
        expected_draws = next_draws(gens)

        model2, opt2, sched2 = _build(widths, dtype, opt_name, sched_name, seed + 7)
        gens2 = [torch.Generator(), np.random.default_rng(0), random.Random(0)]
        ckpt2 = Checkpointer(ProjectConfiguration(d, automatic_checkpoint_naming=True))
        ckpt2.prepare(model2, opt2, sched2)
        ckpt2.register_for_checkpointing(*gens2)
        ckpt2.load_state()
        assert state_bytes({"m": model2.state_dict(), "o": opt2.state_dict(), "s": sched2.state_dict()}) == saved
        assert next_draws(gens2) == expected_draws
        assert ckpt2.step == steps


def test_optimizer_state_keeps_its_dtype_when_params_are_bf16(tmp_path):
    """torch's load_state_dict casts optimizer state to the param dtype; the checkpointer undoes it."""
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3, dtype=torch.bfloat16)).float().sum().backward()
    opt.step()
    for p in model.parameters():  # fp32 momentum for bf16 params, as mixed-precision code keeps it
        opt.state[p]["momentum_buffer"] = opt.state[p]["momentum_buffer"].float() / 3
    saved = state_bytes(opt.state_dict())
    ckpt = Checkpointer()
    ckpt.prepare(model, opt)
    ckpt.save_state(tmp_path / "c")
    model2 = torch.nn.Linear(3, 2).to(torch.bfloat16)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    ckpt2 = Checkpointer()
    ckpt2.prepare(model2, opt2)
    ckpt2.load_state(tmp_path / "c")
    assert state_bytes(opt2.state_dict()) == saved


@pytest.mark.parametrize("stop", [3, 10, 13])  # mid-epoch, epoch boundary (10 batches/epoch), next epoch
def test_resume_continues_exactly(tmp_path, stop):
    full = train(make_job(tmp_path / "a"), 25)
    first = make_job(tmp_path / "b")
    train(first, stop)
    first[0].save_state()
    resumed = make_job(tmp_path / "b", seed=123)  # a different init: everything must come from the checkpoint
    resumed[0].load_state()
    assert train(resumed, 25) == full[stop:]


def test_resume_state_equals_saved_state(tmp_path):
    job = make_job(tmp_path)
    train(job, 7)
    job[0].save_state()
    saved = full_state(job)
    job2 = make_job(tmp_path, seed=5)
    job2[0].load_state()
    assert full_state(job2) == saved


def test_async_save_equals_sync_and_does_not_block_training(tmp_path):
    job = make_job(tmp_path / "async")
    train(job, 6)
    before = full_state(job)
    path = job[0].save_state(blocking=False)
    train(job, 9)  # training goes on and changes everything while the write runs
    job[0].wait()
    restored = make_job(tmp_path / "async", seed=3)
    assert restored[0].load_state(path) == path
    assert full_state(restored) == before


def test_async_failure_surfaces_at_next_call(tmp_path, monkeypatch):
    job = make_job(tmp_path)
    train(job, 2)
    job[0].save_state()
    import harness.checkpoint.files as files

    monkeypatch.setattr(files, "write_tensors", lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    job[0].save_state(blocking=False)  # returns at once; the failure happens in the background
    with pytest.raises(CheckpointSaveError, match="rank 0: OSError.*No space left"):
        job[0].wait()
    monkeypatch.undo()
    job[0].wait()  # the error is raised once
    assert job[0].load_state().endswith("checkpoint_0")


def test_total_limit_rotates_after_commit(tmp_path):
    job = make_job(tmp_path, total_limit=2)
    for step in range(1, 6):
        train(job, step)
        job[0].save_state()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["checkpoint_3", "checkpoint_4"]


def test_iteration_is_restored_and_collisions_resolve(tmp_path):
    job = make_job(tmp_path)
    job[0].save_state()
    job[0].save_state()
    again = make_job(tmp_path)
    again[0].load_state()
    assert again[0].project_configuration.iteration == 2
    assert again[0].save_state().endswith("checkpoint_2")
    fresh = make_job(tmp_path)  # restarted without load_state: iteration is 0 again
    with pytest.warns(UserWarning, match="checkpoint_0 already exists"):
        assert fresh[0].save_state().endswith("checkpoint_3")


def test_sharded_model_files_and_index(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(4)])
    ckpt = Checkpointer(max_shard_size="20KB")
    ckpt.prepare(model)
    path = ckpt.save_state(tmp_path / "c")
    shared = sorted(os.listdir(os.path.join(path, "shared")))
    shards = [f for f in shared if f.startswith("model_0-")]
    assert len(shards) >= 3 and "model_0.safetensors.index.json" in shared
    with open(os.path.join(path, "shared", "model_0.safetensors.index.json")) as f:
        index = json.load(f)
    assert set(index["weight_map"]) == set(model.state_dict())
    merged = {k: v for s in shards for k, v in load_file(os.path.join(path, "shared", s)).items()}
    assert state_bytes(merged) == state_bytes(dict(model.state_dict()))
    model2 = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(4)])
    ckpt2 = Checkpointer(max_shard_size="20KB")
    ckpt2.prepare(model2)
    ckpt2.load_state(path)
    assert state_bytes(model2.state_dict()) == state_bytes(model.state_dict())


def test_save_hook_files_join_the_checkpoint_and_load_hook_runs(tmp_path):
    model = torch.nn.Linear(2, 2)
    ckpt = Checkpointer()
    ckpt.prepare(model)
    seen = []
    ckpt.register_save_state_pre_hook(lambda models, weights, out: open(os.path.join(out, "note.txt"), "w").write("hi"))
    handle = ckpt.register_load_state_pre_hook(lambda models, d: seen.append(d))
    path = ckpt.save_state(tmp_path / "c")
    with open(os.path.join(path, "manifest.json")) as f:
        assert "note.txt" in [r["path"] for r in json.load(f)["files"]["shared"]]
    ckpt.load_state(path)
    handle.remove()
    ckpt.load_state(path)
    assert seen == [path]


@settings(max_examples=60, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=5)
    | st.binary(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.integers(-5, 5), inner, max_size=3),
    max_leaves=12))
def test_tree_roundtrip_keeps_types_and_bits(value):
    tensors: dict = {}
    doc = tree.encode(value, "x", tensors)
    assert tree.decode(json.loads(json.dumps(doc)), tensors) == value or value != value
    assert repr(tree.decode(json.loads(json.dumps(doc)), tensors)) == repr(value)


def test_tree_refuses_objects_with_their_path():
    with pytest.raises(TypeError, match=r"opt/state/#0/fn: cannot checkpoint .*function"):
        tree.encode({"state": {0: {"fn": lambda: 0}}}, "opt", {})


def test_tensor_files_interoperate_with_safetensors(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.randn(2).bfloat16(),
               "d": torch.tensor(True), "e": torch.empty(0, 3), "scalar": torch.tensor(1.5)}
    size, digest = write_tensors(str(tmp_path / "ours.safetensors"), tensors, {"k": "v"})
    assert state_bytes(load_file(tmp_path / "ours.safetensors")) == state_bytes(tensors)
    save_file(tensors, tmp_path / "theirs.safetensors")
    import xxhash

    data = (tmp_path / "theirs.safetensors").read_bytes()
    loaded, _ = read_tensors(str(tmp_path / "theirs.safetensors"),
                             FileRecord("theirs.safetensors", len(data), xxhash.xxh3_128_hexdigest(data)))
    assert state_bytes(dict(sorted(loaded.items()))) == state_bytes(dict(sorted(tensors.items())))
    assert size == (tmp_path / "ours.safetensors").stat().st_size


def test_grad_scaler_and_per_rank_objects_roundtrip(tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(5):  # an inf gradient on step 2 halves the scale: hidden state that must survive
        loss = model(torch.ones(1, 2)).sum() * (float("inf") if i == 2 else 1.0)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    from support.checkpoint_jobs import Counter

    mine = Counter()
    mine.n = 42
    ckpt = Checkpointer()
    ckpt.prepare(model, opt, scaler)
    ckpt.register_for_checkpointing(mine, per_rank=True)
    path = ckpt.save_state(tmp_path / "c")
    assert "custom" in json.load(open(os.path.join(path, "rank0", "state.json")))
    scaler2 = torch.amp.GradScaler("cpu")
    mine2 = Counter()
    ckpt2 = Checkpointer()
    ckpt2.prepare(torch.nn.Linear(2, 1), torch.optim.SGD(model.parameters(), lr=0.1), scaler2)
    ckpt2.register_for_checkpointing(mine2, per_rank=True)
    ckpt2.load_state(path)
    assert scaler2.state_dict() == scaler.state_dict() and scaler2.get_scale() == 512.0
    assert mine2.n == 42


class _WithExtraState(torch.nn.Linear):
    """A module whose `get_extra_state` holds a tensor and bytes (they go to shared/state.safetensors)."""

    def __init__(self):
        super().__init__(2, 2)
        self.extra = {"blob": b"abc", "t": torch.arange(3.0), "n": 1}

    def get_extra_state(self):
        return self.extra

    def set_extra_state(self, state):
        self.extra = state


def test_model_extra_state_with_tensors_roundtrips(tmp_path):
    model = _WithExtraState()
    ckpt = Checkpointer()
    ckpt.prepare(model)
    path = ckpt.save_state(tmp_path / "c")
    again = _WithExtraState()
    again.extra = {}
    ckpt2 = Checkpointer()
    ckpt2.prepare(again)
    ckpt2.load_state(path)
    assert state_bytes(again.extra) == state_bytes(model.extra) and again.extra["blob"] == b"abc"
