"""Checksums taken while backends write (DCP writer, DeepSpeed's torch.save) and the DCP reader that reads
verified files: the digests are those of the bytes on disk, damage is caught before DCP reads, naming the file.

One process, no process group (DCP saves and loads without one); the 2-rank FSDP2 and DeepSpeed round trips
with a flipped byte are in test_checkpoint_strategies.py.
"""

from __future__ import annotations

import os
import pathlib
import pickle

import pytest
import torch
import xxhash

from harness.checkpoint import CorruptCheckpointError, files, strategy
from harness.checkpoint.hashing_storage import (HashingCheckpointEngine, HashingFileSystemWriter, MappedStream,
                                                VerifiedFileSystemReader)
from harness.checkpoint.strategy import StrategyInfo

dcp = pytest.importorskip("torch.distributed.checkpoint")


def _state(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"model_0": {"w": torch.randn(64, 32, generator=g), "b": torch.arange(7) * seed},
            "optimizer_0": {"state": {"w": {"step": torch.tensor(float(seed))}}, "param_groups": [{"lr": 0.1 * seed,
                                                                                                     "params": ["w"]}]}}


def _save(tmp_path) -> tuple[str, list[files.FileRecord]]:
    root = str(tmp_path / "ck")
    writer = HashingFileSystemWriter(os.path.join(root, "dcp"), sync_files=True)
    dcp.save(_state(3), storage_writer=writer)
    return root, writer.records(root)


def _on_disk(root: str, rec: files.FileRecord) -> tuple[int, str]:
    data = pathlib.Path(root, rec.path).read_bytes()
    return len(data), xxhash.xxh3_128_hexdigest(data)


def _verify(root, records) -> strategy.FSDPStrategy:
    st = strategy.FSDPStrategy([], state_dict="sharded")
    st.verify_native(root, records, 0, 1, StrategyInfo("fsdp", "dcp", (1,)), [])
    return st


def test_dcp_writer_records_the_checksums_of_the_files_it_wrote(tmp_path):
    root, records = _save(tmp_path)
    assert [r.path for r in records] == ["dcp/.metadata", "dcp/__0_0.distcp"]  # .metadata.tmp renamed: digest kept
    for rec in records:
        assert (rec.size, rec.digest) == _on_disk(root, rec)
    assert sorted(os.listdir(os.path.join(root, "dcp"))) == [".metadata", "__0_0.distcp"]


def test_dcp_reader_loads_from_the_verified_mapping_without_opening_the_file(tmp_path, monkeypatch):
    root, records = _save(tmp_path)
    st = _verify(root, records)
    assert len(st._verified.maps) == 2  # this rank's shard and .metadata: verified, kept mapped
    target = _state(0)
    opened = []
    real_open = pathlib.Path.open
    monkeypatch.setattr(pathlib.Path, "open", lambda self, *a, **k: opened.append(self.name) or real_open(self, *a, **k))
    reader = VerifiedFileSystemReader(os.path.join(root, "dcp"), st._verified, st._listed, root)
    dcp.load(target, storage_reader=reader)
    st._verified.release()
    assert opened == []  # read from the mapping that was hashed: one pass over the file
    want = _state(3)
    assert torch.equal(target["model_0"]["w"], want["model_0"]["w"])
    assert torch.equal(target["model_0"]["b"], want["model_0"]["b"])
    assert target["optimizer_0"]["param_groups"][0]["lr"] == pytest.approx(0.3)


def test_dcp_reader_refuses_a_file_the_manifest_does_not_list(tmp_path):
    root, records = _save(tmp_path)
    meta = [r for r in records if r.path.endswith(".metadata")]
    st = _verify(root, meta)  # a manifest listing .metadata only
    reader = VerifiedFileSystemReader(os.path.join(root, "dcp"), st._verified, st._listed, root)
    with pytest.raises(BaseException, match=r"CorruptCheckpointError: \S*__0_0.distcp: DCP reads this file, but the "
                                            r"manifest of \S* does not list it"):  # DCP's CheckpointException
        dcp.load(_state(0), storage_reader=reader)


@pytest.mark.parametrize("damage, match", [
    ("flip", r"dcp/__0_0.distcp: checksum mismatch \(xxh3_128\)"),
    ("truncate", r"dcp/__0_0.distcp: is \d+ bytes but the manifest says \d+ \(truncated"),
    ("delete", r"dcp/__0_0.distcp: file listed in the manifest is missing"),
    ("flip-metadata", r"dcp/.metadata: checksum mismatch"),
])
def test_damaged_dcp_files_are_caught_before_dcp_reads_naming_the_file(tmp_path, damage, match):
    root, records = _save(tmp_path)
    shard = pathlib.Path(root, "dcp", ".metadata" if damage == "flip-metadata" else "__0_0.distcp")
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(data[:-5]))
    elif damage == "delete":
        shard.unlink()
    else:
        data[len(data) // 2] ^= 0x01
        shard.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match=match):
        _verify(root, records)


def test_each_rank_verifies_the_shard_it_reads_and_shares_out_the_rest(tmp_path):
    recs = [files.FileRecord(p, 0, "") for p in ("dcp/.metadata", "dcp/__0_0.distcp", "dcp/__1_0.distcp",
                                                  "dcp/__2_0.distcp")]
    seen: dict[int, list[str]] = {}
    for rank in range(3):
        class Spy:
            def verify(self, full, rec, key=None, rank=rank):
                seen.setdefault(rank, []).append(rec.path)
        strategy._verify_share(str(tmp_path), recs, rank, 3, always=("dcp/.metadata",), verified=Spy(),
                               owner=strategy._dcp_owner)
    assert seen == {0: ["dcp/.metadata", "dcp/__0_0.distcp"], 1: ["dcp/.metadata", "dcp/__1_0.distcp"],
                    2: ["dcp/.metadata", "dcp/__2_0.distcp"]}
    seen.clear()
    for rank in range(2):  # resharded onto 2 ranks: rank 0 reads from __2_0 too; the files are shared out
        class Spy2:
            def verify(self, full, rec, key=None, rank=rank):
                seen.setdefault(rank, []).append(rec.path)
        strategy._verify_share(str(tmp_path), recs, rank, 2, always=("dcp/.metadata",), verified=Spy2(),
                               owner=strategy._dcp_owner)
    assert sorted(seen[0] + seen[1]) == sorted(["dcp/.metadata"] * 2 + [r.path for r in recs[1:]])


def test_hash_owned_uses_digests_taken_while_writing_and_rereads_a_changed_file(tmp_path, monkeypatch):
    sub = tmp_path / "deepspeed"
    sub.mkdir()
    (sub / "a.pt").write_bytes(b"abc")
    (sub / "b.pt").write_bytes(b"defg")
    digests = {str(sub / "a.pt"): (3, "from-the-writer"), str(sub / "b.pt"): (99, "stale")}
    reread = []
    real = files.hash_file
    monkeypatch.setattr(files, "hash_file", lambda p, sync=True: reread.append(os.path.basename(p)) or real(p, sync))
    out = strategy._hash_owned(str(tmp_path), "deepspeed", lambda n: True, digests)
    assert [(r.path, r.digest) for r in out] == [("deepspeed/a.pt", "from-the-writer"),
                                                 ("deepspeed/b.pt", xxhash.xxh3_128_hexdigest(b"defg"))]
    assert reread == ["b.pt"]  # its size differs from what was hashed: read back


@pytest.mark.parametrize("zipfile", [True, False])
def test_deepspeed_torch_save_is_hashed_as_written(tmp_path, zipfile):
    engine_mod = pytest.importorskip("deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine")
    inner = engine_mod.TorchCheckpointEngine.__new__(engine_mod.TorchCheckpointEngine)
    inner.zipfile_serialization = zipfile
    hashing = HashingCheckpointEngine.wrap(inner)
    assert hashing is not None and hashing.zipfile_serialization is zipfile  # other attributes pass through
    path = str(tmp_path / "m.pt")
    state = {"w": torch.randn(33, 17), "n": [1, 2]}
    hashing.save(state_dict=state, path=path)
    data = pathlib.Path(path).read_bytes()
    assert hashing.digests[path] == (len(data), xxhash.xxh3_128_hexdigest(data))
    assert torch.equal(torch.load(path, weights_only=False)["w"], state["w"])
    assert HashingCheckpointEngine.wrap(object()) is None  # another engine: left alone, read back after the save


def test_mapped_stream_reads_seeks_and_unpickles():
    blob = pickle.dumps({"a": 1, "b": b"x" * 1000}, protocol=2) + b"tail"
    s = MappedStream(bytearray(blob))
    assert pickle.load(s) == {"a": 1, "b": b"x" * 1000}
    assert s.read() == b"tail" and s.read(3) == b""
    s.seek(-4, os.SEEK_END)
    buf = bytearray(10)
    assert s.readinto(buf) == 4 and bytes(buf[:4]) == b"tail"
    s.seek(0)
    assert s.tell() == 0 and s.read(2) == blob[:2]
    text = MappedStream(pickle.dumps([1, "x\ny"], protocol=0) + b"rest\nend")  # protocol 0 reads by lines
    assert pickle.load(text) == [1, "x\ny"]
    assert text.readline() == b"rest\n" and text.readline(2) == b"en" and text.readline() == b"d" and text.readline() == b""


def test_write_files_fsyncs_every_file_and_folder_and_records_their_checksums(tmp_path, monkeypatch):
    from harness.checkpoint import layout

    synced = []
    monkeypatch.setattr(files, "_fsync_path", lambda p: synced.append(("file", os.path.relpath(p, tmp_path))))
    monkeypatch.setattr(files, "fsync_dir", lambda p: synced.append(("dir", os.path.relpath(p, tmp_path))))
    (tmp_path / "rank0").mkdir()
    (tmp_path / "shared").mkdir()
    jobs = [layout.FileJob("rank0/state.json", {"a": 1}), layout.FileJob("rank0/state.safetensors", {"t": torch.ones(3)}),
            layout.FileJob("shared/state.json", [1, 2])]
    records = layout.write_files(str(tmp_path), jobs)
    assert sorted(synced) == sorted([("file", j.rel) for j in jobs] + [("dir", "rank0"), ("dir", "shared")])
    for rec in records:
        assert (rec.size, rec.digest) == _on_disk(str(tmp_path), rec)


def test_hash_file_hashes_through_a_mapping_including_empty_files(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "f").write_bytes(b"xyz" * 1000)
    assert files.hash_file(str(tmp_path / "e")) == (0, xxhash.xxh3_128_hexdigest(b""))
    assert files.hash_file(str(tmp_path / "f"), sync=False) == (3000, xxhash.xxh3_128_hexdigest(b"xyz" * 1000))


def test_async_copies_are_written_as_they_land_and_a_failed_copy_fails_the_write(tmp_path):
    import threading

    from harness.checkpoint import layout
    from harness.checkpoint.host_copy import HostCopies

    src = {"a": torch.arange(1000, dtype=torch.float32), "b": torch.ones(3, 5)}
    jobs = [layout.FileJob("rank0/state.safetensors", dict(src)), layout.FileJob("rank0/state.json", {"x": 1})]
    copies = HostCopies.plan(jobs, lambda key, t: torch.zeros_like(t))  # buffers swapped in, not yet filled
    assert all(not torch.equal(jobs[0].payload[k], v) for k, v in src.items())
    (tmp_path / "rank0").mkdir()
    out: list = []
    writer = threading.Thread(target=lambda: out.append(layout.write_files(str(tmp_path), jobs)))
    writer.start()  # waits in ready("a") until the copy lands
    copies.run()
    writer.join()
    tensors, _ = files.read_tensors(str(tmp_path / "rank0" / "state.safetensors"), out[0][0])
    assert all(torch.equal(tensors[k], v) for k, v in src.items())

    bad = [layout.FileJob("rank1/state.safetensors", {"a": torch.ones(4)})]
    copies = HostCopies.plan(bad, lambda key, t: torch.zeros(7))  # a copy that cannot succeed
    copies.run()  # does not raise: the writer reports it, on every rank, through the save's agreement
    (tmp_path / "rank1").mkdir()
    with pytest.raises(RuntimeError, match="copying the state into host memory for the async save failed"):
        layout.write_files(str(tmp_path), bad)
