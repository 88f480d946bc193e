"""Compare two checkpoints' contents: tensor by tensor (raw bytes), and their JSON trees leaf by leaf.

Identical means bit-exact: the same groups and names, and for every tensor the same dtype, shape
and raw bytes; the same trees with the same leaves (floats compared by their bits). The order of
every list is the one of `model.entry_order` (shared first, then ranks in numeric order, names in
code-point order); `ContentsDiff.first` is the first differing tensor in that order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from harness.oracle.compare import json_float
from harness.oracle.ulp import diff_stats

from .model import CheckpointContents, TensorEntry, entry_order, plural

_ABSENT = object()


@dataclass(frozen=True)
class EntryDiff:
    """How one tensor entry differs between two checkpoints (``harness diff``; a trial's divergence is
    ``harness.oracle.TensorDiff``)."""

    group: str
    name: str
    kind: str  # "values" (same dtype and shape, different bytes) | "dtype" | "shape"
    dtype_a: str
    dtype_b: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    numel: int
    n_diff: int | None = None  # differing elements ("values" only)
    max_abs_diff: float | None = None
    max_ulp: int | None = None
    note: str = ""

    def to_json(self) -> dict:
        return {"group": self.group, "name": self.name, "kind": self.kind, "dtype_a": self.dtype_a, "dtype_b": self.dtype_b,
                "shape_a": list(self.shape_a), "shape_b": list(self.shape_b), "numel": self.numel, "n_diff": self.n_diff,
                "max_abs_diff": json_float(self.max_abs_diff), "max_ulp": self.max_ulp, "note": self.note}


@dataclass(frozen=True)
class TreeDiff:
    group: str
    tree: str
    path: str  # "/"-separated keys inside the tree ("" for the whole tree)
    a: Any  # the JSON value on each side; None with present_a/present_b False when absent
    b: Any
    present_a: bool = True
    present_b: bool = True

    def to_json(self) -> dict:
        return {"group": self.group, "tree": self.tree, "path": self.path, "a": self.a if self.present_a else None,
                "b": self.b if self.present_b else None, "present_a": self.present_a, "present_b": self.present_b}


@dataclass
class ContentsDiff:
    a: CheckpointContents
    b: CheckpointContents
    compared: int = 0  # tensors present on both sides
    tensors: list[EntryDiff] = field(default_factory=list)
    only_a: list[tuple[str, str]] = field(default_factory=list)  # tensors only in A (missing in B)
    only_b: list[tuple[str, str]] = field(default_factory=list)
    trees: list[TreeDiff] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.tensors or self.only_a or self.only_b or self.trees)

    @property
    def first(self) -> EntryDiff | None:
        return self.tensors[0] if self.tensors else None

    @property
    def exit_code(self) -> int:
        return 0 if self.identical else 1


def diff_contents(a: CheckpointContents, b: CheckpointContents) -> ContentsDiff:
    out = ContentsDiff(a, b)
    keys = sorted(set(a.tensors) | set(b.tensors), key=entry_order)
    for key in keys:
        ta, tb = a.tensors.get(key), b.tensors.get(key)
        if tb is None:
            out.only_a.append(key)
        elif ta is None:
            out.only_b.append(key)
        else:
            out.compared += 1
            d = diff_tensor(ta, tb)
            if d is not None:
                out.tensors.append(d)
    for key in sorted(set(a.trees) | set(b.trees), key=entry_order):
        va, vb = a.trees.get(key, _ABSENT), b.trees.get(key, _ABSENT)
        _diff_tree(key[0], key[1], "", va, vb, out.trees)
    return out


def diff_tensor(a: TensorEntry, b: TensorEntry) -> EntryDiff | None:
    """None when dtype, shape and raw bytes are equal."""
    base = dict(group=a.group, name=a.name, dtype_a=a.dtype, dtype_b=b.dtype, shape_a=a.shape, shape_b=b.shape,
                numel=a.tensor.numel())
    if a.dtype != b.dtype:
        return EntryDiff(kind="dtype", **base)
    if a.shape != b.shape:
        return EntryDiff(kind="shape", **base)
    stats = diff_stats(a.dtype, memoryview(a.raw()).cast("B"), memoryview(b.raw()).cast("B"))
    if stats is None:
        return None
    return EntryDiff(kind="values", n_diff=stats["n_diff"], max_abs_diff=stats["max_abs_diff"],
                      max_ulp=stats["max_ulp"], note=stats["note"], **base)


def _same_leaf(x, y) -> bool:
    if type(x) is not type(y):
        return False
    if isinstance(x, float):
        return struct.pack("<d", x) == struct.pack("<d", y)  # bits: -0.0 != 0.0, NaN == the same NaN
    return x == y


def _diff_tree(group: str, tree: str, path: str, x, y, out: list[TreeDiff]) -> None:
    if x is _ABSENT or y is _ABSENT:
        out.append(TreeDiff(group, tree, path, None if x is _ABSENT else x, None if y is _ABSENT else y,
                            x is not _ABSENT, y is not _ABSENT))
        return
    if isinstance(x, dict) and isinstance(y, dict):
        for k in list(x) + [k for k in y if k not in x]:
            _diff_tree(group, tree, f"{path}/{k}" if path else str(k), x.get(k, _ABSENT), y.get(k, _ABSENT), out)
        return
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            out.append(TreeDiff(group, tree, path, f"[{plural(len(x), 'item')}]", f"[{plural(len(y), 'item')}]"))
            return
        for i, (u, v) in enumerate(zip(x, y)):
            _diff_tree(group, tree, f"{path}/{i}" if path else str(i), u, v, out)
        return
    if not _same_leaf(x, y):
        out.append(TreeDiff(group, tree, path, x, y))
