"""One reader per checkpoint format, each producing a `CheckpointContents`.

    native      a resume-harness checkpoint (manifest.json): every file re-hashed (xxh3-128) and
                compared with the manifest; safetensors and JSON parsed without pickle. What a
                backend wrote inside it is read by the readers below: `dcp/` (FSDP2 sharded) as a
                DCP folder, `deepspeed/<tag>/` as a DeepSpeed tag (after their checksums passed).
    dcp         a torch.distributed.checkpoint folder (.metadata + *.distcp): .metadata read as
                data only (`pickles.load_data_pickle`), each item of the *.distcp files with
                torch.load(weights_only=True); sharded tensors are assembled into global ones.
    deepspeed   a DeepSpeed save_checkpoint folder (its `latest` file names the tag) or one tag
                folder: every *.pt with torch.load(weights_only=True), DeepSpeed's own classes kept
                as inert records (`pickles.load_torch`).
    accelerate  an HF Accelerate save_state folder: *.safetensors parsed, *.bin / *.pkl / *.pt with
                torch.load(weights_only=True) (numpy arrays of the RNG states allowed by name).

Only the native format has checksums; files of the other formats are listed as "unverified", and
a file that cannot be parsed is "unreadable" (named, with the reason). Nothing here executes code
from a checkpoint. Bad input (no such folder, not a checkpoint of any of these formats) raises
`ContentsError`.
"""

from __future__ import annotations

import json
import mmap
import os
import re

import xxhash

from harness.checkpoint import files as native_files
from harness.checkpoint.errors import CheckpointError
from harness.checkpoint.manifest import MANIFEST, read_manifest

from .model import (MISMATCH, MISSING, OK, SHARED, UNLISTED, UNREADABLE, UNVERIFIED, CheckpointContents, FileCheck)
from .pickles import Opaque, UnreadableFileError, is_opaque_class, load_data_pickle, load_torch

FORMATS = ("native", "dcp", "deepspeed", "accelerate")
_ZERO_RANK = re.compile(r"(?:^|_)zero_pp_rank_(\d+)_")
_RANDOM_STATES = re.compile(r"^random_states_(\d+)\.pkl$")
_ACCELERATE_FILES = re.compile(r"^(model|pytorch_model|optimizer|scheduler|sampler|dl_state_dict|scaler|custom_checkpoint|"
                               r"random_states)(_\d+)?(-\d+-of-\d+)?\.(safetensors|bin|pkl|pt)$")


class ContentsError(Exception):
    """Bad input: the path is not a checkpoint that can be read. The message says what it is and what to do."""


def detect_format(path: str) -> str:
    if not os.path.exists(path):
        raise ContentsError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        raise ContentsError(f"{path}: is a file; pass the checkpoint folder (one of the formats: {', '.join(FORMATS)})")
    names = set(os.listdir(path))
    if MANIFEST in names:
        return "native"
    if ".metadata" in names or any(n.endswith(".distcp") for n in names):
        return "dcp"
    if "latest" in names or any(n.endswith("_model_states.pt") for n in names) or _tag_folders(path):
        return "deepspeed"
    if any(_ACCELERATE_FILES.match(n) for n in names):
        return "accelerate"
    staging = [n for n in names if n.startswith(".staging-")]
    hint = f" ({', '.join(staging)}: an interrupted save)" if staging else ""
    raise ContentsError(f"{path}: not a checkpoint folder of a known format{hint}: expected manifest.json (native), "
                        ".metadata + *.distcp (DCP), a DeepSpeed `latest` file or tag folder with *_model_states.pt, "
                        "or HF Accelerate's model.safetensors / optimizer.bin / random_states_0.pkl")


def read_checkpoint(path: str) -> CheckpointContents:
    """The contents of the checkpoint at `path`, in whichever format it is."""
    fmt = detect_format(path)
    return {"native": read_native, "dcp": read_dcp, "deepspeed": read_deepspeed, "accelerate": read_accelerate}[fmt](path)


def _hash(path: str) -> tuple[int, str]:
    digest = xxhash.xxh3_128()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(native_files.CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _read(path: str):
    """The file's bytes, memory-mapped copy-on-write (writable, so torch.frombuffer views it without a copy)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) if size else bytearray()


def _all_files(root: str) -> list[str]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        out += [os.path.relpath(os.path.join(folder, n), root).replace(os.sep, "/") for n in sorted(names)]
    return out


# -- native -------------------------------------------------------------------------------------------


def read_native(path: str) -> CheckpointContents:
    out = CheckpointContents(path, "native")
    try:
        manifest = read_manifest(path)
    except CheckpointError as e:  # an edited, damaged or incomplete manifest.json: nothing can be trusted
        out.files.append(FileCheck(MANIFEST, None, MISMATCH, str(e)))
        return out
    from harness.checkpoint.strategy import StrategyInfo

    info = StrategyInfo.from_json(manifest.strategy, manifest.backend)
    out.summary = {"format_version": manifest.version, "world_size": manifest.world_size, "step": manifest.step,
                   "iteration": manifest.iteration, "backend": manifest.backend, "strategy": info.describe(),
                   "libraries": manifest.libraries}
    records = {r.path: r for group in manifest.files.values() for r in group}
    out.files.append(FileCheck(MANIFEST, os.path.getsize(os.path.join(path, MANIFEST)), OK,
                               "its own checksum verified" if manifest.version >= 2 else
                               "format version 1: the manifest has no checksum of its own"))
    intact = set()
    for rel in sorted(records):
        rec = records[rel]
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            out.files.append(FileCheck(rel, rec.size, MISSING, "listed in the manifest but missing"))
            continue
        size, digest = _hash(full)
        if size != rec.size:
            out.files.append(FileCheck(rel, size, MISMATCH, f"is {size} bytes, the manifest says {rec.size} (truncated or replaced)"))
        elif digest != rec.digest:
            out.files.append(FileCheck(rel, size, MISMATCH, f"checksum mismatch: manifest {native_files.HASH} "
                                                            f"{rec.digest}, file {digest}"))
        else:
            out.files.append(FileCheck(rel, size, OK))
            intact.add(rel)
    for rel in _all_files(path):
        if rel != MANIFEST and rel not in records:
            out.files.append(FileCheck(rel, os.path.getsize(os.path.join(path, rel)), UNLISTED,
                                       "not in the manifest (not part of the checkpoint; load never reads it)"))
    for rel in sorted(intact):
        group, _, rest = rel.partition("/")
        if group == "shared" or re.match(r"^rank\d+$", group):
            _native_file(out, path, rel, group, rest)
    if info.layout == "dcp" and any(r.startswith("dcp/") for r in records):
        _dcp_into(out, os.path.join(path, "dcp"), "dcp/", "dcp/", checked=intact)
    if info.layout == "deepspeed":
        tag = info.tag or "state"
        _deepspeed_into(out, os.path.join(path, "deepspeed", tag), f"deepspeed/{tag}/", "deepspeed/", checked=intact)
    return out


def _native_file(out: CheckpointContents, root: str, rel: str, group: str, rest: str) -> None:
    full = os.path.join(root, rel)
    stem = rest.rsplit(".", 1)[0] if "." in rest else rest
    try:
        if rel.endswith(".safetensors"):
            tensors, _ = native_files.parse_safetensors(full, _read(full))
            m = re.match(r"^model_(\d+)(?:-\d+-of-\d+)?$", stem)
            prefix = f"models/{m.group(1)}/" if group == SHARED and m else ""  # weights carry their state_dict keys
            for name, t in tensors.items():
                out.add_tensor(group, prefix + name, t, rel)
        elif rel.endswith(".json"):
            raw = bytes(_read(full))
            native_files.refuse_pickle(full, raw[:4])
            out.trees[(group, stem)] = json.loads(raw)
    except (CheckpointError, UnicodeDecodeError, json.JSONDecodeError) as e:
        _unreadable(out, rel, str(e))


def _unreadable(out: CheckpointContents, rel: str, why: str) -> None:
    for i, f in enumerate(out.files):
        if f.path == rel:
            out.files[i] = FileCheck(rel, f.size, UNREADABLE, why)
            return
    out.files.append(FileCheck(rel, None, UNREADABLE, why))


# -- DCP ----------------------------------------------------------------------------------------------


def read_dcp(path: str) -> CheckpointContents:
    out = CheckpointContents(path, "dcp")
    out.files = [FileCheck(rel, os.path.getsize(os.path.join(path, rel)), UNVERIFIED, "DCP keeps no checksums")
                 for rel in _all_files(path)]
    out.summary = _dcp_into(out, path, "", "", checked=None)
    return out


_REQUIRED = object()


def _field(obj, name: str, default=_REQUIRED):
    """A field of an object read as data (an Opaque record of a dataclass pickle); pickles leave out
    fields that hold their default (None), hence `default`."""
    state = obj.state if isinstance(obj, Opaque) else None
    if isinstance(state, dict) and name in state:
        return state[name]
    if default is _REQUIRED or not isinstance(obj, Opaque):
        raise KeyError(name)
    return default


def _size(obj) -> tuple[int, ...]:
    if isinstance(obj, Opaque) and type(obj).qualname == "torch.Size" and obj.args:
        return tuple(int(x) for x in obj.args[0])
    if isinstance(obj, (tuple, list)):
        return tuple(int(x) for x in obj)
    raise TypeError(f"not a torch.Size: {obj!r}")


def _dtype(obj):
    import torch

    name = obj.qualname if is_opaque_class(obj) else ""
    dtype = getattr(torch, name[len("torch."):], None) if name.startswith("torch.") else None
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"not a torch dtype: {obj!r}")
    return dtype


def _dcp_into(out: CheckpointContents, folder: str, rel_prefix: str, name_prefix: str, checked: set | None) -> dict:
    """Read the DCP folder `folder` (files named `rel_prefix + name` in `out.files`) into group shared."""
    import torch

    meta_rel = rel_prefix + ".metadata"
    if checked is not None and meta_rel not in checked:
        listed = [f for f in out.files if f.path == meta_rel and f.status != UNLISTED]
        if listed:
            return {}  # failed its checksum or missing: already reported, never parsed
        if os.path.isfile(os.path.join(folder, ".metadata")):
            _unreadable(out, meta_rel, "not in the manifest: DCP writes .metadata last, so the save that wrote "
                                       "this checkpoint did not finish; its DCP state cannot be trusted")
            return {}
    if not os.path.isfile(os.path.join(folder, ".metadata")):
        _unreadable(out, meta_rel, "no .metadata: DCP writes it last, so the save that wrote this folder did not "
                                   "finish; nothing in it can be located")
        return {}
    try:
        meta = load_data_pickle(os.path.join(folder, ".metadata"))
        entries = _field(meta, "state_dict_metadata")
        storage = {}
        for index, info in _field(meta, "storage_data").items():
            offset = _field(index, "offset", None)
            key = (_field(index, "fqn"), None if offset is None else _size(offset))
            storage[key] = (_field(info, "relative_path"), int(_field(info, "offset")), int(_field(info, "length")),
                            _field(info, "transform_descriptors", None))
    except UnreadableFileError as e:
        _unreadable(out, meta_rel, str(e))
        return {}
    except (KeyError, TypeError, AttributeError) as e:
        _unreadable(out, meta_rel, f"not DCP metadata this harness understands (missing field {e}); "
                                   "written by another torch version?")
        return {}
    out.notes.append(f"{meta_rel}: read as data only (a pickle: no class imported, no code run)")
    shards: dict[str, bytes] = {}

    def item(fqn, offsets) -> tuple[bytes, str]:
        if (fqn, offsets) not in storage:
            raise UnreadableFileError(f"{meta_rel}: {fqn} (chunk at {offsets}) has no storage entry")
        rel, start, length, transforms = storage[(fqn, offsets)]
        if transforms:
            raise UnreadableFileError(f"{rel_prefix}{rel}: {fqn} is stored with transforms {transforms} "
                                      "(compression, ...), which this harness does not read")
        if checked is not None and rel_prefix + rel not in checked:
            raise UnreadableFileError(f"{rel_prefix}{rel}: failed its checksum; not read")
        if rel not in shards:
            shards[rel] = _read(os.path.join(folder, rel))
        data = bytes(shards[rel][start:start + length])
        if len(data) != length:
            raise UnreadableFileError(f"{rel_prefix}{rel}: {fqn} lies at bytes {start}..{start + length}, past the "
                                      f"end of the file ({len(shards[rel])} bytes): truncated")
        return data, rel_prefix + rel

    values = {}
    for fqn, entry in entries.items():
        try:
            kind = type(entry).qualname if isinstance(entry, Opaque) else ""
            if kind.endswith("BytesStorageMetadata"):
                data, rel = item(fqn, None)
                values[fqn] = (load_torch(rel, data), rel)
                continue
            props = _field(entry, "properties")
            dtype = _dtype(props.state[0] if isinstance(props.state, tuple) else _field(props, "dtype"))
            size = _size(_field(entry, "size"))
            full = torch.zeros(size, dtype=dtype)
            covered, used = 0, []
            for chunk in _field(entry, "chunks"):
                offsets, sizes = _size(_field(chunk, "offsets")), _size(_field(chunk, "sizes"))
                data, rel = item(fqn, offsets)
                part = load_torch(rel, data)
                if not isinstance(part, torch.Tensor) or tuple(part.shape) != sizes or part.dtype != dtype:
                    raise UnreadableFileError(f"{rel}: {fqn} chunk at {offsets} is not a {dtype} tensor of shape {sizes}")
                view = full
                for dim, (o, s) in enumerate(zip(offsets, sizes)):
                    view = view.narrow(dim, o, s)
                view.copy_(part)
                covered += part.numel()
                used.append(rel)
            if covered != full.numel():
                raise UnreadableFileError(f"{meta_rel}: the chunks of {fqn} cover {covered} of its {full.numel()} "
                                          "elements")
            out.add_tensor(SHARED, name_prefix + fqn, full, "+".join(sorted(set(used))))
        except UnreadableFileError as e:
            rel = str(e).split(": ", 1)[0]
            rel = os.path.relpath(rel, out.path).replace(os.sep, "/") if os.path.isabs(rel) else rel
            _unreadable(out, rel, str(e))
        except (KeyError, TypeError, AttributeError, IndexError, ValueError, RuntimeError) as e:
            _unreadable(out, meta_rel, f"entry {fqn!r} is not DCP metadata this harness understands "
                                       f"({type(e).__name__}: {e})")
    if values:
        tree = {fqn: v for fqn, (v, _) in values.items()}
        out.add_tree(SHARED, name_prefix + "items" if name_prefix else "items", tree,
                     ", ".join(sorted({r for _, r in values.values()})), tensor_prefix=name_prefix + "items")
    version = meta.state.get("version") if isinstance(meta.state, dict) else None
    return {"dcp_version": version, "entries": len(entries), "shard_files": sorted({v[0] for v in storage.values()})}


# -- DeepSpeed ----------------------------------------------------------------------------------------


def _tag_folders(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n))
                  and any(x.endswith("_model_states.pt") for x in os.listdir(os.path.join(path, n))))


def read_deepspeed(path: str) -> CheckpointContents:
    names = set(os.listdir(path))
    if any(n.endswith("_model_states.pt") for n in names):
        tag_dir, tag = path, os.path.basename(os.path.normpath(path))
    elif "latest" in names:
        try:
            with open(os.path.join(path, "latest")) as f:
                tag = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ContentsError(f"{os.path.join(path, 'latest')}: cannot be read ({e})") from None
        tag_dir = os.path.join(path, tag)
        if not tag or not os.path.isdir(tag_dir):
            raise ContentsError(f"{path}: DeepSpeed's `latest` names tag {tag!r}, but {tag_dir} does not exist (a save "
                                "interrupted after writing `latest`?); pass an existing tag folder instead")
    else:
        tags = _tag_folders(path)
        if len(tags) != 1:
            raise ContentsError(f"{path}: a DeepSpeed folder without a `latest` file and with tag folders "
                                f"{', '.join(tags)}; pass one tag folder, e.g. {os.path.join(path, tags[0])}")
        tag, tag_dir = tags[0], os.path.join(path, tags[0])
    out = CheckpointContents(path, "deepspeed", summary={"tag": tag})
    rel_tag = os.path.relpath(tag_dir, path).replace(os.sep, "/")
    rel_tag = "" if rel_tag == "." else rel_tag + "/"
    out.files = [FileCheck(rel, os.path.getsize(os.path.join(path, rel)), UNVERIFIED, "DeepSpeed keeps no checksums")
                 for rel in _all_files(path)]
    _deepspeed_into(out, tag_dir, rel_tag, "", checked=None)
    return out


def _deepspeed_into(out: CheckpointContents, tag_dir: str, rel_prefix: str, name_prefix: str, checked: set | None) -> None:
    """Every *.pt of the tag folder: zero_pp_rank_{r}_* into group rank{r}, the others into shared."""
    opaque: set[str] = set()
    if not os.path.isdir(tag_dir):  # native: its files are reported missing by the manifest check
        return
    for name in sorted(os.listdir(tag_dir)):
        rel = rel_prefix + name
        if not name.endswith(".pt") or (checked is not None and rel not in checked):
            continue
        m = _ZERO_RANK.search(name)
        group = f"rank{m.group(1)}" if m else SHARED
        stem = name[:-3] if not m else (name[:m.start()] + name[m.end() - 1:])[:-3].strip("_")
        try:
            obj = load_torch(os.path.join(tag_dir, name))
        except UnreadableFileError as e:
            _unreadable(out, rel, str(e))
            continue
        out.add_tree(group, name_prefix + stem, obj, rel)
        opaque |= _opaque_names(obj)
        for key in ("global_steps", "global_samples", "dp_world_size", "mp_world_size", "ds_version"):
            if isinstance(obj, dict) and key in obj and key not in out.summary:
                out.summary[key] = obj[key]
    out.notes.append(f"{rel_prefix or './'}*.pt: torch.load(weights_only=True)" + (
        f"; DeepSpeed's classes kept as data, never imported: {', '.join(sorted(opaque))}" if opaque else ""))


def _opaque_names(obj, seen=None) -> set[str]:
    found = set()
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, Opaque):
            found.add(type(o).qualname)
            stack += [o.args, o.state, o.items, o.elements]
        elif isinstance(o, dict):
            stack += list(o.values())
        elif isinstance(o, (list, tuple)):
            stack += list(o)
    return found


# -- HF Accelerate ------------------------------------------------------------------------------------


def read_accelerate(path: str) -> CheckpointContents:
    out = CheckpointContents(path, "accelerate")
    out.files = [FileCheck(rel, os.path.getsize(os.path.join(path, rel)), UNVERIFIED, "Accelerate keeps no checksums")
                 for rel in _all_files(path)]
    ranks = set()
    for rel in _all_files(path):
        if "/" in rel:
            continue
        m = _RANDOM_STATES.match(rel)
        group = f"rank{m.group(1)}" if m else SHARED
        stem = "random_states" if m else re.sub(r"-\d+-of-\d+$", "", rel.rsplit(".", 1)[0])  # shards: one name space
        full = os.path.join(path, rel)
        try:
            if rel.endswith(".safetensors"):
                tensors, _ = native_files.parse_safetensors(full, _read(full))
                for name, t in tensors.items():
                    out.add_tensor(group, f"{stem}/{name}", t, rel)
            elif rel.endswith((".bin", ".pkl", ".pt")):
                out.add_tree(group, stem, load_torch(full), rel)
                if m:
                    ranks.add(int(m.group(1)))
            elif rel.endswith(".json"):
                out.trees[(group, stem)] = json.loads(bytes(_read(full)))
        except (UnreadableFileError, CheckpointError, UnicodeDecodeError, json.JSONDecodeError) as e:
            _unreadable(out, rel, str(e))
    out.summary = {"world_size": len(ranks) or None}
    out.notes.append("*.bin, *.pkl, *.pt: torch.load(weights_only=True), numpy arrays allowed by name; "
                     "*.safetensors parsed")
    return out
