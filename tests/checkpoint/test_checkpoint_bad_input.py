"""Every bad input gets a clear error that names the file, key or rank, and never destroys a good checkpoint."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch
import xxhash

from support import TESTS
from support.checkpoint_jobs import full_state, make_job, train
from harness.checkpoint import (CheckpointSaveError, Checkpointer, CheckpointSkippedWarning, CorruptCheckpointError,
                                IncompatibleCheckpointError, NotACheckpointError, ProjectConfiguration,
                                UnsafeCheckpointError)
from harness.checkpoint.manifest import seal


@pytest.fixture
def saved(tmp_path):
    """A job trained 3 steps and saved twice: checkpoint_0 (step 2) and checkpoint_1 (step 3)."""
    job = make_job(tmp_path)
    train(job, 2)
    job[0].save_state()
    train(job, 3)
    path = job[0].save_state()
    return tmp_path, path, full_state(job)


def _manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def _write_manifest(path, doc, reseal=True):
    """Replace the manifest. `reseal` recomputes its own checksum, so that the check under test is the
    one that has to catch the edit (without it, the manifest checksum does)."""
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(seal(doc) if reseal else doc, f)


def _relist(path, rel):
    """Update the manifest's size and checksum of `rel`, so only the content check can catch it."""
    doc = _manifest(path)
    data = open(os.path.join(path, rel), "rb").read()
    for records in doc["files"].values():
        for r in records:
            if r["path"] == rel:
                r["size"], r["xxh3_128"] = len(data), xxhash.xxh3_128_hexdigest(data)
    _write_manifest(path, doc)


def test_wrong_architecture_names_keys_and_shapes(saved):
    project, path, _ = saved
    job = make_job(project, width=9)
    job[0]._registry.models[0].add_module("3", torch.nn.Linear(1, 1))
    with pytest.raises(IncompatibleCheckpointError) as e:
        job[0].load_state(path)
    msg = str(e.value)
    assert "missing keys [3.weight, 3.bias]" in msg
    assert "0.weight: checkpoint (8, 4) torch.float32, model (9, 4) torch.float32" in msg


def test_incompatible_is_not_skipped_by_fallback(saved):
    project, _, _ = saved
    job = make_job(project, width=9)
    with pytest.raises(IncompatibleCheckpointError, match="different architecture"):
        job[0].load_state()  # an older checkpoint would not fit either: fail, do not fall back


def test_different_world_size(saved):
    _, path, _ = saved
    doc = _manifest(path)
    doc["world_size"] = 2
    _write_manifest(path, doc)
    with pytest.raises(IncompatibleCheckpointError, match="saved by 2 rank.*loading on 1"):
        make_job(path)[0].load_state(path)


def test_registered_objects_must_match(saved):
    project, path, _ = saved
    job = make_job(project)
    job[0].register_for_checkpointing(torch.Generator())
    with pytest.raises(IncompatibleCheckpointError, match="generators=0 but 1 are registered"):
        job[0].load_state(path)


@pytest.mark.parametrize("rel", ["rank0/state.safetensors", "shared/model_0.safetensors", "shared/state.json"])
def test_missing_file(saved, rel):
    _, path, _ = saved
    os.remove(os.path.join(path, rel))
    with pytest.raises(CorruptCheckpointError, match=f"{rel}: file listed in the manifest is missing"):
        make_job(path)[0].load_state(path)


def test_truncated_file(saved):
    _, path, _ = saved
    target = os.path.join(path, "shared", "optimizer_0.safetensors")
    size = os.path.getsize(target)
    os.truncate(target, size - 7)
    with pytest.raises(CorruptCheckpointError, match=f"optimizer_0.safetensors: is {size - 7} bytes but the manifest says {size}"):
        make_job(path)[0].load_state(path)


@pytest.mark.parametrize("rel", ["shared/model_0.safetensors", "rank0/state.json", "shared/optimizer_0.json"])
def test_flipped_bit(saved, rel):
    _, path, _ = saved
    target = os.path.join(path, rel)
    data = bytearray(open(target, "rb").read())
    data[len(data) // 2] ^= 0x10
    open(target, "wb").write(data)
    with pytest.raises(CorruptCheckpointError, match=f"{rel}: checksum mismatch"):
        make_job(path)[0].load_state(path)


def test_fallback_to_newest_valid_checkpoint_says_why(saved):
    project, newest, _ = saved
    os.truncate(os.path.join(newest, "rank0", "state.safetensors"), 10)
    job = make_job(project)
    with pytest.warns(CheckpointSkippedWarning, match=r"checkpoint_1.*rank0/state.safetensors: is 10 bytes"):
        loaded = job[0].load_state()
    assert loaded.endswith("checkpoint_0") and job[0].step == 2


def test_interrupted_save_is_ignored(saved):
    """A staging folder (a save killed before its commit) is never a candidate."""
    project, newest, state = saved
    shutil.copytree(newest, os.path.join(project, "checkpoints", ".staging-checkpoint_2"))
    job = make_job(project)
    assert job[0].load_state() == newest
    assert full_state(job) == state


def test_no_checkpoint_at_all(tmp_path):
    job = make_job(tmp_path)
    with pytest.raises(NotACheckpointError, match="no checkpoint in"):
        job[0].load_state()
    assert job[0].load_state(missing_ok=True) is None


def test_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"x")
    with pytest.raises(NotACheckpointError, match="junk: not a checkpoint \\(no manifest.json"):
        make_job(tmp_path)[0].load_state(tmp_path / "junk")
    with pytest.raises(NotACheckpointError, match="no such checkpoint folder"):
        make_job(tmp_path)[0].load_state(tmp_path / "nowhere")


def test_accelerate_folder_gets_a_hint(tmp_path):
    (tmp_path / "acc").mkdir()
    (tmp_path / "acc" / "random_states_0.pkl").write_bytes(b"\x80\x04.")
    with pytest.raises(NotACheckpointError, match="HF Accelerate checkpoint: convert it with `harness convert`"):
        make_job(tmp_path)[0].load_state(tmp_path / "acc")


@pytest.mark.parametrize("bad", ["../escape.json", "/etc/passwd", "rank0/../../x", "./rank0/state.json"])
def test_manifest_path_traversal_is_refused(saved, bad):
    _, path, _ = saved
    doc = _manifest(path)
    doc["files"]["rank0"][0]["path"] = bad
    _write_manifest(path, doc)
    with pytest.raises(UnsafeCheckpointError, match="path"):
        make_job(path)[0].load_state(path)


def test_symlink_out_of_the_folder_is_refused(saved, tmp_path):
    _, path, _ = saved
    target = os.path.join(path, "rank0", "state.json")
    outside = tmp_path / "outside.json"
    shutil.move(target, outside)
    os.symlink(outside, target)
    with pytest.raises(UnsafeCheckpointError, match="resolves outside the checkpoint folder"):
        make_job(path)[0].load_state(path)


class _Boom:
    def __reduce__(self):
        return (os.mkdir, (os.environ["BOOM_DIR"],))


@pytest.mark.parametrize("rel", ["rank0/state.json", "shared/optimizer_0.safetensors"])
def test_pickle_file_is_refused_never_unpickled(saved, tmp_path, monkeypatch, rel):
    _, path, _ = saved
    marker = tmp_path / "pwned"
    monkeypatch.setenv("BOOM_DIR", str(marker))
    with open(os.path.join(path, rel), "wb") as f:
        pickle.dump({"x": _Boom()}, f)
    _relist(path, rel)  # a consistent manifest: only the pickle check stands in the way
    with pytest.raises(UnsafeCheckpointError, match=f"{rel}: is a pickle/torch.save file"):
        make_job(path)[0].load_state(path)
    assert not marker.exists()


def test_torch_save_file_is_refused(saved):
    _, path, _ = saved
    rel = "shared/model_0.safetensors"
    torch.save({"w": torch.zeros(2)}, os.path.join(path, rel))
    _relist(path, rel)
    with pytest.raises(UnsafeCheckpointError, match="pickle/torch.save"):
        make_job(path)[0].load_state(path)


def test_manifest_that_is_a_pickle_or_garbage(saved):
    _, path, _ = saved
    with open(os.path.join(path, "manifest.json"), "wb") as f:
        pickle.dump({"format": "x"}, f)
    with pytest.raises(UnsafeCheckpointError, match="manifest.json: is a pickle"):
        make_job(path)[0].load_state(path)
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(CorruptCheckpointError, match="manifest is not valid JSON"):
        make_job(path)[0].load_state(path)


def test_incomplete_or_future_manifest(saved):
    _, path, _ = saved
    doc = _manifest(path)
    _write_manifest(path, {**doc, "complete": False})
    with pytest.raises(CorruptCheckpointError, match="incomplete"):
        make_job(path)[0].load_state(path)
    _write_manifest(path, {**doc, "version": 99})
    with pytest.raises(CorruptCheckpointError, match="format version 99 is not supported"):
        make_job(path)[0].load_state(path)


MANIFEST_EDITS = {
    "step": lambda doc: doc.update(step=doc["step"] + 1),
    "iteration": lambda doc: doc.update(iteration=7),
    "world_size": lambda doc: doc.update(world_size=2),
    "libraries_value": lambda doc: doc["libraries"].update(torch="0.0.1"),
    "libraries_new_key": lambda doc: doc["libraries"].update(extra="1"),
    "contents_entry": lambda doc: doc["contents"].update(custom=doc["contents"]["custom"] + 1),
    "file_size_and_checksum": lambda doc: doc["files"]["rank0"][0].update(size=1, xxh3_128="0" * 32),
    "backend": lambda doc: doc.update(backend="fsdp"),
    "checksum_itself": lambda doc: doc.update(manifest_xxh3_128="0" * 32),
}


@pytest.mark.parametrize("edit", sorted(MANIFEST_EDITS))
def test_edited_manifest_is_refused(saved, edit):
    _, path, _ = saved
    doc = _manifest(path)
    MANIFEST_EDITS[edit](doc)
    _write_manifest(path, doc, reseal=False)
    manifest_path = os.path.join(path, "manifest.json")
    with pytest.raises(CorruptCheckpointError, match=rf"{re.escape(manifest_path)}: manifest checksum mismatch .*"
                                                     "restore the original manifest.json, or delete this checkpoint"):
        make_job(path)[0].load_state(path)


def test_untouched_manifest_loads_whatever_its_formatting(saved):
    """The checksum covers the fields, not their layout: re-indented, re-ordered JSON still loads."""
    _, path, state = saved
    doc = _manifest(path)
    assert doc["version"] == 3 and isinstance(doc["manifest_xxh3_128"], str) and list(doc)[-1] == "complete"
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(dict(reversed(list(doc.items()))), f, indent=2)
    job = make_job(path)
    assert job[0].load_state(path) == path
    assert full_state(job) == state


def test_manifest_without_its_checksum_is_refused(saved):
    _, path, _ = saved
    doc = _manifest(path)
    del doc["manifest_xxh3_128"]
    _write_manifest(path, doc, reseal=False)
    with pytest.raises(CorruptCheckpointError, match="manifest.json: manifest has no manifest_xxh3_128 field"):
        make_job(path)[0].load_state(path)


def test_version_1_manifest_without_checksum_still_loads(saved):
    """Version 1 had no manifest checksum; its trees decode unchanged (they hold every tensor name)."""
    _, path, state = saved
    doc = _manifest(path)
    del doc["manifest_xxh3_128"]
    _write_manifest(path, {**doc, "version": 1}, reseal=False)
    job = make_job(path)
    assert job[0].load_state(path) == path
    assert full_state(job) == state


def test_fallback_skips_a_checkpoint_whose_manifest_was_edited(saved):
    project, newest, _ = saved
    doc = _manifest(newest)
    doc["step"] = 1000
    _write_manifest(newest, doc, reseal=False)
    job = make_job(project)
    with pytest.warns(CheckpointSkippedWarning, match=r"checkpoint_1.*manifest.json: manifest checksum mismatch"):
        loaded = job[0].load_state()
    assert loaded.endswith("checkpoint_0") and job[0].step == 2


def test_malformed_safetensors_header(saved):
    _, path, _ = saved
    rel = "rank0/state.safetensors"
    with open(os.path.join(path, rel), "wb") as f:
        f.write((10**12).to_bytes(8, "little") + b"{}")
    _relist(path, rel)
    with pytest.raises(CorruptCheckpointError, match="not a valid safetensors file: header length"):
        make_job(path)[0].load_state(path)


def _fill_disk_after(monkeypatch, budget: int):
    """Make the checkpoint writer hit ENOSPC after `budget` bytes, like a full disk."""
    import harness.checkpoint.files as files

    real_write = os.write
    left = [budget]

    def write(fd, data):
        if left[0] <= 0:
            raise OSError(28, "No space left on device")
        n = real_write(fd, bytes(memoryview(data)[: left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr(files.os, "write", write)


@pytest.mark.parametrize("budget", [0, 100, 3000])
def test_disk_full_keeps_previous_checkpoint(saved, monkeypatch, budget):
    project, newest, state = saved
    job = make_job(project)
    job[0].load_state()
    train(job, 5)
    _fill_disk_after(monkeypatch, budget)
    with pytest.raises(CheckpointSaveError, match="rank 0: OSError: \\[Errno 28\\] No space left on device"):
        job[0].save_state()
    monkeypatch.undo()
    assert sorted(os.listdir(os.path.join(project, "checkpoints"))) == ["checkpoint_0", "checkpoint_1"]
    again = make_job(project)
    assert again[0].load_state() == newest
    assert full_state(again) == state
    assert again[0].save_state().endswith("checkpoint_2")  # and the next save works


def test_disk_full_on_a_real_tmpfs(tmp_path):
    """ENOSPC from a real 2 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(400, 400)  # 640 KB of weights, 1.3 MB more of Adam state after a step
        opt = torch.optim.Adam(model.parameters())
        ckpt = Checkpointer(ProjectConfiguration(mnt, automatic_checkpoint_naming=True))
        ckpt.prepare(model, opt)
        first = ckpt.save_state()  # fits: weights only, no optimizer state yet
        model(torch.ones(1, 400)).sum().backward()
        opt.step()
        with pytest.raises(CheckpointSaveError, match="No space left on device"):
            ckpt.save_state()
        assert os.listdir(mnt / "checkpoints") == ["checkpoint_0"]
        fresh = Checkpointer(ProjectConfiguration(mnt, automatic_checkpoint_naming=True))
        fresh.prepare(torch.nn.Linear(400, 400), torch.optim.Adam(model.parameters()))
        assert fresh.load_state() == first
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_explicit_folder_is_never_overwritten(saved):
    project, path, _ = saved
    with pytest.raises(CheckpointSaveError, match="exists and is not empty; refusing to overwrite"):
        make_job(project)[0].save_state(path)


def test_save_needs_a_folder():
    with pytest.raises(ValueError, match="save_state\\(\\) needs a folder"):
        Checkpointer().save_state()


def test_unsaveable_custom_state_fails_cleanly(saved):
    project, _, _ = saved
    job = make_job(project)
    job[0].load_state()

    class Bad:
        def state_dict(self):
            return {"f": open}

        def load_state_dict(self, sd):
            pass

    job[0].register_for_checkpointing(Bad())
    with pytest.raises(CheckpointSaveError, match="custom/1/f: cannot checkpoint"):
        job[0].save_state()
    assert sorted(os.listdir(os.path.join(project, "checkpoints"))) == ["checkpoint_0", "checkpoint_1"]


def test_register_refuses_unknown_objects_by_index():
    ckpt = Checkpointer()
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError) as err:
        ckpt.register_for_checkpointing(net, "model.pt", torch.utils.data.SequentialSampler(range(3)))
    assert "Item at index 1, `str`: cannot checkpoint a builtins.str" in str(err.value)
    assert "Item at index 2, `SequentialSampler`" in str(err.value) and "pass the DataLoader" in str(err.value)
    assert ckpt._registry.counts()["models"] == 0  # all or nothing: net was not registered


def test_loading_never_imports_pickle_machinery(saved):
    """Load in a fresh interpreter and check no unpickler ran (the format has no pickle at all)."""
    _, path, _ = saved
    code = f"""
import pickle, sys
sys.path.insert(0, {TESTS!r})
calls = []
class Spy(pickle.Unpickler):
    def __init__(self, *a, **k):
        calls.append(1); super().__init__(*a, **k)
pickle.Unpickler = Spy
real_loads = pickle.loads
pickle.loads = lambda *a, **k: (calls.append(1), real_loads(*a, **k))[1]
import torch
torch.load = lambda *a, **k: (_ for _ in ()).throw(AssertionError("torch.load called"))
from support.checkpoint_jobs import make_job
job = make_job({str(path)!r})
job[0].load_state({str(path)!r})
assert not calls, calls
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_files_written_by_save_hooks_are_verified_on_load(tmp_path):
    model = torch.nn.Linear(2, 2)
    ckpt = Checkpointer()
    ckpt.prepare(model)
    ckpt.register_save_state_pre_hook(lambda models, weights, out: open(os.path.join(out, "extra.bin"), "wb").write(b"x" * 100))
    path = ckpt.save_state(tmp_path / "c")
    with open(os.path.join(path, "extra.bin"), "r+b") as f:
        f.write(b"y")
    with pytest.raises(CorruptCheckpointError, match="extra.bin: checksum mismatch"):
        ckpt.load_state(path)


def test_data_loader_mismatch_changes_nothing(saved):
    """A data loader that no longer fits is refused before any weight is loaded."""
    project, path, _ = saved
    job = make_job(project)
    before = [p.detach().clone() for p in job[1].parameters()]
    job[3].loader.batch_sampler.batch_sampler.batch_size = 5  # 8 batches per epoch instead of 10
    with pytest.raises(IncompatibleCheckpointError, match="data loader 0: the data loader yields 8 batches"):
        job[0].load_state(path)
    assert all(torch.equal(a, b) for a, b in zip(before, job[1].parameters()))


def test_map_location_that_does_not_exist(saved):
    project, path, _ = saved
    job = make_job(project)
    job_state = full_state(job)
    for where, why in [("cuda:7", "no such device here"), ("gpu0", "is not a device"),
                       ("meta", "would drop the loaded values")]:
        with pytest.raises(ValueError, match=f"rank 0: map_location={where!r}.*{why}"):
            job[0].load_state(path, map_location=where)
        assert full_state(job) == job_state  # refused before anything was read


@pytest.mark.parametrize("size", ["ten GB", "10 gigs", "GB", "-5MB", "", 1.5, True, -1])
def test_shard_size_that_does_not_parse(tmp_path, size):
    from harness.checkpoint import parse_size, save_model

    with pytest.raises(ValueError, match="is not a valid size|is negative"):
        parse_size(size)
    with pytest.raises(ValueError, match="size"):
        Checkpointer(max_shard_size=size)
    with pytest.raises(ValueError, match="size"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "m", max_shard_size=size)
    assert not (tmp_path / "m").exists()


def test_save_model_into_another_models_folder(tmp_path):
    from harness.checkpoint import save_model

    save_model(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)), tmp_path, max_shard_size="20KB")
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    assert "model.safetensors.index.json" in before
    with pytest.raises(FileExistsError, match=r"holds the weights of a different model .*model-00001-of-00002"):
        save_model(torch.nn.Linear(64, 3), tmp_path)
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == before  # untouched
    # The same tensor names with other shapes: another size of the same architecture, not a re-save.
    with pytest.raises(FileExistsError, match=r"other shapes, e\.g\. 0\.bias \[64\] there vs \[32\] here"):
        save_model(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 64)), tmp_path)
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == before
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({}))
    with pytest.raises(FileExistsError, match=r"pickled weights \['pytorch_model.bin'\]"):
        save_model(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)), tmp_path)


def test_a_manifest_never_lists_a_file_the_folder_lacks(tmp_path):
    from harness.checkpoint.files import FileRecord
    from harness.checkpoint.manager import _check_present

    (tmp_path / "rank0").mkdir()
    (tmp_path / "rank0" / "state.json").write_text("{}")
    _check_present(str(tmp_path), [FileRecord("rank0/state.json", 2, "x")])
    with pytest.raises(CheckpointSaveError, match=r"lacks 2 file\(s\).*'rank1/state.json', 'rank0/state.json \(size"):
        _check_present(str(tmp_path), [FileRecord("rank1/state.json", 2, "x"), FileRecord("rank0/state.json", 3, "x")])
