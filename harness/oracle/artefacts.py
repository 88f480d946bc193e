"""Artefacts: the files a run leaves in its run folder, indexed and compared tensor by tensor.

A script can keep state that never feeds back into training (an EMA of the weights, a running
metric) and export it at the end (``torch.save(ema.state_dict(), "ema.pt")``). The trace and the
final state see only the model and optimizers that were stepped, so a resume that loses such state
would still pass. This module compares what both runs left on disk.

Index (``index_artefacts(run_dir)``, a JSON-able dict): every regular file under the run folder,
recursively, by relative posix path, with its size, its xxh3-128 and its format; for the tensor
formats every tensor and array by key path with dtype, shape, byte count, an xxh3-128 of its raw
bytes (exact bits: no tolerance) and, for numbers, min / max / mean (so that a report made from the
index alone can say how a differing tensor moved). Values are not kept.

    format       how it is read (never executing code from the file)                  judged
    torch        a torch.save archive: torch.load(weights_only=True), torch's           yes
                 restricted unpickler; numpy arrays rebuilt by numpy's functions,
                 allowed by name; any other class the file names is kept as an inert
                 record of its pickled data, never imported (as ``harness inspect``
                 does); a global torch refuses (os.system, ...) makes the file unknown
    safetensors  the safetensors library                                                yes
    npy, npz     numpy, allow_pickle=False                                              yes
    dcp          a torch.distributed.checkpoint folder (``.metadata``): one entry for   no
                 the folder (its .metadata is a pickle this module does not read;
                 ``harness inspect`` reads it), with a digest of its files
    json, text   not parsed                                                             no
    empty, link  a 0-byte file; a symbolic link (its target is not followed)            no
    unknown      anything else, or a file of a judged format that cannot be read       no
                 (``why`` says which and why)

Skipped: dot-files and dot-folders (a staging folder; DCP's ``.metadata`` is part of its folder's
entry), ``__pycache__`` and ``*.pyc``. Partial files (``*.tmp``) are indexed like any other. The
harness writes nothing of its own into the run folder (the trace goes to HARNESS_TRACE_DIR).

What is judged (``compare_artefacts``): only tensor and array contents, bit for bit, in files at
the same path in both runs. JSON, text, logs, metrics files and whatever else is listed
(``ArtefactReport.listed``, saying whether the bytes differ) and never a failure: such files carry
timestamps and wall-clock times that differ between any two runs. A file present in one run only is
listed (``only_baseline`` / ``only_trial``), never a failure. A file of a judged format in the
baseline that the trial left in another format, or unreadable, is a divergence; one the baseline left
unreadable is listed.

RNG state inside artefacts (checkpoints hold the RNG streams of the run) is not training state: a
differing tensor is classified ``rng:artefact`` rather than ``artefact:<path>`` when it has an integer
(or bool) dtype and a component of its key path, or the file's name, contains ``rng``, ``random``,
``generator`` or ``seed`` (any case), or when it has the shape of a generator state: a 1-D uint8
tensor of 5056 bytes (torch's CPU Mersenne Twister) or 16 bytes (CUDA's Philox seed and offset), or a
1-D uint32 array of 624 words (numpy's Mersenne Twister key). A floating-point tensor is never taken
for RNG state: a GAN's ``generator/...`` weights are training state.

Unstable artefacts: what differs between two uninterrupted runs of the baseline
(``unstable_between``: whole files as ``<path>``, tensors as ``<path>::<key>``) says nothing about
the resume; ``compare_artefacts(..., unstable=...)`` lists them as "differs between two
uninterrupted runs: not judged".

Values: with the folders of both runs at hand (``base_dir``, ``trial_dir``) the differing tensors
are read again and compared element by element (``compare_artefact_files``: differing elements, max
|Δ|, max ULP); from the indexes alone a difference is "digest differs", with the recorded stats.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from .compare import Divergence, TensorDiff, json_float
from .ulp import DTYPES, canonical_dtype, diff_stats

INDEX_FORMAT = "resume-harness-artefacts"
INDEX_VERSION = 1
JUDGED_FORMATS = ("torch", "safetensors", "npy", "npz")
RNG_FIELD = "rng:artefact"
ARTEFACT_FIELD = "artefact:"  # + the file's relative path
UNSTABLE_WHY = "differs between two uninterrupted runs: not judged"
KEY_SEP = "::"  # "<path>::<key>" names one tensor of a file in an unstable set

_TEXT_EXTS = (".txt", ".log", ".csv", ".tsv", ".yaml", ".yml", ".md", ".out", ".err", ".ini", ".toml", ".cfg")
_SKIPPED_DIRS = ("__pycache__",)
_RNG_NAME = re.compile(r"rng|random|generator|seed", re.IGNORECASE)
_RANK_NAME = re.compile(r"rank[_-]?(\d+)", re.IGNORECASE)
_INDEX_SUFFIX = re.compile(r"_(\d+)\.[A-Za-z0-9]+$")
_GENERATOR_BYTES = (5056, 16)  # torch CPU mt19937 state; CUDA Philox (seed, offset)
_CHUNK = 1 << 22
# torch.save's legacy (non-zip) format opens with its magic number pickled: PROTO 2, LONG1 of 10 bytes
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


class ArtefactError(Exception):
    """Bad input (no such folder, not an artefact index, a file that cannot be read); the message names it."""


class _Unreadable(Exception):
    """A file of a judged format that cannot be read safely: listed as unknown, with the reason."""


@dataclass(frozen=True)
class ListedArtefact:
    """A file compared by neither bits nor values, and why."""

    path: str
    why: str
    differs: bool | None = None  # whether its bytes differ between the runs (None: not known)

    def to_json(self) -> dict:
        return {"path": self.path, "why": self.why, "differs": self.differs}


@dataclass(frozen=True)
class ArtefactReport:
    divergences: list[Divergence]  # where="artefact", step/attempt None; fields ["artefact:<path>"] or ["rng:artefact"]
    listed: list[ListedArtefact]  # present in both runs, not judged (format, or unstable), with why
    only_baseline: list[str]  # present in one run only: listed, never a failure
    only_trial: list[str]
    judged: dict = field(default_factory=dict)  # {"files", "tensors", "bytes", "unstable"}: what was compared

    @property
    def ok(self) -> bool:
        return not self.divergences

    def to_json(self) -> dict:
        return {"divergences": [d.to_json() for d in self.divergences], "listed": [x.to_json() for x in self.listed],
                "only_baseline": list(self.only_baseline), "only_trial": list(self.only_trial),
                "judged": dict(self.judged)}


# -- reading ----------------------------------------------------------------------------------------


def _file_digest(path: str) -> tuple[int, str]:
    h = xxhash.xxh3_128()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def detect_format(path: str) -> tuple[str, str]:
    """(format, why) of a file or folder: one of JUDGED_FORMATS, or json, text, empty, link, unknown."""
    if os.path.islink(path):
        return "link", f"a symbolic link to {os.readlink(path)}: not followed"
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, ".metadata")):
            return "dcp", ("a torch.distributed.checkpoint folder: not judged (its .metadata is a pickle the oracle "
                           "does not read; `harness inspect` shows it)")
        return "unknown", "a folder"
    name = os.path.basename(path).lower()
    if name.endswith((".json", ".jsonl")):
        return "json", "JSON: not judged (only tensor and array contents are)"
    if name.endswith(_TEXT_EXTS):  # by name first: a log line must never pass for a binary format
        return "text", "text: not judged (only tensor and array contents are)"
    with open(path, "rb") as f:
        head = f.read(16)
        size = os.fstat(f.fileno()).st_size
    if not head:
        return "empty", "an empty file"
    if head[:6] == b"\x93NUMPY":
        return "npy", ""
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            return "unknown", f"a damaged zip archive ({e})"
        if names and all(n.endswith(".npy") for n in names):
            return "npz", ""
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch", ""
        return "unknown", "a zip archive that is neither a torch.save archive nor a numpy .npz"
    if len(head) >= 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors", ""
    if head[:14] == _LEGACY_TORCH_HEAD:
        return "torch", ""
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "unknown", "a plain pickle: not read (unpickling it could execute code; torch.save archives are read)"
    return "unknown", ("format not recognised (judged: torch.save archives, safetensors, numpy .npy/.npz, "
                       "torch.distributed.checkpoint folders)")


class InertRecord:
    """A stand-in for an object of a class a pickle names: its pickled data only, the class never imported
    (also the base of harness.contents.pickles.Opaque, which inspect/diff show)."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items, obj.elements = args, None, {}, []
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # SETITEMS on a dict subclass
        self.items[key] = value

    def append(self, value):  # APPENDS on a list subclass
        self.elements.append(value)

    def extend(self, values):
        self.elements.extend(values)

    def data(self) -> dict:
        return {k: v for k, v in (("args", list(self.args)), ("state", self.state), ("items", self.items),
                                  ("elements", self.elements)) if v is not None and v != [] and v != {}}


def _inert_class(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (InertRecord,), {"qualname": qualname, "__module__": __name__})


# numpy arrays and dtypes as pickled inside torch.save files (numpy 1 and 2 module names): rebuilt by numpy
_NUMPY_GLOBALS = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
                  "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")


def _numpy_global(name: str):
    if name in ("numpy.ndarray", "numpy.dtype"):
        return getattr(np, name.split(".")[1])
    if name.startswith("numpy.dtypes.") and isinstance(getattr(np.dtypes, name.split(".")[-1], None), type):
        return getattr(np.dtypes, name.split(".")[-1])
    if name in _NUMPY_GLOBALS:
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy 1
            from numpy.core import multiarray
        return getattr(multiarray, name.rsplit(".", 1)[1])
    return None


def _load_torch(path: str):
    """A torch.save archive read with weights_only=True; other classes as inert records (module docstring)."""
    import torch
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        names = get_unsafe_globals_in_checkpoint(path)  # lists the globals without unpickling
    except Exception:  # noqa: BLE001 - not a zip archive (the legacy format): no extra globals then
        names = []
    allowed: list = [(_numpy_global(n), n) if _numpy_global(n) is not None else (_inert_class(n), n) for n in names]
    if any(n.startswith("numpy") for n in names):  # an array's dtype is built from its dtype class
        allowed += [c for c in (getattr(np.dtypes, n) for n in dir(np.dtypes))
                    if isinstance(c, type) and issubclass(c, np.dtype)]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or hostile file can raise anything
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # torch's message opens with generic advice; the line naming the refused global says why
        why = next((ln for ln in lines if "GLOBAL" in ln or ln.startswith(("Unsupported", "Can only build"))),
                   lines[0] if lines else type(e).__name__)
        raise _Unreadable(f"{path}: cannot be read without executing code (torch.load with weights_only=True "
                          f"failed: {why}); not judged") from None


def _component(key: Any, index: int) -> str:
    """The key path component of a dict entry, injective within the dict (harness.checkpoint.tree's names):
    a str key escaped (% and /, a leading # or @), an int ``#n``, any other key ``@<entry index>``."""
    if isinstance(key, str):
        escaped = key.replace("%", "%25").replace("/", "%2F")
        return f"%{ord(escaped[0]):02X}{escaped[1:]}" if escaped[:1] in ("#", "@") else escaped
    if isinstance(key, int) and not isinstance(key, bool):
        return f"#{key}"
    return f"@{index}"


def _tensors_in(obj: Any) -> tuple[dict, set]:
    """Tensors and arrays of a loaded object under injective key paths (``model/0.weight``, ``opts/#0/...``),
    and the classes found as inert records."""
    import torch

    out: dict = {}
    inert: set = set()

    def walk(o: Any, path: str) -> None:
        def join(c: str) -> str:
            return f"{path}/{c}" if path else c

        if isinstance(o, torch.Tensor):
            out[path] = o
        elif isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                for i, v in enumerate(o.reshape(-1).tolist()):
                    walk(v, join(f"#{i}"))
            else:
                out[path] = o
        elif isinstance(o, dict):
            for i, (k, v) in enumerate(o.items()):
                walk(v, join(_component(k, i)))
        elif isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, join(f"#{i}"))
        elif isinstance(o, InertRecord):
            inert.add(type(o).qualname)
            walk(o.data(), path)

    walk(obj, "")
    return out, inert


def _read_tensors(path: str, fmt: str) -> tuple[dict, list[str]]:
    """{key: tensor or array} of a file of a judged format, and the classes kept as inert records.

    Raises _Unreadable naming the file."""
    out: dict = {}
    inert: set = set()
    try:
        if fmt == "torch":
            out, inert = _tensors_in(_load_torch(path))
        elif fmt == "safetensors":
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                out = {k: f.get_tensor(k) for k in f.keys()}
        elif fmt == "npy":
            out[""] = np.load(path, allow_pickle=False)
        elif fmt == "npz":
            with np.load(path, allow_pickle=False) as z:
                out = {name: z[name] for name in z.files}
        else:
            raise _Unreadable(f"{path}: format {fmt} is not read here")
    except _Unreadable:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file can raise anything (SafetensorError, ValueError, ...)
        raise _Unreadable(f"{path}: not a readable {fmt} file ({type(e).__name__}: {e})") from None
    return out, sorted(inert)


def _raw(x) -> tuple[str, list[int], np.ndarray]:
    """(canonical dtype, shape, raw bytes as a uint8 array) of a tensor or array."""
    import torch

    if isinstance(x, torch.Tensor):
        from harness.tensors import plain_tensor

        t = plain_tensor(x).cpu()
        # .numpy() of the uint8 view holds the tensor: the bytes outlive a temporary (a densified sparse tensor)
        return canonical_dtype(str(t.dtype)), list(t.shape), t.contiguous().reshape(-1).view(torch.uint8).numpy()
    a = np.ascontiguousarray(x)
    dtype = canonical_dtype(a.dtype.name) if a.dtype.isnative else a.dtype.str
    return dtype, list(a.shape), a.reshape(-1).view(np.uint8)


def _stats(x) -> dict | None:
    """min / max / mean of a numeric tensor or array (float64), for a report made from the index alone."""
    import torch

    try:
        if isinstance(x, torch.Tensor):
            if x.numel() == 0 or x.dtype in (torch.bool, torch.uint8) or x.is_complex() or x.is_quantized:
                return None
            v = x.detach().cpu().to(torch.float64)
            lo, hi, mean = float(v.min()), float(v.max()), float(v.mean())
        else:
            if x.size == 0 or x.dtype.kind not in "fiu" or x.dtype == np.uint8:  # bytes: no useful stats
                return None
            v = np.asarray(x, dtype=np.float64)
            lo, hi, mean = float(v.min()), float(v.max()), float(v.mean())
    except (RuntimeError, TypeError, ValueError):
        return None
    return {"min": json_float(lo), "max": json_float(hi), "mean": json_float(mean)}


def _tensor_record(x) -> dict:
    dtype, shape, raw = _raw(x)
    rec = {"dtype": dtype, "shape": shape, "bytes": int(raw.nbytes), "xxh3_128": xxhash.xxh3_128_hexdigest(raw)}
    stats = _stats(x)
    if stats:
        rec["stats"] = stats
    return rec


def _folder_digest(path: str) -> tuple[int, str, list[str]]:
    h = xxhash.xxh3_128()
    size, names = 0, []
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for n in sorted(files):
            full = os.path.join(folder, n)
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            s, d = _file_digest(full)
            size += s
            names.append(rel)
            h.update(f"{rel}\0{s}\0{d}\0".encode())
    return size, h.hexdigest(), names


def index_file(path: str) -> dict:
    """The index entry of one file (or DCP folder): format, size, xxh3_128, and tensors where judged."""
    fmt, why = detect_format(path)
    if fmt == "link":
        return {"format": "link", "size": None, "xxh3_128": None, "why": why}
    if fmt == "dcp":
        size, digest, files = _folder_digest(path)
        entry: dict = {"format": fmt, "size": size, "xxh3_128": digest, "files": files}
    elif os.path.isdir(path):
        raise ArtefactError(f"{path}: a folder, not a file or a DCP checkpoint folder")
    else:
        size, digest = _file_digest(path)
        entry = {"format": fmt, "size": size, "xxh3_128": digest}
    if why:
        entry["why"] = why
    if fmt not in JUDGED_FORMATS:
        return entry
    try:
        tensors, inert = _read_tensors(path, fmt)
        records = {key: _tensor_record(x) for key, x in tensors.items()}
    except _Unreadable as e:
        return {**entry, "format": "unknown", "detected": fmt, "why": str(e)}
    except Exception as e:  # noqa: BLE001 - a tensor that cannot be read (quantized, meta): say so, never crash
        return {**entry, "format": "unknown", "detected": fmt,
                "why": f"{path}: its tensors cannot be read ({type(e).__name__}: {e})"}
    entry["tensors"] = records
    if inert:
        entry["opaque"] = inert  # classes named by the pickle, kept as inert records (never imported)
    return entry


def _files(run_dir: str):
    """(relative posix path, full path) of every artefact under run_dir, in sorted order."""
    for folder, dirs, names in os.walk(run_dir):
        rel_folder = os.path.relpath(folder, run_dir)
        keep = []
        for d in sorted(dirs):
            full = os.path.join(folder, d)
            if d.startswith(".") or d in _SKIPPED_DIRS:
                continue
            if not os.path.islink(full) and os.path.isfile(os.path.join(full, ".metadata")):
                yield os.path.normpath(os.path.join(rel_folder, d)).replace(os.sep, "/"), full  # a DCP folder
            else:
                keep.append(d)
        dirs[:] = keep  # os.walk does not follow links to folders; a linked folder is listed below
        for n in sorted(names) + sorted(d for d in keep if os.path.islink(os.path.join(folder, d))):
            full = os.path.join(folder, n)
            if n.startswith(".") or n.endswith(".pyc") or not (os.path.islink(full) or os.path.isfile(full)):
                continue  # hidden, bytecode, or not a regular file (a socket, a FIFO: reading it could block)
            yield os.path.normpath(os.path.join(rel_folder, n)).replace(os.sep, "/"), os.path.join(folder, n)


def index_artefacts(run_dir) -> dict:
    """The artefact index of a run folder (module docstring): JSON-able, digests and stats, no values."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise ArtefactError(f"{run_dir}: no such folder (the run folder to index)")
    files = {}
    for rel, full in _files(run_dir):
        try:
            files[rel] = index_file(full)
        except OSError as e:  # removed or unreadable while indexed: say so, never guess
            files[rel] = {"format": "unknown", "size": None, "xxh3_128": None,
                          "why": f"{full}: cannot be read ({e.strerror or e})"}
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "files": dict(sorted(files.items()))}


def _files_of(index, which: str) -> dict:
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or not isinstance(index.get("files"), dict):
        raise ArtefactError(f"the {which} index is not an artefact index (index_artefacts' result); got "
                            f"{type(index).__name__}")
    if index.get("version") != INDEX_VERSION:
        raise ArtefactError(f"the {which} index has version {index.get('version')!r}; this harness reads "
                            f"version {INDEX_VERSION}")
    return index["files"]


# -- comparing --------------------------------------------------------------------------------------


def is_rng_tensor(path: str, key: str, record: dict) -> bool:
    """RNG state rather than training state (module docstring): never a floating-point tensor."""
    shape, dtype = record.get("shape"), record.get("dtype")
    if DTYPES.get(dtype, ("?",))[0] not in "iub":
        return False
    if _RNG_NAME.search(os.path.basename(path)) or any(_RNG_NAME.search(c) for c in key.split("/")):
        return True
    return isinstance(shape, list) and len(shape) == 1 and (
        (dtype == "uint8" and shape[0] in _GENERATOR_BYTES) or (dtype == "uint32" and shape[0] == 624))


def rank_of(path: str) -> int:
    """The rank a file belongs to, from its name (``rank1/...``, ``..._rank_1_...``, ``state_1.pt``); else 0."""
    m = _RANK_NAME.search(path)
    if m:
        return int(m.group(1))
    m = _INDEX_SUFFIX.search(os.path.basename(path))
    return int(m.group(1)) if m else 0


def unstable_between(index_a: dict, index_b: dict) -> set[str]:
    """What differs between two uninterrupted runs: files as ``<path>``, tensors as ``<path>::<key>``.

    A file present in one run only, or in different formats, is unstable as a whole; otherwise, for the
    judged formats, each tensor missing on one side or differing in dtype, shape or bits."""
    fa, fb = _files_of(index_a, "first"), _files_of(index_b, "second")
    out = set(fa.keys() ^ fb.keys())
    for rel in fa.keys() & fb.keys():
        a, b = fa[rel], fb[rel]
        if a.get("format") != b.get("format"):
            out.add(rel)
            continue
        if a.get("format") not in JUDGED_FORMATS or a.get("xxh3_128") == b.get("xxh3_128"):
            continue
        ta, tb = a.get("tensors") or {}, b.get("tensors") or {}
        out |= {f"{rel}{KEY_SEP}{k}" for k in ta.keys() | tb.keys() if not _same_record(ta.get(k), tb.get(k))}
    return out


def _same_record(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return False
    return all(a.get(k) == b.get(k) for k in ("dtype", "shape", "xxh3_128"))


def _display(rel: str, key: str) -> str:
    return key if key else f"{os.path.basename(rel)} (the whole file)"


def _stats_note(a: dict, b: dict) -> str:
    sa, sb = a.get("stats") or {}, b.get("stats") or {}
    def pair(x, y) -> str:
        short = [f"{v:.7g}" if isinstance(v, float) else str(v) for v in (x, y)]
        return " vs ".join(short if short[0] != short[1] else [repr(x), repr(y)])  # never "1.5 vs 1.5"

    parts = [f"{k} {pair(sa[k], sb[k])}" for k in ("mean", "min", "max") if k in sa and k in sb and sa[k] != sb[k]]
    return "digest differs (values not kept" + (f"; {', '.join(parts)})" if parts else ")")


def _tensor_diffs(rel: str, a: dict, b: dict, unstable: set, counts: dict) -> tuple[list, list, list[str]]:
    """(training diffs, rng diffs, unstable keys) of two indexed files of the same judged format."""
    ta, tb = a.get("tensors") or {}, b.get("tensors") or {}
    train, rng, skipped = [], [], []
    for key in [*ta, *(k for k in tb if k not in ta)]:
        if f"{rel}{KEY_SEP}{key}" in unstable:
            skipped.append(key)
            continue
        ra, rb = ta.get(key), tb.get(key)
        rec = ra or rb
        name = _display(rel, key)
        if rb is None:
            diff = TensorDiff(name, rec["dtype"], rec["shape"], note="missing in the trial")
        elif ra is None:
            diff = TensorDiff(name, rec["dtype"], rec["shape"], note="not in the baseline")
        elif ra["dtype"] != rb["dtype"] or ra["shape"] != rb["shape"]:
            what = [f"dtype {ra['dtype']} vs {rb['dtype']}"] * (ra["dtype"] != rb["dtype"]) + \
                   [f"shape {ra['shape']} vs {rb['shape']}"] * (ra["shape"] != rb["shape"])
            diff = TensorDiff(name, ra["dtype"], ra["shape"], note="; ".join(what))
        else:
            counts["tensors"] += 1
            counts["bytes"] += int(ra.get("bytes") or 0)
            if ra["xxh3_128"] == rb["xxh3_128"]:
                continue
            diff = TensorDiff(name, ra["dtype"], ra["shape"], note=_stats_note(ra, rb))
        (rng if is_rng_tensor(rel, key, rec) else train).append(diff)
    return train, rng, skipped


def _with_values(diffs: list[TensorDiff], values: dict[str, TensorDiff]) -> list[TensorDiff]:
    """Digest-only diffs replaced by the element-wise ones where the files were read again."""
    out = []
    for d in diffs:
        v = values.get(d.name)
        out.append(v if v is not None and d.note.startswith("digest differs") else d)
    return out


def compare_artefacts(base_index: dict, trial_index: dict, *, base_dir=None, trial_dir=None,
                      unstable=()) -> ArtefactReport:
    """Compare two runs' artefacts, file by file and tensor by tensor (module docstring).

    base_dir / trial_dir: the run folders, when they still exist: differing tensors are then compared
    element by element. unstable: ``unstable_between`` of two uninterrupted baseline runs (not judged).
    """
    fb, ft = _files_of(base_index, "baseline"), _files_of(trial_index, "trial")
    unstable = set(unstable)
    divergences: list[Divergence] = []
    listed: list[ListedArtefact] = []
    counts = {"files": 0, "tensors": 0, "bytes": 0, "unstable": 0}
    for rel in sorted(fb.keys() & ft.keys()):
        b, t = fb[rel], ft[rel]
        bytes_differ = None if b.get("xxh3_128") is None or t.get("xxh3_128") is None else \
            b.get("xxh3_128") != t.get("xxh3_128")
        if rel in unstable:
            counts["unstable"] += 1
            listed.append(ListedArtefact(rel, UNSTABLE_WHY, bytes_differ))
            continue
        judged_b = b.get("format") in JUDGED_FORMATS
        if not judged_b and t.get("format") in JUDGED_FORMATS:
            why = b.get("why") or f"format {b.get('format')}"
            listed.append(ListedArtefact(rel, f"not judged: {why} in the baseline", bytes_differ))
            continue
        if not judged_b:
            listed.append(ListedArtefact(rel, b.get("why") or f"format {b.get('format')}: not judged", bytes_differ))
            continue
        rank = rank_of(rel)
        if b.get("format") != t.get("format"):  # the baseline's tensors are gone from the trial's file
            why = t.get("why") or ""
            note = f"artefact {rel}: {b.get('format')} in the baseline, {t.get('format')} in the trial" + \
                   (f" ({why})" if why else "")
            divergences.append(Divergence(None, rank, None, [ARTEFACT_FIELD + rel],
                                          [TensorDiff(_display(rel, ""), note="format differs")], "artefact", note))
            continue
        counts["files"] += 1
        if not bytes_differ:
            for rec in (b.get("tensors") or {}).values():
                counts["tensors"] += 1
                counts["bytes"] += int(rec.get("bytes") or 0)
            continue
        train, rng, skipped = _tensor_diffs(rel, b, t, unstable, counts)
        if skipped:
            counts["unstable"] += len(skipped)
            shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
            listed.append(ListedArtefact(rel, f"{len(skipped)} tensor(s) ({shown}): {UNSTABLE_WHY}", True))
        if (train or rng) and base_dir is not None and trial_dir is not None:
            pb, pt = os.path.join(os.fspath(base_dir), rel), os.path.join(os.fspath(trial_dir), rel)
            if os.path.exists(pb) and os.path.exists(pt):
                try:
                    values = {d.name: d for d in compare_artefact_files(pb, pt)}
                except ArtefactError:
                    values = {}  # changed since it was indexed: the digests stand
                train, rng = _with_values(train, values), _with_values(rng, values)
        if train:
            divergences.append(Divergence(None, rank, None, [ARTEFACT_FIELD + rel], train, "artefact",
                                          f"artefact {rel}: {len(train)} tensor(s) differ"))
        if rng:
            divergences.append(Divergence(None, rank, None, [RNG_FIELD], rng, "artefact",
                                          f"artefact {rel}: {len(rng)} RNG state tensor(s) differ"))
    return ArtefactReport(divergences, listed, sorted(fb.keys() - ft.keys()), sorted(ft.keys() - fb.keys()), counts)


def compare_artefact_files(base_path, trial_path) -> list[TensorDiff]:
    """Element-wise diffs (differing elements, max |Δ|, max ULP) of two files of a judged format: one TensorDiff per tensor that differs, is missing on one side, or differs in dtype or shape.

    Raises ArtefactError when either cannot be read, naming it."""
    base_path, trial_path = os.fspath(base_path), os.fspath(trial_path)
    loaded = []
    for path in (base_path, trial_path):
        if not os.path.exists(path):
            raise ArtefactError(f"{path}: no such file")
        fmt, why = detect_format(path)
        if fmt not in JUDGED_FORMATS:
            raise ArtefactError(f"{path}: holds no tensors to compare ({why})")
        try:
            loaded.append(_read_tensors(path, fmt)[0])
        except _Unreadable as e:
            raise ArtefactError(str(e)) from None
    a, b = loaded
    rel = os.path.basename(base_path)
    out = []
    for key in [*a, *(k for k in b if k not in a)]:
        name = _display(rel, key)
        if key not in b or key not in a:
            da, shape, _ = _raw(a[key] if key in a else b[key])
            where = "missing in the trial" if key not in b else "not in the baseline"
            out.append(TensorDiff(name, da, shape, note=where))
            continue
        (da, sa, ra), (db, sb, rb) = _raw(a[key]), _raw(b[key])
        if da != db or sa != sb:
            what = [f"dtype {da} vs {db}"] * (da != db) + [f"shape {sa} vs {sb}"] * (sa != sb)
            out.append(TensorDiff(name, da, sa, note="; ".join(what)))
            continue
        st = diff_stats(da, ra, rb)
        if st:
            out.append(TensorDiff(name, da, sa, **st))
    return out


def load_index(path) -> dict:
    """An index written with json.dump; ArtefactError naming the file when it is not one."""
    try:
        with open(path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        raise ArtefactError(f"{path}: cannot be read as an artefact index ({e})") from None
    _files_of(index, str(path))
    return index
