"""Which file holds what, in a checkpoint folder (format version 3; docs/design.md section 5).

Plain state (JSON trees and tensor dicts) in, a list of `FileJob`s out, then written into a staging
folder and listed in the manifest. The checkpointer and `harness convert` both lay out folders here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from harness import probe

from . import files, tree
from .files import FileRecord
from .manifest import MANIFEST, SHARED, Manifest, library_versions, rank_dir


@dataclass
class FileJob:
    rel: str  # path inside the checkpoint folder
    payload: object  # a dict of tensors (.safetensors) or a JSON value
    metadata: dict | None = None
    ready: object = None  # async saves: ready(name) returns once tensor `name` of the payload holds its value

    @property
    def is_tensors(self) -> bool:
        return self.rel.endswith(".safetensors")


def rank_files(rank: int, doc: dict, tensors: dict) -> list[FileJob]:
    """Rank `rank`'s own files: its state tree and its tensors."""
    own = rank_dir(rank)
    return [FileJob(f"{own}/state.json", doc), FileJob(f"{own}/state.safetensors", tensors)]


def shared_files(doc: dict, tensors: dict, weights: list[dict], optimizers: list[dict],
                 max_shard_size: int) -> list[FileJob]:
    """The replicated files (rank 0): model weights, optimizer states, and `doc` (which gets their paths)."""
    jobs: list[FileJob] = []
    doc["models"] = [_model_files(i, sd, max_shard_size, jobs, tensors) for i, sd in enumerate(weights)]
    doc["optimizers"] = []
    for i, sd in enumerate(optimizers):
        opt_tensors: dict = {}
        doc["optimizers"].append(f"{SHARED}/optimizer_{i}")
        jobs.append(FileJob(f"{SHARED}/optimizer_{i}.json", tree.encode(sd, f"optimizers/{i}", opt_tensors)))
        jobs.append(FileJob(f"{SHARED}/optimizer_{i}.safetensors", opt_tensors))
    jobs.append(FileJob(f"{SHARED}/state.json", doc))
    jobs.append(FileJob(f"{SHARED}/state.safetensors", tensors))
    return jobs


def _model_files(i: int, sd: dict, max_shard_size: int, jobs: list[FileJob], shared_tensors: dict) -> dict:
    """Queue model i's weights, split above `max_shard_size`; return its entry for shared/state.json.

    Entries that are not tensors (`_extra_state`, ...) go into the entry's `extra` tree; tensors and
    bytes inside them go to `shared_tensors` (shared/state.safetensors), under `models/{i}/...`.
    """
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    extra = tree.encode({k: v for k, v in sd.items() if not isinstance(v, torch.Tensor)}, f"models/{i}", shared_tensors)
    shards: list[dict] = [{}]
    size = 0
    for k, v in tensors.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += nbytes
    if len(shards) == 1:
        names = [f"{SHARED}/model_{i}.safetensors"]
    else:  # Hugging Face's sharded layout, so other tools can read the weights
        names = [f"{SHARED}/model_{i}-{n + 1:05d}-of-{len(shards):05d}.safetensors" for n in range(len(shards))]
        total = sum(v.numel() * v.element_size() for v in tensors.values())
        weight_map = {k: os.path.basename(name) for name, shard in zip(names, shards) for k in shard}
        jobs.append(FileJob(f"{SHARED}/model_{i}.safetensors.index.json",
                            {"metadata": {"total_size": total}, "weight_map": weight_map}))
    for name, shard in zip(names, shards):
        jobs.append(FileJob(name, shard, {"format": "pt"}))
    return {"files": names, "extra": extra}


def write_files(staging: str, jobs: list[FileJob]) -> list[FileRecord]:
    """Write, hash and fsync `jobs` into the staging folder (probe points: write, chunk, fsync)."""
    records = []
    for job in jobs:
        probe.point(probe.Point.WRITE, file=job.rel)
        path = os.path.join(staging, job.rel)
        if job.is_tensors:
            size, digest = files.write_tensors(path, job.payload, job.metadata,
                                               on_chunk=lambda: probe.point(probe.Point.CHUNK), sync=False,
                                               before_body=job.ready)
        else:
            size, digest = files.write_json(path, job.payload, sync=False)
        records.append(FileRecord(job.rel, size, digest))
    probe.point(probe.Point.FSYNC)
    # every file and its folder at once (one journal commit instead of one per file); all durable on return
    files.fsync_all([os.path.join(staging, job.rel) for job in jobs],
                    sorted({os.path.dirname(os.path.join(staging, job.rel)) for job in jobs}))
    return records


def write_manifest(staging: str, records: list[FileRecord], **fields) -> None:
    """List every file (plus any a save hook wrote into the folder) and write the manifest, last."""
    groups: dict[str, list[FileRecord]] = {}
    for rec in records:
        groups.setdefault(rec.path.split("/")[0], []).append(rec)
    extra, folders = _unlisted_files(staging, {r.path for r in records})
    groups.setdefault(SHARED, []).extend(extra)
    manifest = Manifest(files=groups, libraries=library_versions(), **fields)
    path = os.path.join(staging, MANIFEST)
    files.write_json(path, manifest.to_json(), sync=False)
    files.fsync_all([path], folders)  # the manifest and every folder (its entry included), at once


def _unlisted_files(staging: str, listed: set) -> tuple[list[FileRecord], list[str]]:
    """Files that save hooks wrote into the staging folder, checksummed and fsynced; and every folder in it."""
    extra, folders = [], []
    for root, _, names in os.walk(staging):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), staging).replace(os.sep, "/")
            if rel not in listed and rel != MANIFEST:
                extra.append(FileRecord(rel, *files.hash_file(os.path.join(staging, rel))))
        folders.append(root)
    return extra, folders
