"""Nested Python state <-> (JSON tree, flat tensor dict), without pickle.

`encode(obj, prefix)` walks a state_dict-like value and returns a JSON-able tree in which every
tensor (and numpy array, and bytes) is replaced by a reference into a flat `{name: tensor}` dict,
which goes into safetensors. `decode(tree, tensors)` rebuilds the value exactly: tuples stay
tuples, int dict keys stay ints, floats keep their bits (finite floats round-trip through JSON's
shortest repr; non-finite ones are tagged), numpy scalars keep their dtype.

Only plain data is accepted. Anything else is refused with the path of the offending value, so a
`state_dict()` that returns an arbitrary object fails at save time, not at load time.

Tensor names are `prefix` followed by one `/`-separated component per step down the tree, and
they are injective (two positions never get one name; format version 2, see `component`):

    str key k          k, with '%' and '/' percent-escaped ("%25", "%2F"), and a first character
                       that is '#' or '@' escaped too ("%23", "%40"), so it never looks like a tag
    int key n          "#n"     (dict key 1 is "#1"; str key "1" is "1")
    list/tuple index   "#i"     (a list's children are never siblings of a dict's keys)
    other key (bool, float, None, tuple, bytes, ...) of entry i of the dict
                       "@i"
    tensors inside a dict key (only a key of the last kind can hold any): "@i:key"

Version 1 joined raw keys with '/', so {"a/b": t} and {"a": {"b": t}}, or {1: t, "1": u}, shared
a name and one tensor silently replaced the other. `encode` also refuses, as a last guard, any
name that is already in `tensors`. `decode` never parses names (the tree holds each name it needs),
so it reads version-1 trees unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

_TAGS = ("__tensor__", "__ndarray__", "__bytes__", "__tuple__", "__dict__", "__float__",
         "__npscalar__", "__dtype__", "__size__", "__device__")


def encode(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Return the JSON tree of `obj`; tensors are added to `tensors` under `prefix/...` names.

    Raises TypeError naming the path of a value that cannot be saved without pickle, or of a tensor
    name that `tensors` already holds (from an earlier `encode` into the same dict).
    """
    return _encode(obj, prefix, tensors)


_TAGGED = ("#", "@")  # first characters of the components that are not str keys


def component(key: Any, index: int) -> str:
    """The name component of the value of entry `index` (with key `key`) of a dict.

    Injective within one dict: escaped str keys never start with '#' or '@', distinct ints give
    distinct "#n", and every other key is named by its (unique) entry index.
    """
    if isinstance(key, str):
        escaped = key.replace("%", "%25").replace("/", "%2F")
        if escaped[:1] in _TAGGED:
            escaped = f"%{ord(escaped[0]):02X}{escaped[1:]}"
        return escaped
    if isinstance(key, int) and not isinstance(key, bool):
        return f"#{key}"
    return f"@{index}"


def _add(path: str, t: torch.Tensor, tensors: dict[str, torch.Tensor]) -> None:
    if path in tensors:
        raise TypeError(f"{path}: two values of the state would be saved under this one tensor name; refusing "
                        "to let one overwrite the other (encode each prefix into a tensor dict only once)")
    tensors[path] = t


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) and not isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float) and not isinstance(obj, np.floating):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided or obj.is_quantized or obj.is_nested:
            raise TypeError(f"{path}: only dense tensors can be checkpointed (got layout {obj.layout})")
        _add(path, obj, tensors)
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"{path}: numpy arrays of dtype=object cannot be saved without pickle")
        _add(path, torch.from_numpy(np.ascontiguousarray(obj)), tensors)
        return {"__ndarray__": path}
    if isinstance(obj, np.generic):
        return {"__npscalar__": obj.dtype.str, "value": _encode(obj.item(), path, tensors)}
    if isinstance(obj, (bytes, bytearray)):
        _add(path, torch.frombuffer(bytearray(obj), dtype=torch.uint8) if obj else torch.empty(0, dtype=torch.uint8),
             tensors)
        return {"__bytes__": path}
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, torch.Size):
        return {"__size__": list(obj)}
    if isinstance(obj, torch.device):
        return {"__device__": str(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": _encode_items(obj, path, tensors)}
    if isinstance(obj, list):
        return _encode_items(obj, path, tensors)
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k in _TAGS for k in obj):
            return {k: _encode(v, f"{path}/{component(k, i)}", tensors) for i, (k, v) in enumerate(obj.items())}
        entries = []
        for i, (k, v) in enumerate(obj.items()):
            entries.append([_encode(k, f"{path}/@{i}:key", tensors), _encode(v, f"{path}/{component(k, i)}", tensors)])
        return {"__dict__": entries}
    raise TypeError(
        f"{path}: cannot checkpoint a value of type {type(obj).__module__}.{type(obj).__qualname__} "
        "without pickle; make state_dict() return tensors, numbers, strings, lists and dicts"
    )


def _encode_items(items: list | tuple, path: str, tensors: dict[str, torch.Tensor]) -> list:
    # RNG states are long sequences of plain ints (Python's random: 625 of them): JSON as they are
    if all(type(v) is int for v in items):
        return list(items)
    return [_encode(v, f"{path}/#{i}", tensors) for i, v in enumerate(items)]


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `encode`. Raises KeyError naming a tensor that the tree references but is missing."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return _tensor(tree["__tensor__"], tensors)
    if "__ndarray__" in tree:
        return _tensor(tree["__ndarray__"], tensors).numpy()
    if "__bytes__" in tree:
        return _tensor(tree["__bytes__"], tensors).numpy().tobytes()
    if "__tuple__" in tree:
        return tuple(decode(v, tensors) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {decode(k, tensors): decode(v, tensors) for k, v in tree["__dict__"]}
    if "__float__" in tree:
        return float(tree["__float__"])
    if "__npscalar__" in tree:
        return np.dtype(tree["__npscalar__"]).type(decode(tree["value"], tensors))
    if "__dtype__" in tree:
        dtype = getattr(torch, tree["__dtype__"], None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown torch dtype {tree['__dtype__']!r}")
        return dtype
    if "__size__" in tree:
        return torch.Size(tree["__size__"])
    if "__device__" in tree:
        return torch.device(tree["__device__"])
    return {k: decode(v, tensors) for k, v in tree.items()}


def _tensor(name: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    if name not in tensors:
        raise KeyError(f"tensor {name!r} is referenced by the state but missing from the tensor file")
    return tensors[name]
