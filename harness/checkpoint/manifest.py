"""The manifest: one JSON file per checkpoint, written last, that makes a folder a checkpoint.

It holds the format version, the world size, every file per rank with its size and checksum,
library versions and a completion marker. Paths in it are checked before anything is opened:
relative, normalized, no `..`, no absolute paths, so a crafted manifest cannot read outside the
checkpoint folder.

Format versions: 3 records the strategy that saved the checkpoint: `backend` is its name
(`replicated`, `fsdp`, `deepspeed`) and `strategy` its details (layout, device mesh, ZeRO stage;
`harness.checkpoint.strategy.StrategyInfo`), and lists the files a backend wrote itself (`dcp/`,
`deepspeed/`) like any other. A version-2 reader would ignore `backend` and misread an FSDP or
DeepSpeed checkpoint, hence the new version; versions 1 and 2 are read as replicated. 2 names tensors injectively (see `tree`) and checksums the manifest itself:
`manifest_xxh3_128` is the xxh3-128 of the canonical JSON (`canonical_json`) of every other field,
so an edited `step`, `files`, `contents` or `libraries` is caught on load. Version 1 (no manifest
checksum, tensor names that could collide) is still read: its trees decode unchanged, but its
manifest fields cannot be verified.
"""

from __future__ import annotations

import json
import os
import platform
import posixpath
from dataclasses import dataclass, field

import xxhash

from .errors import CorruptCheckpointError, NotACheckpointError, UnsafeCheckpointError
from .files import HASH, FileRecord, refuse_pickle

FORMAT = "resume-harness-checkpoint"
VERSION = 3
MANIFEST = "manifest.json"
SHARED = "shared"
CHECKSUM = f"manifest_{HASH}"  # the manifest's own checksum field (version >= 2)


def rank_dir(rank: int) -> str:
    return f"rank{rank}"


@dataclass
class Manifest:
    world_size: int
    step: int
    iteration: int | None
    files: dict[str, list[FileRecord]]  # "shared", "rank0", "rank1", ...
    contents: dict = field(default_factory=dict)
    libraries: dict = field(default_factory=dict)
    backend: str = "replicated"
    strategy: dict | None = None  # StrategyInfo.to_json() (version >= 3)
    ranks: list[int] | None = None  # save_on_each_node: the ranks whose files this node's folder holds (else all)
    version: int = VERSION
    complete: bool = True

    def records_for(self, rank: int) -> list[FileRecord]:
        """The files that `rank` reads on load: the shared ones and its own."""
        return self.files.get(SHARED, []) + self.files.get(rank_dir(rank), [])

    def to_json(self) -> dict:
        """The manifest document, sealed with its own checksum."""
        doc = {
            "format": FORMAT,
            "version": self.version,
            "world_size": self.world_size,
            "step": self.step,
            "iteration": self.iteration,
            "backend": self.backend,
            "strategy": self.strategy,
            "contents": self.contents,
            "libraries": self.libraries,
            "files": {k: [r.to_json() for r in v] for k, v in self.files.items()},
        }
        if self.ranks is not None:  # only then: other manifests stay as they were
            doc["ranks"] = list(self.ranks)
        doc["complete"] = self.complete  # keep last: the completion marker
        return seal(doc)


def canonical_json(doc: dict) -> bytes:
    """The bytes the manifest checksum covers: every field but the checksum, keys sorted, no spaces."""
    rest = {k: v for k, v in doc.items() if k != CHECKSUM}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def manifest_checksum(doc: dict) -> str:
    return xxhash.xxh3_128_hexdigest(canonical_json(doc))


def seal(doc: dict) -> dict:
    """`doc` with its checksum field set (placed before `complete`, which stays last)."""
    out = {k: v for k, v in doc.items() if k not in (CHECKSUM, "complete")}
    out[CHECKSUM] = manifest_checksum(doc)
    if "complete" in doc:
        out["complete"] = doc["complete"]
    return out


def library_versions() -> dict:
    import numpy
    import safetensors
    import torch

    from harness import __version__

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                "safetensors": safetensors.__version__, "resume-harness": __version__}
    if torch.cuda.is_available():
        versions["cuda"] = torch.version.cuda
    return versions


def read_manifest(ckpt_dir: str) -> Manifest:
    """Parse and validate `ckpt_dir/manifest.json`. Raises NotACheckpointError or CorruptCheckpointError."""
    if not os.path.isdir(ckpt_dir):
        raise NotACheckpointError(f"{ckpt_dir}: no such checkpoint folder")
    path = os.path.join(ckpt_dir, MANIFEST)
    if not os.path.exists(path):
        hint = ""
        if any(os.path.exists(os.path.join(ckpt_dir, f)) for f in ("random_states_0.pkl", "optimizer.bin", "model.safetensors")):
            hint = (" It looks like an HF Accelerate checkpoint: convert it with `harness convert` "
                    "(it contains pickle, so only convert folders you trust).")
        from .strategy import diagnose_foreign

        foreign = diagnose_foreign(ckpt_dir)
        if foreign is not None:
            raise NotACheckpointError(f"{ckpt_dir}: not a resume-harness checkpoint (no {MANIFEST}): {foreign}")
        raise NotACheckpointError(f"{ckpt_dir}: not a checkpoint (no {MANIFEST}; an interrupted save leaves none).{hint}")
    with open(path, "rb") as f:
        raw = f.read()
    refuse_pickle(path, raw[:4])
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(f"{path}: manifest is not valid JSON ({e})") from None
    return parse_manifest(path, doc)


def parse_manifest(path: str, doc) -> Manifest:
    def bad(why: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{path}: {why}")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"not a {FORMAT} manifest")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION or version < 1:
        raise bad(f"format version {version!r} is not supported by this resume-harness (reads 1..{VERSION}); upgrade it")
    if version >= 2:
        saved = doc.get(CHECKSUM)
        if not isinstance(saved, str):
            raise bad(f"manifest has no {CHECKSUM} field (required since format version 2), so its fields cannot "
                      "be trusted; the file was edited or damaged. Delete this checkpoint folder (load_state() "
                      "then falls back to an older one) or restore the original manifest.json")
        try:
            actual = manifest_checksum(doc)
        except (TypeError, ValueError) as e:
            raise bad(f"manifest cannot be checksummed ({e})") from None
        if actual != saved:
            raise bad(f"manifest checksum mismatch ({CHECKSUM}): manifest.json was edited or corrupted after the "
                      "save (step, files, contents, libraries, ... cannot be trusted). Do not edit a manifest: "
                      "restore the original manifest.json, or delete this checkpoint folder so that load_state() "
                      "falls back to an older checkpoint")
    if doc.get("complete") is not True:
        raise bad("manifest is incomplete (the save did not finish)")
    try:
        files = {
            str(group): [FileRecord(_safe_path(path, r["path"]), int(r["size"]), str(r[HASH])) for r in records]
            for group, records in doc["files"].items()
        }
        manifest = Manifest(
            world_size=int(doc["world_size"]), step=int(doc["step"]),
            iteration=None if doc.get("iteration") is None else int(doc["iteration"]),
            files=files, contents=dict(doc.get("contents") or {}), libraries=dict(doc.get("libraries") or {}),
            backend=str(doc.get("backend", "replicated")), version=version,
            strategy=_strategy_doc(doc.get("strategy")),
            ranks=None if doc.get("ranks") is None else [int(r) for r in doc["ranks"]],
        )
    except UnsafeCheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise bad(f"manifest is malformed ({type(e).__name__}: {e})") from None
    if manifest.world_size < 1:
        raise bad(f"world_size {manifest.world_size} is invalid")
    return manifest


def _strategy_doc(doc) -> dict | None:
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not isinstance(doc.get("layout"), str):
        raise TypeError(f"strategy must be an object with a name and a layout, got {doc!r}")
    return dict(doc)


def _safe_path(manifest_path: str, p) -> str:
    """Accept only a normalized relative POSIX path inside the checkpoint folder."""
    if not isinstance(p, str) or not p or "\\" in p or "\x00" in p:
        raise UnsafeCheckpointError(f"{manifest_path}: file path {p!r} is not a plain relative path")
    if posixpath.isabs(p) or posixpath.normpath(p) != p or p.split("/")[0] == "..":
        raise UnsafeCheckpointError(
            f"{manifest_path}: file path {p!r} is absolute or leaves the checkpoint folder (path traversal); refusing")
    return p
