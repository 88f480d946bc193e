"""What a checkpoint holds, in one shape for every format: `CheckpointContents`.

A checkpoint is a set of groups: `shared` (state that belongs to no one rank: replicated weights
and optimizer state, DCP's global tensors, DeepSpeed's model states) and `rank0`, `rank1`, ...
(per-rank state: RNG, data position, ZeRO partitions). Each group holds named tensors and named
JSON trees (the non-tensor state: scheduler, step, data position, RNG; a tensor inside a tree is a
`{"__tensor__": name}` reference to the tensor of that name in the same group).

Order, everywhere (listing and "first differing tensor"): groups `shared` first, then ranks in
numeric order, then any other group by name; within a group, names in code-point order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xxhash

from harness.checkpoint import tree as native_tree
from harness.oracle.ulp import canonical_dtype
from harness.tensors import tensor_bytes

from .pickles import Opaque, is_opaque_class, opaque_data

SHARED = "shared"
_RANK = re.compile(r"^rank(\d+)$")

# file statuses
OK, MISMATCH, MISSING, UNVERIFIED, UNLISTED, UNREADABLE = "ok", "mismatch", "missing", "unverified", "unlisted", "unreadable"
FAILED = (MISMATCH, MISSING, UNREADABLE)


def group_order(group: str) -> tuple:
    if group == SHARED:
        return (0, 0, "")
    m = _RANK.match(group)
    return (1, int(m.group(1)), "") if m else (2, 0, group)


def entry_order(key: tuple[str, str]) -> tuple:
    return (group_order(key[0]), key[1])


@dataclass(frozen=True)
class TensorEntry:
    group: str
    name: str
    dtype: str  # canonical name (harness.oracle.ulp.canonical_dtype): float32, bfloat16, int64, ...
    shape: tuple[int, ...]
    nbytes: int
    file: str  # the file(s) it was read from, relative to the checkpoint folder
    tensor: torch.Tensor = field(compare=False, repr=False)

    def raw(self):
        """The tensor's bytes (a buffer borrowing its memory)."""
        return tensor_bytes(self.tensor)

    def digest(self) -> str:
        return xxhash.xxh3_128_hexdigest(self.raw())

    def to_json(self) -> dict:
        return {"group": self.group, "name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "bytes": self.nbytes, "file": self.file, "xxh3_128": self.digest()}


@dataclass(frozen=True)
class FileCheck:
    """One file of the checkpoint and whether it is intact."""

    path: str  # relative to the checkpoint folder
    size: int | None
    status: str  # ok | mismatch | missing | unverified (the format has no checksums) | unlisted | unreadable
    detail: str = ""

    def to_json(self) -> dict:
        return {"path": self.path, "size": self.size, "status": self.status, "detail": self.detail}


@dataclass
class CheckpointContents:
    path: str
    format: str  # native | dcp | deepspeed | accelerate
    summary: dict = field(default_factory=dict)  # format-level facts: step, world size, backend, tag, ...
    tensors: dict[tuple[str, str], TensorEntry] = field(default_factory=dict)
    trees: dict[tuple[str, str], Any] = field(default_factory=dict)
    files: list[FileCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how files were read

    @property
    def failed_files(self) -> list[FileCheck]:
        return [f for f in self.files if f.status in FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed_files

    def groups(self) -> list[str]:
        return sorted({g for g, _ in self.tensors} | {g for g, _ in self.trees}, key=group_order)

    def add_tensor(self, group: str, name: str, t: torch.Tensor, file: str) -> None:
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if (group, name) in self.tensors:  # a reader bug, never silently replace one tensor with another
            raise ValueError(f"{file}: two tensors named {name!r} in group {group}")
        self.tensors[(group, name)] = TensorEntry(group, name, canonical_dtype(str(t.dtype)), tuple(t.shape),
                                                  t.numel() * t.element_size(), file, t)

    def add_tree(self, group: str, name: str, obj: Any, file: str, tensor_prefix: str | None = None) -> None:
        """Add a loaded object as a JSON tree; its tensors and arrays become tensors of the group."""
        found: dict[str, torch.Tensor] = {}
        self.trees[(group, name)] = to_tree(obj, name if tensor_prefix is None else tensor_prefix, found)
        for tname, t in found.items():
            self.add_tensor(group, tname, t, file)


def to_tree(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON value for any loaded object; tensors (and numeric arrays) go to `tensors` under `path/...`.

    Names follow the native format's injective scheme (`harness.checkpoint.tree.component`).
    Objects of classes that were not imported (`Opaque`) become `{"__object__": qualname, ...data}`.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if isinstance(obj, (torch.Tensor, np.ndarray, bytes, bytearray)) and not path:
        path = "tensor"  # a file that holds one bare tensor, read with no name prefix
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            obj = obj.to_dense()
        tensors[path] = obj
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return [to_tree(v, _join(path, f"#{i}"), tensors) for i, v in enumerate(obj.tolist())]
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__tensor__": path}
    if isinstance(obj, (bytes, bytearray)):
        tensors[path] = torch.frombuffer(bytearray(obj), dtype=torch.uint8) if obj else torch.empty(0, dtype=torch.uint8)
        return {"__tensor__": path}
    if isinstance(obj, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return str(obj)
    if isinstance(obj, torch.Size):
        return list(obj)
    if isinstance(obj, (tuple, list)):
        return [to_tree(v, _join(path, f"#{i}"), tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_tree(v, _join(path, f"#{i}"), tensors) for i, v in enumerate(obj)), key=repr)
    if isinstance(obj, dict):
        out = {}
        for i, (k, v) in enumerate(obj.items()):  # keys named injectively: int 1 is "#1", str "1" is "1"
            c = native_tree.component(k, i)
            out[c] = to_tree(v, _join(path, c), tensors)
        return out
    if isinstance(obj, Opaque):
        return {"__object__": type(obj).qualname, **to_tree(opaque_data(obj), path, tensors)}
    if is_opaque_class(obj):
        return {"__global__": obj.qualname}
    return {"__object__": f"{type(obj).__module__}.{type(obj).__qualname__}", "repr": repr(obj)[:200]}


def _join(path: str, component: str) -> str:
    return f"{path}/{component}" if path else component  # "": the names inside a single file, unprefixed


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summarize(value: Any, width: int = 60) -> str:
    """A one-line description of a JSON value: scalars shown, containers counted."""
    if isinstance(value, dict):
        if "__tensor__" in value:
            return f"tensor {value['__tensor__']}"
        if "__object__" in value:
            return f"<{value['__object__']}>"
        return "{" + plural(len(value), "key") + "}"
    if isinstance(value, list):
        return "[" + plural(len(value), "item") + "]"
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."
