"""Differential tests: one training script (tests/support/scripts/accel_twin.py) checkpointed by HF Accelerate's
`Accelerator(cpu=True)` or by our `Checkpointer`, the backend chosen by one line; 1, 2 and 3 gloo ranks.

Each backend trains uninterrupted (saving mid-epoch 1 with `save_state()`), then a new process resumes from that
checkpoint with `load_state()` and trains on. Every state (model, optimizer, scheduler, python/numpy/torch RNG,
the step counter) is compared tensor by tensor, as raw bytes, and every loss and batch:

- ours: restored == saved, and the resumed run is bit-identical to the uninterrupted one;
- Accelerate: restored == saved; resumed as is, it replays the epoch from its first batch (it does not save the
  data position); with its `skip_first_batches` recipe it is exact when the data order is a function of the
  epoch, and not with `DataLoader(shuffle=True)`; at 3 ranks its DDP sums the first resumed step in another order;
- ours vs Accelerate, when both see the same data: the states at the save, and the states each restores (also
  ours from Accelerate's checkpoint, converted), are equal; the folder names are the same.

The differences from Accelerate are asserted, so that a test fails when a documented claim stops being true.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from harness.launch import LaunchSpec

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support", "scripts",
                      "accel_twin.py")

pytestmark = [pytest.mark.slow,  # every test launches several processes
              pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="accelerate is not installed")]


def _launch(pool, tmp_path, name: str, world: int, backend: str, phase: str, data: str, *extra: str):
    """Run accel_twin.py on `world` ranks; returns the folder it wrote its dumps into."""
    out = tmp_path / name
    out.mkdir()
    logs = tmp_path / "logs" / name
    result = pool.launch(LaunchSpec(nproc=world, log_dir=str(logs), script=SCRIPT, timeout_s=240,
                                    args=("--backend", backend, "--phase", phase, "--data", data, *extra,
                                          str(tmp_path / f"project-{name.split('-')[0]}"), str(out))))
    errors = [(out / f"err{r}").read_text() for r in range(world) if (out / f"err{r}").exists()]
    assert not errors, "\n".join(errors)
    assert result.ok and all((out / f"ok{r}").exists() for r in range(world)), [
        (logs / f"rank{r}.log").read_text()[-3000:] for r in range(world) if (logs / f"rank{r}.log").exists()]
    return out


def _state(folder, tag: str, rank: int) -> dict:
    """A dump as {path: (dtype, shape, raw bytes)} for tensors and {path: value} for the rest (floats as hex)."""
    state = {key: (str(t.dtype), tuple(t.shape), t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
             for key, t in load_file(folder / f"{tag}-rank{rank}.safetensors").items()}
    with open(folder / f"{tag}-rank{rank}.json") as f:
        state.update(json.load(f))
    return state


def _differing(a: dict, b: dict) -> list[str]:
    return [k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def _losses(folder, phase: str, rank: int) -> dict:
    with open(folder / f"losses-{phase}-rank{rank}.json") as f:
        return json.load(f)


def _groups(keys) -> set[str]:
    """'/model/0.weight' -> 'model', '/rng/torch' -> 'rng/torch': what kind of state differs."""
    return {k.split("/")[1] if not k.startswith("/rng/") else "/".join(k.split("/")[1:3]) for k in keys}


@pytest.mark.parametrize("world", [1, 2])
def test_same_data_ours_exact_accelerate_needs_skip_first_batches(pool, tmp_path, world):
    """Both backends see the same data (a DistributedSampler, batches sharded as Accelerate shards them)."""
    run = {name: _launch(pool, tmp_path, name, world, backend, phase, "sampler", *extra)
           for name, backend, phase, extra in [("ours-full", "harness", "full", ()),
                                               ("ours-resume", "harness", "resume", ()),
                                               ("acc-full", "accelerate", "full", ()),
                                               ("acc-resume", "accelerate", "resume", ()),
                                               ("acc-skip", "accelerate", "resume", ("--skip-first-batches",))]}
    accelerate_checkpoint = tmp_path / "project-acc" / "checkpoints" / "checkpoint_0"
    run["ours-from-acc"] = _launch(pool, tmp_path, "ours-from-acc", world, "harness", "resume", "sampler",
                                   "--load-accelerate", str(accelerate_checkpoint))
    for rank in range(world):
        saved, final = {}, {}
        for backend in ("ours", "acc"):
            saved[backend] = _state(run[f"{backend}-full"], "saved", rank)
            final[backend] = _state(run[f"{backend}-full"], "final-full", rank)
            # Both restore exactly what was saved: model, optimizer, scheduler, every RNG, the step counter.
            assert _differing(_state(run[f"{backend}-resume"], "restored", rank), saved[backend]) == [], (backend, rank)

        # (c) The same training up to the save, and the same states restored from it, tensor by tensor.
        assert _differing(saved["ours"], saved["acc"]) == [], rank
        assert _differing(_state(run["ours-resume"], "restored", rank),
                          _state(run["acc-resume"], "restored", rank)) == [], rank
        # Accelerate's checkpoint loaded by ours (converted, pickle opt-in) restores the same states.
        assert _differing(_state(run["ours-from-acc"], "restored", rank),
                          _state(run["acc-resume"], "restored", rank)) == [], rank
        full, acc_full = _losses(run["ours-full"], "full", rank), _losses(run["acc-full"], "full", rank)
        assert full["losses"] == acc_full["losses"]
        assert full["world_size"] == acc_full["world_size"] == world
        model = "DistributedDataParallel" if world > 1 else "Sequential"
        assert (full["model"], acc_full["model"]) == (model, model)
        assert (full["loader"], acc_full["loader"]) == ("ResumableDataLoader", "DataLoaderShard")
        save_at = full["save_at"]
        assert save_at % full["batches_per_epoch"] not in (0, 1), "the save must fall mid-epoch"

        # (a) Ours resumed == ours uninterrupted, every loss and every byte of the final state.
        assert _losses(run["ours-resume"], "resume", rank)["losses"] == full["losses"][save_at:]
        assert _losses(run["ours-resume"], "resume", rank)["batches"] == full["batches"][save_at:]
        assert _differing(_state(run["ours-resume"], "final-resume", rank), final["ours"]) == [], rank

        # The same folder names; after a resume, ours names the next save checkpoint_1 (it restores `iteration`),
        # Accelerate does not restore it and refuses to overwrite checkpoint_0.
        assert sorted(os.listdir(tmp_path / "project-ours" / "checkpoints")) == ["checkpoint_0", "checkpoint_1"]
        assert sorted(os.listdir(tmp_path / "project-acc" / "checkpoints")) == ["checkpoint_0"]
        assert _losses(run["ours-resume"], "resume", rank)["next_save"] == os.path.join("checkpoints", "checkpoint_1")
        for name in ("acc-resume", "acc-skip"):
            assert "checkpoint_0 (0) already exists" in _losses(run[name], "resume", rank)["next_save"]

        # (b) Accelerate resumed as is: the resumed epoch starts again from its first batch (the data position
        # is not in its checkpoint), so it trains more steps on other batches and ends elsewhere.
        naive = _losses(run["acc-resume"], "resume", rank)
        epoch_start = save_at - save_at % full["batches_per_epoch"]
        assert naive["batches"] == full["batches"][epoch_start:]
        assert naive["losses"][0] != full["losses"][save_at]
        assert {"model", "optimizer", "train_state"} <= _groups(
            _differing(_state(run["acc-resume"], "final-resume", rank), final["acc"]))
        # With its documented recipe (set_epoch, then skip_first_batches on the resumed epoch) it is exact here.
        assert _losses(run["acc-skip"], "resume", rank)["losses"] == full["losses"][save_at:]
        assert _differing(_state(run["acc-skip"], "final-resume", rank), final["acc"]) == [], rank


@pytest.mark.parametrize("world", [1, 2])
def test_shuffled_loader_ours_exact_accelerate_skip_first_batches_is_not(pool, tmp_path, world):
    """`DataLoader(shuffle=True)` (ours: a DistributedSampler under 2 ranks, as ours does not shard). One process:
    ours trains exactly as Accelerate does up to the save (both draw what a plain DataLoader draws). One process:
    the order of an epoch is drawn from the global torch RNG when the epoch starts; Accelerate restores that RNG
    as it was at the save, mid-epoch, so the resumed epoch draws another order. Two processes: Accelerate draws
    the sampler a generator at prepare and does not save it, so the resumed epoch 1 repeats epoch 0's order.
    Either way `skip_first_batches` skips the wrong batches. Ours resumes exactly."""
    run = {name: _launch(pool, tmp_path, name, world, backend, phase, "shuffle", *extra)
           for name, backend, phase, extra in [("ours-full", "harness", "full", ()),
                                               ("ours-resume", "harness", "resume", ()),
                                               ("acc-full", "accelerate", "full", ()),
                                               ("acc-skip", "accelerate", "resume", ("--skip-first-batches",))]}
    if world == 1:  # ours draws what a plain DataLoader draws: one process trains as Accelerate does, up to the save
        full, acc_full = _losses(run["ours-full"], "full", 0), _losses(run["acc-full"], "full", 0)
        assert full["batches"][:full["save_at"]] == acc_full["batches"][:full["save_at"]]
        assert full["losses"][:full["save_at"]] == acc_full["losses"][:full["save_at"]]
        assert _differing(_state(run["ours-full"], "saved", 0), _state(run["acc-full"], "saved", 0)) == []
        assert _differing(_state(run["ours-resume"], "restored", 0), _state(run["acc-skip"], "restored", 0)) == []
    for rank in range(world):
        full = _losses(run["ours-full"], "full", rank)
        save_at = full["save_at"]
        assert _losses(run["ours-resume"], "resume", rank)["losses"] == full["losses"][save_at:]
        assert _differing(_state(run["ours-resume"], "final-resume", rank),
                          _state(run["ours-full"], "final-full", rank)) == []

        assert _losses(run["ours-resume"], "resume", rank)["batches"] == full["batches"][save_at:]

        acc_full = _losses(run["acc-full"], "full", rank)
        resumed = _losses(run["acc-skip"], "resume", rank)
        assert _differing(_state(run["acc-skip"], "restored", rank), _state(run["acc-full"], "saved", rank)) == []
        per_epoch = acc_full["batches_per_epoch"]
        epoch_end = (save_at // per_epoch + 1) * per_epoch
        # The right number of batches skipped, of another order: the rest of the epoch is other batches.
        assert len(resumed["batches"]) == len(acc_full["batches"]) - save_at
        assert resumed["batches"][:epoch_end - save_at] != acc_full["batches"][save_at:epoch_end]
        if world > 1:  # the generator starts again as at prepare: the resumed epoch 1 is epoch 0 again
            assert resumed["batches"][:epoch_end - save_at] == acc_full["batches"][save_at - per_epoch:per_epoch]
        assert "model" in _groups(_differing(_state(run["acc-skip"], "final-resume", rank),
                                             _state(run["acc-full"], "final-full", rank)))


def test_three_ranks_ddp_reduction_order(pool, tmp_path):
    """3 gloo ranks, the same data under both backends. DDP's first iteration in a process reduces gradients in
    another order than later ones (it rebuilds its buckets in the order gradients became ready), and with 3 ranks
    the sums differ in the last bits. An uninterrupted Accelerate run is plain DDP, as ours is (the Checkpointer
    keeps DDP's own ready-order layout): the two train identically. Only the resume differs: ours restores the
    recorded layout before the first forward, Accelerate's resumed process reduces its first step in parameter
    order, so even its exact data recipe resumes with other optimizer bits. Pinned to parameter order from the
    first step (`pin_bucket_layout`), Accelerate resumes exactly, on a layout of its own."""
    run = {name: _launch(pool, tmp_path, name, 3, backend, phase, "sampler", *extra)
           for name, backend, phase, extra in [("ours-full", "harness", "full", ()),
                                               ("ours-resume", "harness", "resume", ()),
                                               ("acc-full", "accelerate", "full", ()),
                                               ("acc-skip", "accelerate", "resume", ("--skip-first-batches",)),
                                               ("pinned-full", "accelerate", "full", ("--pin-bucket-layout",)),
                                               ("pinned-skip", "accelerate", "resume",
                                                ("--pin-bucket-layout", "--skip-first-batches"))]}
    for rank in range(3):
        full = _losses(run["ours-full"], "full", rank)
        save_at = full["save_at"]
        assert full["world_size"] == 3 and save_at % full["batches_per_epoch"] not in (0, 1)
        for name in ("ours", "acc", "pinned"):
            assert _differing(_state(run[f"{name}-{'resume' if name == 'ours' else 'skip'}"], "restored", rank),
                              _state(run[f"{name}-full"], "saved", rank)) == [], (name, rank)
        # Ours: exact.
        assert _losses(run["ours-resume"], "resume", rank)["losses"] == full["losses"][save_at:]
        assert _differing(_state(run["ours-resume"], "final-resume", rank),
                          _state(run["ours-full"], "final-full", rank)) == [], rank

        # Accelerate's DDP, uninterrupted: the same data, RNG and gradient sums as ours.
        assert _losses(run["acc-full"], "full", rank)["losses"] == full["losses"]
        assert _differing(_state(run["acc-full"], "saved", rank), _state(run["ours-full"], "saved", rank)) == []
        # Resumed, its first step reduces in parameter order: other optimizer bits.
        resumed = _differing(_state(run["acc-skip"], "final-resume", rank), _state(run["acc-full"], "final-full", rank))
        assert "optimizer" in _groups(resumed) and _groups(resumed) <= {"model", "optimizer"}, resumed

        # Accelerate with the layout pinned to parameter order: exact through its own resume, other sums than ours.
        assert _differing(_state(run["pinned-skip"], "final-resume", rank),
                          _state(run["pinned-full"], "final-full", rank)) == []
        pinned = _groups(_differing(_state(run["pinned-full"], "saved", rank), _state(run["ours-full"], "saved", rank)))
        assert pinned and pinned <= {"model", "optimizer"}, pinned


def test_accelerate_project_configuration_is_accepted(tmp_path):
    from accelerate.utils import ProjectConfiguration as AccelerateProjectConfiguration

    from harness.checkpoint import Checkpointer

    config = AccelerateProjectConfiguration(automatic_checkpoint_naming=True, total_limit=2, iteration=3)
    ckpt = Checkpointer(project_dir=tmp_path, project_config=config)
    cfg = ckpt.project_configuration
    assert (os.fspath(cfg.project_dir), cfg.automatic_checkpoint_naming, cfg.total_limit, cfg.iteration) == (
        str(tmp_path), True, 2, 3)


def test_set_epoch_reaches_the_sampler_inside_a_batch_sampler():
    from harness.checkpoint import Checkpointer

    def batch_sampler():
        sampler = torch.utils.data.DistributedSampler(range(8), num_replicas=1, rank=0, shuffle=True, seed=1)
        return torch.utils.data.BatchSampler(sampler, 4, drop_last=False)

    dataset = torch.utils.data.TensorDataset(torch.arange(8))
    loader = Checkpointer().prepare(torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler()))
    expected = batch_sampler()
    for epoch in range(2):
        loader.set_epoch(epoch)
        expected.sampler.set_epoch(epoch)
        assert [b[0].tolist() for b in loader] == list(expected), epoch
