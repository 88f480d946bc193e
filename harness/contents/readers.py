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
    torch       one plain torch.save file (.pt, .pth, .bin, .ckpt, ...), read like Accelerate's *.bin.
    safetensors one safetensors file, parsed.
    pickle      one plain pickle file, read as data only (`pickles.load_data_pickle`).
    files       any other folder of such files (a script's own per-rank torch.save checkpoints, e.g.
                step10_rank0.pt or step10/rank1.pt): each file read as above, `rank<N>` in its path
                naming its group; small text files (a `latest` pointer) kept as state; plain pickles
                read as data only; temporary files (*.tmp: a save in progress) listed, not read.

A layout is recognised only by its own markers (native: manifest.json; DCP: .metadata or *.distcp;
DeepSpeed: a tag folder holding *_model_states.pt / *_optim_states.pt, not merely a `latest` file;
Accelerate: its file names), so a script's folder with a `latest` file is read as plain files.

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

FORMATS = ("native", "dcp", "deepspeed", "accelerate", "torch", "safetensors", "pickle", "files")
_ZERO_RANK = re.compile(r"(?:^|_)zero_pp_rank_(\d+)_")
_RANDOM_STATES = re.compile(r"^random_states_(\d+)\.pkl$")
# names only Accelerate's save_state writes (a bare model.pt or scaler.pt could be anyone's)
_ACCELERATE_FILES = re.compile(r"^(?:random_states_\d+\.pkl|(?:optimizer|scheduler|sampler|dl_state_dict)(?:_\d+)?"
                               r"\.bin|pytorch_model(?:_\d+)?(?:-\d+-of-\d+)?\.bin|"
                               r"model(?:_\d+)?(?:-\d+-of-\d+)?\.safetensors)$")
_DEEPSPEED_FILE = re.compile(r"(?:_model_states|_optim_states|-model_states)\.pt$")
_TORCH_EXT = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save(_use_new_zipfile_serialization=False)
_TEXT_LIMIT = 4096  # small text files (a `latest` pointer) are kept as state; larger ones only listed
_SEPARATORS = "/_.-"
_RANK_IN_PATH = re.compile(r"(?:^|(?<=[/_.\-]))rank[_\-]?(\d+)(?=$|[/_.\-])")
_EXPECTED = ("manifest.json (native), .metadata + *.distcp (DCP), a DeepSpeed tag folder with *_model_states.pt, "
             "HF Accelerate's model.safetensors / optimizer.bin / random_states_0.pkl, or torch.save / safetensors "
             "files (.pt, .pth, .bin, .ckpt, .safetensors)")


class ContentsError(Exception):
    """Bad input: the path is not a checkpoint that can be read. The message says what it is and what to do."""


def detect_format(path: str) -> str:
    if not os.path.exists(path):
        raise ContentsError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        kind = file_kind(path)
        if kind in (None, "text"):
            raise ContentsError(f"{path}: not a checkpoint file this harness reads (neither a torch.save archive nor "
                                f"a safetensors file); pass a checkpoint file or folder: {_EXPECTED}")
        return kind
    names = set(os.listdir(path))
    if MANIFEST in names:
        return "native"
    if ".metadata" in names or any(n.endswith(".distcp") for n in names):
        return "dcp"
    # DeepSpeed by its files, never by `latest` alone: scripts of every kind keep a `latest` pointer
    if any(_DEEPSPEED_FILE.search(n) for n in names) or _tag_folders(path):
        return "deepspeed"
    if any(_ACCELERATE_FILES.match(n) for n in names):
        return "accelerate"
    inner = _checkpoints_below(path)
    if inner:  # a run folder of several checkpoints: reading them all as loose files would mix them up
        shown = ", ".join(inner[:5]) + (f", ... ({len(inner)} in all)" if len(inner) > 5 else "")
        raise ContentsError(f"{path}: not a checkpoint folder of a known format but a folder holding checkpoints "
                            f"({shown}); pass one of them, e.g. {os.path.join(path, inner[0])}")
    if any(not _is_temporary(rel) and file_kind(os.path.join(path, rel)) not in (None, "text")
           for rel in _all_files(path)):
        return "files"
    staging = [n for n in names if n.startswith(".staging-") or n.endswith(".tmp")]
    hint = f" ({', '.join(sorted(staging))}: an interrupted save)" if staging else ""
    raise ContentsError(f"{path}: not a checkpoint folder of a known format{hint}: expected {_EXPECTED}")


def _checkpoints_below(path: str) -> list[str]:
    """Sub-folders that are checkpoints of a marked format (native, DCP, DeepSpeed tag, Accelerate)."""
    found = []
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        if folder == path:
            continue
        if (MANIFEST in names or ".metadata" in names or any(_DEEPSPEED_FILE.search(n) for n in names)
                or any(_ACCELERATE_FILES.match(n) for n in names)):
            found.append(os.path.relpath(folder, path).replace(os.sep, "/"))
            dirs[:] = []  # its own sub-folders belong to it
    return found


def read_checkpoint(path: str) -> CheckpointContents:
    """The contents of the checkpoint at `path` (a folder or one file), in whichever format it is."""
    fmt = detect_format(path)
    return {"native": read_native, "dcp": read_dcp, "deepspeed": read_deepspeed, "accelerate": read_accelerate,
            "torch": read_file, "safetensors": read_file, "pickle": read_file, "files": read_files}[fmt](path)


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
                  and any(_DEEPSPEED_FILE.search(x) for x in os.listdir(os.path.join(path, n))))


def read_deepspeed(path: str) -> CheckpointContents:
    names = set(os.listdir(path))
    if any(_DEEPSPEED_FILE.search(n) for n in names):
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


# -- plain torch.save / safetensors files -------------------------------------------------------------


def file_kind(path: str) -> str | None:
    """The kind of file: "safetensors", "torch" (a torch.save archive, zip or legacy), "pickle" (a plain pickle),
    "text" (a small text file such as a `latest` pointer), or None; by its first bytes, then by its extension."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    name = os.path.basename(path)
    if name.endswith(".safetensors"):
        return "safetensors"
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_MAGIC):
        return "torch"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"  # an 8-byte header length, then the JSON header
    if name.endswith(_TORCH_EXT):
        return "torch"  # empty or damaged: reported unreadable, named
    if size <= _TEXT_LIMIT:
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        return "text" if "\x00" not in text else None
    return None


def _is_temporary(rel: str) -> bool:
    """A file a save is still writing (or a killed save left): never part of the checkpoint."""
    base = rel.rsplit("/", 1)[-1]
    return base.endswith((".tmp", ".temp", ".partial")) or ".tmp." in base or any(
        part.startswith(".staging-") for part in rel.split("/"))


def _strip_ext(rel: str) -> str:
    for ext in (*_TORCH_EXT, ".safetensors", ".json", ".txt"):
        if rel.endswith(ext):
            return rel[:-len(ext)]
    return rel


def _place(rel: str) -> tuple[str, str]:
    """(group, name) of a file in a folder: `rank<N>` anywhere in its path is its rank, and the name is the rest,
    so that step10_rank0.pt and step10/rank1.pt are both `step10`, of rank 0 and rank 1."""
    stem = _strip_ext(rel)
    m = _RANK_IN_PATH.search(stem)
    if not m:
        return SHARED, stem
    left, right = stem[:m.start()], stem[m.end():]
    name = (left + right.lstrip(_SEPARATORS)) if left and right.strip(_SEPARATORS) else (
        left.rstrip(_SEPARATORS) or right.lstrip(_SEPARATORS))
    return f"rank{int(m.group(1))}", name or "state"


def _read_one(out: CheckpointContents, full: str, rel: str, kind: str, group: str, name: str) -> object:
    """Read one file into `out` (tensors under `name/`, or unprefixed when name is ""); returns what it held."""
    prefix = f"{name}/" if name else ""
    tree = name or "file"
    try:
        if kind == "safetensors":
            tensors, metadata = native_files.parse_safetensors(full, _read(full))
            for tname, t in tensors.items():
                out.add_tensor(group, prefix + tname, t, rel)
            if metadata:
                out.trees[(group, f"{prefix}__metadata__")] = dict(metadata)
            return None
        if kind == "torch":
            obj = load_torch(full)
        elif kind == "pickle":
            obj = load_data_pickle(full)
            out.notes.append(f"{rel}: a plain pickle, read as data only (no class imported, no code run)")
        else:
            with open(full, encoding="utf-8") as f:
                text = f.read()
            try:
                obj = json.loads(text) if rel.endswith(".json") else text.strip()
            except json.JSONDecodeError:
                obj = text.strip()
            out.trees[(group, tree)] = obj
            return obj
        out.add_tree(group, tree, obj, rel, tensor_prefix=name)
        return obj
    except (UnreadableFileError, CheckpointError, UnicodeDecodeError, OSError) as e:
        _unreadable(out, rel, str(e))
        return None


def _step_of(obj) -> dict:
    """The step-like counters at the top of a loaded dict, for the summary."""
    if not isinstance(obj, dict):
        return {}
    return {k: obj[k] for k in ("step", "global_step", "epoch", "iteration")
            if isinstance(obj.get(k), int) and not isinstance(obj.get(k), bool)}


def read_file(path: str) -> CheckpointContents:
    """One torch.save or safetensors file: its tensors under the names inside it (no prefix), its other
    state as the tree `file`, so that two files compare entry by entry whatever they are called."""
    kind = file_kind(path)
    rel = os.path.basename(path)
    out = CheckpointContents(path, kind)
    out.files = [FileCheck(rel, os.path.getsize(path), UNVERIFIED, "")]
    obj = _read_one(out, path, rel, kind, SHARED, "")
    out.summary = _step_of(obj)
    m = _RANK_IN_PATH.search(_strip_ext(rel))
    if m:
        out.summary["rank"] = f"{int(m.group(1))} (from the file name)"
    if kind == "torch":
        out.notes.append(f"{rel}: torch.load(weights_only=True), numpy arrays allowed by name: no code run")
    return out


def read_files(path: str) -> CheckpointContents:
    """A folder of torch.save / safetensors files (with small text files such as `latest`)."""
    out = CheckpointContents(path, "files")
    todo = []
    for rel in _all_files(path):
        full = os.path.join(path, rel)
        size = os.path.getsize(full)
        if _is_temporary(rel):
            out.files.append(FileCheck(rel, size, UNVERIFIED, "not read: a temporary file (a save in progress or "
                                                              "interrupted), not part of the checkpoint"))
            continue
        kind = file_kind(full)
        if kind is None:
            out.files.append(FileCheck(rel, size, UNVERIFIED, "not read: not a torch.save, safetensors or small "
                                                              "text file"))
            continue
        out.files.append(FileCheck(rel, size, UNVERIFIED, ""))
        todo.append((rel, full, kind, *_place(rel)))
    seen: dict[tuple[str, str], int] = {}
    for _, _, _, group, name in todo:
        seen[(group, name)] = seen.get((group, name), 0) + 1
    ranks, loaded = set(), 0
    for rel, full, kind, group, name in todo:
        if seen[(group, name)] > 1:  # two files map to one name (a.pt and a.safetensors): keep them apart
            name = rel
        if group != SHARED:
            ranks.add(int(group[len("rank"):]))
        _read_one(out, full, rel, kind, group, name)
        loaded += kind != "text"
    out.summary = {"tensor_files": loaded, "ranks": ", ".join(map(str, sorted(ranks))) if ranks else None}
    if isinstance(out.trees.get((SHARED, "latest")), str):
        out.summary["latest"] = out.trees[(SHARED, "latest")][:200]
    out.notes.append("torch.save files: torch.load(weights_only=True), numpy arrays allowed by name, no code run; "
                     "*.safetensors parsed; the group of a file is the `rank<N>` in its path (shared without one)")
    return out
